"""`declora-node status` without building the typer app: the command run in a loop.

Typer builds every command, and imports pydantic, before it runs one; for `status`
that was most of its CPU time (a second or more on a loaded machine). `status_main`
answers `status` when its arguments are the plain, valid ones (`--target`, `--format`,
`--timeout`, `--tls-cert/--tls-key/--tls-ca`, `--check` without `--format json`) and
returns None otherwise, so the typer command handles help and mistakes (one `error:`
line each). Both end in `client.show_status` (`health_check.check_main` for `--check`,
a healthcheck's probe, run every few seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# every --format's values (status, config, inspect, lab, predict, generate); here so that
# this path reads them without the typer app. `checks.check_format` is the one check.
FORMATS = ("text", "json")


def status_main(argv: list[str]) -> int | None:
    """The exit code of `status argv`, or None to leave it to the typer app."""
    from declora.cli.client import (
        STATUS_TARGET,
        STATUS_TIMEOUT,
        show_status,
        target_problem,
        timeout_problem,
    )
    from declora.node.security import TlsError, TlsFiles

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--target", default=STATUS_TARGET)
    parser.add_argument("--format", dest="fmt", default="text")
    parser.add_argument("--timeout", type=float, default=STATUS_TIMEOUT)
    parser.add_argument("--check", action="store_true")
    for flag in ("--tls-cert", "--tls-key", "--tls-ca"):
        parser.add_argument(flag)
    try:
        args, rest = parser.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None
    bad = args.fmt not in FORMATS or target_problem(args.target) or timeout_problem(args.timeout)
    if rest or bad or (args.check and args.fmt != "text"):
        return None  # the typer command says what is wrong
    try:
        tls = TlsFiles.load(_path(args.tls_cert), _path(args.tls_key), _path(args.tls_ca))
    except TlsError:
        return None  # the typer command names the bad option
    if args.check:
        from declora.cli.health_check import check_main

        return check_main(args.target, args.timeout, tls)
    return show_status(args.target, args.fmt == "json", args.timeout, tls)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
