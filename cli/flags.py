"""Typer options and arguments that several commands share (the options made from a
config model's fields are `cli/options.py`'s)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SEC = "Security"  # the help panel of the TLS options (cli/options.py: the others)

TlsCert = Annotated[Path | None, typer.Option(rich_help_panel=SEC, help="PEM certificate (mTLS).")]
TlsKey = Annotated[Path | None, typer.Option(rich_help_panel=SEC, help="Its PEM private key.")]
TlsCa = Annotated[
    Path | None, typer.Option(rich_help_panel=SEC, help="The swarm CA's PEM certificate.")
]
TlsCrl = Annotated[
    Path | None,
    typer.Option(rich_help_panel=SEC, help="The swarm CA's PEM revocation list (checked)."),
]


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML, JSON or YAML file of options (keys as the flags)."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="text or json.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files.")]


AdapterArg = Annotated[
    Path, typer.Argument(help="A saved adapter folder, a checkpoint, or a checkpoint root.")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(help="A local copy of the base model (default: the base the adapter records)."),
]
# `declora-node --debug CMD`, and after the name of predict, generate and export: one help
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Show a traceback with an error (for bug reports).")
]
