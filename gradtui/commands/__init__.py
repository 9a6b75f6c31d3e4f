"""Subcommands of the gradtui CLI, one module each."""
