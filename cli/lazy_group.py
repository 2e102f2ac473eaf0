"""The `declora-node` command group: `start`, `config`, `simulate` and `lab` built
only when one is invoked or help lists them (their options come from the settings
models: pydantic-settings, numpy, which `status` and the others need not load), a
usage error as `error:` and `hint:` lines (of `start` with JSON logs asked, one JSON
log record), a Ctrl-C as one line (exit 130). Every command's help wraps each
paragraph to the terminal (`reflowed`), and its path options refuse an empty value."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer.core import TyperGroup

from declora.cli.checks import need_temp_folder
from declora.cli.exits import STATE, interrupted, say_error, show_traceback
from declora.cli.loading import NOT_BEGUN
from declora.cli.run_commands import lab, simulate
from declora.cli.start_command import config_command, json_logs_in, start

if TYPE_CHECKING:
    from typer import _click as click  # the click typer bundles


class LazyGroup(TyperGroup):
    """The group: the `LAZY` commands built when one is invoked or help lists them,
    listed first; every command's callback marks in `STATE` that it has begun."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*LAZY, *(n for n in super().list_commands(ctx) if n not in LAZY)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY and cmd_name not in self.commands:
            self.commands[cmd_name] = LAZY[cmd_name]()
        command = super().get_command(ctx, cmd_name)
        if command is not None and command.help:
            command.help = reflowed(command.help)
        if command is not None:
            _refuse_empty_paths(command)
        if command is not None and command.callback is not None:
            command.callback = _marks_began(command.callback, cmd_name not in NO_TORCH)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """A Ctrl-C is one line, exit 130 (a traceback too with --debug): before the
        command began, nothing was written; `start`, `simulate` and `lab` say what is
        true once they have begun; others, only that it was interrupted."""
        STATE["began"] = False
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            interrupted("interrupted" if STATE["began"] else NOT_BEGUN)
        except EOFError as exc:  # before typer's handler, which wrote an empty line
            raise _InputEnded(str(exc)) from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's own handling, except that a usage error (a bad value, an unknown
        option, a missing argument) or another of click's errors is our two lines,
        `error:` and `hint:`, with its exit code (2 for a usage error; of `start` with
        JSON logs asked, one JSON log record: `say_error`), rather than a boxed panel
        (help, and a bare `declora-node`, stay as they are), and an EOFError out of a
        command is too, exit 1 (typer said 'Aborted!' after an empty line)."""
        from typer._click import exceptions as errors

        def run(standalone: bool) -> Any:
            return super(LazyGroup, self).main(
                args, prog_name, complete_var, standalone, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run(False)
        STATE["began"] = None  # `invoke` not reached yet
        try:
            code = run(False)
            if code == 130 and STATE["began"] is None:  # typer's exit for a Ctrl-C there
                typer.echo(NOT_BEGUN, err=True)
        except errors.NoArgsIsHelpError:
            return run(True)  # the help, exactly as before
        except errors.ClickException as exc:  # a usage error, or another of click's
            where = self._where(getattr(exc, "ctx", None), args)
            message = " ".join(exc.format_message().split())
            self._fail(message, exc.exit_code, f"see `{where} --help`", where, args)
        except _InputEnded as exc:  # an EOFError out of a command
            message = "an input ended early" + (f" ({exc})" if str(exc) else "")
            hint = "check that the files and standard input it reads are whole; --debug shows where"
            self._fail(message, 1, hint, self._where(None, args), args, traced=True)
        sys.exit(code if isinstance(code, int) else 0)

    def _fail(
        self,
        message: str,
        code: int,
        hint: str,
        where: str,
        args: Sequence[str] | None,
        traced: bool = False,
    ) -> NoReturn:
        """`error:` and `hint:` lines, exit `code` (of `start` with JSON logs asked,
        one JSON log record: `say_error`); `traced`: with --debug, the traceback of the
        exception being handled too (`show_traceback`)."""
        words = list(sys.argv[1:] if args is None else args)
        json_logs = where == "declora-node start" and json_logs_in(words)
        if traced:
            show_traceback(json_logs=json_logs)
        say_error(message, code, hint, json_logs)
        sys.exit(code)

    def _where(self, ctx: click.Context | None, args: Sequence[str] | None) -> str:
        """The command a usage error is about: `declora-node lab`, `declora-node certs
        revoke` (click leaves the context out of some errors: then the first command
        named in the arguments)."""
        names: list[str] = []
        while ctx is not None and ctx.parent is not None:
            names.insert(0, str(ctx.info_name))
            ctx = ctx.parent
        if names:
            return f"declora-node {' '.join(names)}"
        words = list(sys.argv[1:] if args is None else args)
        named = [w for w in words if w in LAZY or w in self.commands]
        return f"declora-node {named[0]}" if named else "declora-node"


def reflowed(text: str) -> str:
    """`text` (a docstring) with each paragraph on one line, so that help wraps every
    paragraph to the terminal's width (typer keeps the hard line breaks of all but the
    first). A paragraph stays as written when it begins with click's \\b or a line of it
    past the first is indented or a list item (`- `, `* `): an example or a list."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if _as_written(p) else " ".join(p.split("\n")) for p in paragraphs)


def _as_written(paragraph: str) -> bool:
    """Whether `reflowed` keeps `paragraph`'s line breaks."""
    rest = paragraph.split("\n")[1:]
    return paragraph.startswith("\b") or any(line.startswith((" ", "- ", "* ")) for line in rest)


def _refuse_empty_paths(command: click.Command) -> None:
    """Every path option and argument of `command` refuses an empty value, or one of
    only spaces (`option_values.blank_path`, the rule of settings too), as a usage
    error: typer took "" for the current folder (`export --output "$UNSET" --force`
    replaced it)."""
    from typer._click.exceptions import BadParameter

    from declora.node.option_values import blank_path

    for sub in getattr(command, "commands", {}).values():  # a group's (`certs revoke`)
        _refuse_empty_paths(sub)
    for param in command.params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or not descriptor.is_path or "process_value" in vars(param):
            continue

        def process_value(
            ctx: click.Context, value: Any, param: Any = param, process: Any = param.process_value
        ) -> Any:
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(blank_path(v) for v in values):
                raise BadParameter("an empty path", ctx=ctx, param=param)
            return process(ctx, value)

        param.process_value = process_value  # type: ignore[method-assign]


class _InputEnded(Exception):
    """An EOFError out of a command (its cause), carried past typer's own handler."""


# commands that import no torch, so need no temporary folder; `start` checks it itself
# (`launch`, after its log format is set), `inspect` after its arguments
NO_TORCH = frozenset({"start", "config", "status", "inspect"})


def _marks_began(callback: Any, loads_torch: bool = False) -> Any:
    """`callback` noting in STATE that it has begun (once wrapped, it is kept); for a
    command that `loads_torch`, first `need_temp_folder`."""
    if getattr(callback, "marks_began", False):
        return callback

    def began(*args: Any, **kwargs: Any) -> Any:
        STATE["began"] = True
        if loads_torch:
            need_temp_folder()
        return callback(*args, **kwargs)

    began.marks_began = True  # type: ignore[attr-defined]
    return began


def _one_command(
    func: Any, name: str, model: Any = None, skip: tuple[str, ...] = ()
) -> click.Command:
    """`func` as a click command named `name`, with a flag for every field of `model`
    (a config class, imported only when the command is used)."""
    from declora.cli.options import fields_command, fields_command_class

    single = typer.Typer(
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    cls = fields_command_class(model()) if model else None
    single.command(name, cls=cls)(fields_command(model(), func, skip) if model else func)
    return typer.main.get_command(single)


def _node_settings() -> Any:
    from declora.node.settings import NodeSettings

    return NodeSettings


def _sim_config() -> Any:
    from declora.node.sim_config import SimConfig

    return SimConfig


def _lab_config() -> Any:
    from declora.cli.lab import LabConfig

    return LabConfig


LAZY = {
    "start": lambda: _one_command(start, "start", _node_settings),
    "config": lambda: _one_command(config_command, "config", _node_settings),
    "simulate": lambda: _one_command(simulate, "simulate", _sim_config),
    "lab": lambda: _one_command(lab, "lab", _lab_config, skip=("extra",)),
}
