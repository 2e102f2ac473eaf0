"""How a command ends other than by finishing: `error:` and `hint:` lines with exit 2
(the user's) or 1 (runtime), the same as JSON log records for `start --log-format
json`, and one line with exit 130 after a Ctrl-C (`Interrupts`). `STATE` holds
--debug (a traceback too) and whether the command has begun."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import typer

from declora.cli.lines import error_lines, shown_text

# --debug; whether a command's own code has begun (None: not even its parsing)
STATE: dict[str, bool | None] = {"debug": False, "began": None}


def show_traceback(debug: bool = False, json_logs: bool = False) -> None:
    """With --debug (or a command's own `debug`), the traceback of the exception being
    handled on stderr: --debug adds it before the `error:` line; the exit code stays.
    With `json_logs` nothing here: the JSON record of the error carries it (`exc`)."""
    if (debug or STATE["debug"]) and not json_logs:
        import traceback

        traceback.print_exc()


def _traced() -> BaseException | None:
    """With --debug, the exception being handled: the `exc` field of a JSON record;
    None for a usage error (click's: a bad or unknown option), which is no crash and
    shows no traceback in text either."""
    exc = sys.exc_info()[1]
    return exc if STATE["debug"] and not _usage_error(exc) else None


def _usage_error(exc: BaseException | None) -> bool:
    """Whether `exc` is click's (typer's copy or click itself): a mistake on the
    command line, reported by `LazyGroup.main` without a traceback."""
    for module in ("typer._click.exceptions", "click.exceptions"):
        cls = getattr(sys.modules.get(module), "ClickException", None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def interrupted(line: str, json_logs: bool = False) -> NoReturn:
    """After a Ctrl-C: `line` on stderr (what the interrupt left, e.g. "nothing was
    written"; with --debug the traceback first), exit 130; with `json_logs` (`start
    --log-format json`) as a JSON log record of level WARNING with `exit_code`."""
    show_traceback(json_logs=json_logs)
    if json_logs:
        from declora.node.logs import json_line

        line = json_line("WARNING", line, _traced(), exit_code=130)
    typer.echo(line, err=True)
    raise typer.Exit(130)


def _entries(folder: Path, within: Iterable[str] = ()) -> dict[str, tuple[int, ...]]:
    """What a write under `folder` changes: whether it exists, each entry directly in
    it and each path under its entries named in `within` (what a command writes
    deeper), with inode, size and modification time. Nothing else under `folder` is
    read: the files a command writes all change what this holds."""

    def key(path: Path) -> tuple[int, ...]:
        st = path.lstat()
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    out: dict[str, tuple[int, ...]] = {}
    with contextlib.suppress(OSError):  # none (yet)
        out["."] = key(folder)
        for entry in folder.iterdir():
            with contextlib.suppress(OSError):  # gone since
                out[entry.name] = key(entry)
    for name in within:
        for path in (folder / name).rglob("*"):
            with contextlib.suppress(OSError):
                out[str(path.relative_to(folder))] = key(path)
    return out


class Interrupts:
    """Within it a Ctrl-C is one line, exit 130 (`interrupted`): `untouched` while the
    folder `watch`ed holds what it held then, as far as a command's writes change it
    (`_entries`), or none is watched; else `touched`."""

    def __init__(self, untouched: str, touched: str = "interrupted") -> None:
        self.untouched, self.touched = untouched, touched
        self.folder: Path | None = None
        self.within: tuple[str, ...] = ()
        self.before: dict[str, tuple[int, ...]] = {}
        self.json_logs = False  # the line as a JSON log record (`interrupted`)

    def watch(self, folder: Path, within: Iterable[str] = ()) -> None:
        """Compare `folder` on a Ctrl-C with what it holds now: its entries, and
        everything under those named in `within` (folders the command rewrites)."""
        self.folder, self.within = folder, tuple(within)
        self.before = _entries(folder, self.within)

    def __enter__(self) -> Interrupts:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            same = self.folder is None or _entries(self.folder, self.within) == self.before
            interrupted(self.untouched if same else self.touched, self.json_logs)


def say_error(message: str, code: int = 2, hint: str = "", json_logs: bool = False) -> None:
    """`error: message` (and `hint: ...`) on stderr; with `json_logs` (`start
    --log-format json`) the same as one JSON log record (`logs.json_line`: level ERROR,
    `hint` and `exit_code` fields; with --debug the traceback of the exception being
    handled, if any, as its `exc` field). Either way the text is `lines.shown_text`'s,
    escaped once (a non-UTF-8 path's bytes as \\xff: no lone surrogate in the JSON).
    Exiting with `code` is the caller's."""
    if json_logs:
        from declora.node.logs import json_line

        shown = shown_text(message)
        line = json_line("ERROR", shown, _traced(), hint=shown_text(hint), exit_code=code)
        typer.echo(line, err=True)
        return
    error, *rest = error_lines(message, hint)
    typer.secho(error, err=True, fg=typer.colors.RED)
    for line in rest:
        typer.echo(line, err=True)


def fail(message: str, code: int = 2, hint: str = "", json_logs: bool = False) -> NoReturn:
    """`error: message` (and `hint: ...`) on stderr, or one JSON log record with
    `json_logs` (`say_error`), then exit with `code`."""
    say_error(message, code, hint, json_logs)
    raise typer.Exit(code)


def warn(line: str, json_logs: bool = False) -> None:
    """`warning: line` on stderr, or a JSON log record of level WARNING (`say_error`);
    `line` as `lines.shown_text` shows it (a name holding a newline cannot forge a line)."""
    if json_logs:
        from declora.node.logs import json_line

        typer.echo(json_line("WARNING", shown_text(line)), err=True)
    else:
        typer.secho(f"warning: {shown_text(line)}", err=True, fg=typer.colors.YELLOW)


def fail_with(exc: BaseException, code: int = 2) -> NoReturn:
    """`fail` for an error that carries its hint apart (`errors.HintedError`: data,
    model and adapter errors; InspectError), printed as the `hint:` line."""
    message, hint = str(getattr(exc, "message", "") or exc), str(getattr(exc, "hint", "") or "")
    fail(message, code, hint)


def config_hint(command: str, config: bool = False) -> str:
    """The hint of a bad configuration of `command`."""
    shown = "; `declora-node config` shows where each value came from" if config else ""
    return f"see `declora-node {command} --help` for what each option accepts{shown}"
