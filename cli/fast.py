"""`declora-node status` without building the typer app: the command run in a loop.

Typer builds every command, and imports pydantic, before it runs one; for `status`
that was most of its CPU time (a second or more on a loaded machine). `status_main`
answers `status` when its arguments are the plain ones (`--target`, `--json`,
`--timeout`, `--tls-cert/--tls-key/--tls-ca`) and returns None otherwise, so the typer
command handles help and mistakes. Both end in `client.show_status`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def status_main(argv: list[str]) -> int | None:
    """The exit code of `status argv`, or None to leave it to the typer app."""
    from declora.cli.client import STATUS_TARGET, STATUS_TIMEOUT, show_status
    from declora.node.security import TlsError, TlsFiles

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--target", default=STATUS_TARGET)
    parser.add_argument("--json", action="store_true", dest="json_out")
    parser.add_argument("--timeout", type=float, default=STATUS_TIMEOUT)
    for flag in ("--tls-cert", "--tls-key", "--tls-ca"):
        parser.add_argument(flag)
    try:
        args, rest = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None
    if rest:
        return None
    try:
        tls = TlsFiles.load(_path(args.tls_cert), _path(args.tls_key), _path(args.tls_ca))
    except TlsError:
        return None  # the typer command names the bad option
    return show_status(args.target, args.json_out, args.timeout, tls)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
