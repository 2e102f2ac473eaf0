"""Checks a command makes before any work, each exiting 2 with an `error:` line that
names the option (and a `hint:`) when the user's input cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from declora.cli.exits import fail
from declora.cli.fast import FORMATS

if TYPE_CHECKING:
    from declora.node.security import TlsFiles


def need_temp_folder() -> None:
    """Exit 2 with a hint when there is no writable temporary folder (torch's import
    needs one: a read-only root filesystem without a tmpfs), before any work."""
    from declora.node import temp_folder

    if temp_folder.temp_folder_missing():
        fail(temp_folder.PROBLEM, hint=temp_folder.HINT)


def check_format(fmt: str) -> None:
    """Exit 2 unless `fmt` is one of FORMATS, the values of every --format (before any
    work)."""
    if fmt not in FORMATS:
        hint = "use --format json" if fmt == "jsonl" else "leave --format out for text"
        fail(f"--format must be {' or '.join(FORMATS)}, got {fmt!r}", hint=hint)


def check_output(
    path: Path, option: str, force: bool | None = None, replaced: str = "what it writes there"
) -> None:
    """Exit 2 with a hint when `path` cannot be an output folder (before any work); and,
    for a command with --force (`force` not None), unless --force, when it already holds
    files (nothing a user wrote is replaced without asking)."""
    from declora.node.adapter import OUTPUT_HINT, output_problem

    problem = output_problem(path)
    if problem:
        fail(f"{option} {problem}", hint=OUTPUT_HINT)
    if force is False and path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            fail(
                f"{option} {path} already holds files ({shown})",
                hint=f"pass --force to replace {replaced}, or choose another {option}",
            )


def check_call(target: str | None, timeout: float | None = None) -> None:
    """Exit 2 with a hint when --target is not host:port or --timeout is out of range
    (before any call)."""
    from declora.cli.client import MAX_TIMEOUT, target_problem, timeout_problem

    problem = target_problem(target) if target is not None else None
    if problem:
        fail(problem, hint="give the address and port the node listens on, as its --advertise says")
    problem = timeout_problem(timeout) if timeout is not None else None
    if problem:
        fail(problem, hint=f"give seconds between 0 and {MAX_TIMEOUT:g}, e.g. --timeout 30")


def client_tls(
    cert: Path | None, key: Path | None, ca: Path | None, crl: Path | None = None
) -> TlsFiles | None:
    """The CLI's own TLS files (exit 2 naming the option when they are bad; a --tls-crl
    must be the CA's and must not revoke the CLI's own certificate)."""
    from declora.node.security import TlsError, TlsFiles

    try:
        return TlsFiles.load(cert, key, ca, crl=crl)
    except TlsError as exc:
        fail(
            str(exc),
            hint="give --tls-cert, --tls-key and --tls-ca of one `declora-node certs` run "
            "(cli.pem, cli-key.pem and ca.pem)",
        )
