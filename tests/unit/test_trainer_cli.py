"""The trainer's flags: defaults, validation (one line, exit code 2) and the config it builds."""

from __future__ import annotations

import shlex

import pytest

from gradtui import protocol
from gradtui.errors import GradtuiError
from trainer.cli import build_parser, main, parse_config


def test_defaults_match_the_documented_demo() -> None:
    """Guards the documented defaults: a 20-deep sigmoid MLP on synthetic data, SGD."""
    cfg = parse_config([])
    assert (cfg.depth, cfg.width, cfg.act, cfg.arch, cfg.dataset) == (
        20,
        256,
        "sigmoid",
        "mlp",
        "synthetic",
    )
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.steps, cfg.every) == ("sgd", 0.05, 0.9, 0, 1)
    assert not (cfg.bn or cfg.residual or cfg.quiet) and cfg.record


def test_defaults_depend_on_arch_and_optimizer() -> None:
    """Guards the CNN's narrower default width and Adam's smaller default learning rate."""
    assert parse_config(["--arch", "cnn"]).width == 16
    assert parse_config(["--arch", "cnn", "--width", "8"]).width == 8
    assert parse_config(["--optimizer", "adam"]).lr == pytest.approx(1e-3)
    assert parse_config(["--lr", "0.3"]).lr == pytest.approx(0.3)


def test_every_flag_parses_into_the_config() -> None:
    """Guards that each documented flag reaches TrainConfig (the loop reads only the config)."""
    cfg = parse_config(
        shlex.split(
            "--depth 7 --width 33 --act gelu --bn --residual --clip-norm 2.5 --init kaiming "
            "--optimizer sgd --lr 0.2 --momentum 0.5 --batch-size 16 --steps 9 --arch cnn "
            "--dataset cifar10 --data-dir /d --download --device cpu --seed 4 --every 3 "
            "--endpoint tcp://127.0.0.1:1234 --name r1 --quiet --log-every 5 --record-dir /r"
        )
    )
    assert (cfg.depth, cfg.width, cfg.act, cfg.bn, cfg.residual) == (7, 33, "gelu", True, True)
    assert (cfg.clip_norm, cfg.clip_value, cfg.init) == (2.5, None, "kaiming")
    assert (cfg.lr, cfg.momentum, cfg.batch_size, cfg.steps) == (0.2, 0.5, 16, 9)
    assert (cfg.arch, cfg.dataset, cfg.data_dir, cfg.download) == ("cnn", "cifar10", "/d", True)
    assert (cfg.device, cfg.seed, cfg.every, cfg.endpoint) == ("cpu", 4, 3, "tcp://127.0.0.1:1234")
    assert (cfg.name, cfg.quiet, cfg.log_every, cfg.record_dir, cfg.record) == (
        "r1",
        True,
        5,
        "/r",
        True,
    )
    assert parse_config(["--clip-value", "0.1"]).clip_value == 0.1
    assert parse_config(["--no-record"]).record is False


@pytest.mark.parametrize(
    "argv",
    [
        "--depth 0",
        "--width 0",
        "--lr -1",
        "--lr 0",
        "--lr nan",
        "--lr inf",
        "--clip-norm -1",
        "--clip-value 0",
        "--clip-norm 1 --clip-value 1",
        "--momentum 1",
        "--momentum -0.1",
        "--optimizer adam --momentum 0.9",
        "--batch-size 0",
        "--steps -1",
        "--every 0",
        "--log-every 0",
        "--seed -1",
        "--endpoint 127.0.0.1:5555",
        "--no-record --record-dir x",
    ],
)
def test_bad_values_are_one_line_errors_with_code_2(argv: str) -> None:
    """Guards validation: nonsense values must be rejected before any training starts."""
    with pytest.raises(GradtuiError) as info:
        parse_config(shlex.split(argv))
    assert info.value.code == 2
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize(
    "argv", ["--act swish", "--depth x", "--device tpu", "--dataset imagenet", "--nope"]
)
def test_unparsable_flags_exit_2_with_one_line(
    argv: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Guards argparse's multi-line usage dump: an unknown value is one stderr line, code 2."""
    with pytest.raises(SystemExit) as info:
        parse_config(shlex.split(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_main_turns_bad_values_into_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Guards main(): a GradtuiError is one stderr line and the return code, not a traceback."""
    assert main(["--clip-norm", "-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "trainer: error: --clip-norm must be a positive number, got -1\n"


def test_help_documents_every_flag() -> None:
    """Guards --help: every flag the brief promises appears with a help text."""
    text = build_parser().format_help()
    for flag in shlex.split(
        "--depth --width --act --bn --residual --clip-norm --clip-value --init --optimizer --lr "
        "--momentum --batch-size --steps --arch --dataset --data-dir --download --device --seed "
        "--every --endpoint --name --quiet --record-dir --no-record"
    ):
        assert flag in text, flag
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_run_name_describes_the_remedies() -> None:
    """Guards default run names, which tell runs apart in the comparison view."""
    assert parse_config([]).run_name() == "mlp-d20-sigmoid"
    assert (
        parse_config(shlex.split("--act relu --bn --residual --clip-norm 1")).run_name()
        == "mlp-d20-relu+bn+res+clip1"
    )
    assert parse_config(["--name", "mine"]).run_name() == "mine"


def test_config_travels_in_a_hello_message() -> None:
    """Guards as_dict(): the config must be flat scalars the protocol accepts and round-trips."""
    cfg = parse_config(shlex.split("--act relu --clip-norm 1.5 --endpoint tcp://127.0.0.1:9"))
    hello = protocol.Hello(run="r", name="n", layers=(), config=cfg.as_dict())
    decoded = protocol.decode(protocol.encode(hello))
    assert isinstance(decoded, protocol.Hello)
    assert decoded.config == cfg.as_dict()
    assert decoded.config["clip_norm"] == 1.5 and decoded.config["act"] == "relu"
