"""declora.cli: the `declora-node` command (typer)."""
