"""``gradtui keygen``: create a CURVE key pair for endpoints beyond loopback."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--dir",
        metavar="DIR",
        help="where to write the keys (default: ~/.config/gradtui/keys, created 0700)",
    )
    parser.add_argument(
        "--name", default="gradtui", help="file name stem: NAME.key and NAME.key_secret"
    )
    parser.add_argument("--force", action="store_true", help="replace existing key files")


def run(args: argparse.Namespace) -> int:
    # Deferred: zmq is only needed when keys are actually made.
    from gradtui import security

    directory = args.dir or security.default_key_dir()
    public, secret = security.generate_keypair(directory, args.name, force=args.force)
    print(f"public key:  {public}  ({security.load_public_key(public).decode()})")
    print(f"secret key:  {secret}  (mode 0600: never copy it off this machine)")
    print("Give the public key file to the peers that must trust this identity.")
    return 0
