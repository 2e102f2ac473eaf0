"""`declora-node`: start a node, look at nodes and adapters, run a lab or a simulation."""

# ruff: noqa: E402 (a Ctrl-C handler is installed before the other imports)
from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

NOT_BEGUN = "interrupted before the command began; nothing was written"


# SIGTERM (docker stop, systemctl stop) and SIGHUP (a closed ssh session) are a Ctrl-C
# until a command takes them over (`start` once its configuration is checked, `lab`):
# their default action killed a node still loading with no word (exit 143, 129)
_OTHER_STOPS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _ignored(signum: int, frame: FrameType | None) -> None:
    """A stop signal after the one being handled: the same stop delivered again
    (`timeout` signals its child, then its process group), the process is exiting."""


def _interrupted_loading(signum: int, frame: FrameType | None) -> None:
    """A stop signal while this module loads (typer, the node package), before `main`
    can catch a KeyboardInterrupt: `NOT_BEGUN` on stderr, exit 130, no traceback; as
    a JSON record when the command line or DECLORA_LOG_FORMAT asks for JSON logs
    (nothing is imported here: the import it interrupted may hold a module's lock)."""
    for sig in (signal.SIGINT, *_OTHER_STOPS):
        signal.signal(sig, _ignored)
    line = NOT_BEGUN
    if _json_asked():  # the fields and order of `logs.json_line`
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        line = (
            f'{{"time": "{stamp}", "level": "WARNING", "logger": "declora", "node": "-", '
            f'"round": 0, "message": "{NOT_BEGUN}", "exit_code": 130}}'
        )
    sys.stderr.write(line + "\n")
    raise SystemExit(130)


def _json_asked() -> bool:
    """--log-format json on the command line, else DECLORA_LOG_FORMAT=json."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--log-format="):
            return arg.partition("=")[2].strip().lower() == "json"
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1].strip().lower() == "json"
    return os.environ.get("DECLORA_LOG_FORMAT", "").strip().lower() == "json"


def _taken_over(handler: object, signals: tuple[signal.Signals, ...]) -> list[signal.Signals]:
    """Those of `signals` still at their default (an ignored SIGHUP, `nohup`, stays
    ignored; SIGINT's raises KeyboardInterrupt) now go to `handler`."""
    taken = []
    for sig in signals:
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(sig) is default:
            signal.signal(sig, handler)  # type: ignore[arg-type]
            taken.append(sig)
    return taken


# the first thing this module does, so the imports below are covered; the handlers
# before are back once the module has loaded (its end)
try:
    _LOADING = _taken_over(_interrupted_loading, (signal.SIGINT, *_OTHER_STOPS))
except ValueError:  # imported off the main thread: nothing to install
    _LOADING = []


def _loaded() -> None:
    """The handlers `_interrupted_loading` replaced are back (it is still in place)."""
    for sig in _LOADING:
        if signal.getsignal(sig) is _interrupted_loading:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)


import contextlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

try:  # the slow imports; one that fails puts Python's own Ctrl-C handler back first
    import typer
    from typer.core import TyperGroup

    from declora.cli.fast import FORMATS
    from declora.node import __version__
except BaseException:
    _loaded()
    raise

if TYPE_CHECKING:
    from typer import _click as click  # the click typer bundles

    from declora.node.security import TlsFiles
    from declora.node.settings import Resolved


class _LazyGroup(TyperGroup):
    """Builds `start`, `config` and `lab` only when one is invoked or help lists them:
    their options come from the settings models (pydantic-settings, numpy), which
    `status` and the other commands need not load."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*LAZY, *(n for n in super().list_commands(ctx) if n not in LAZY)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY and cmd_name not in self.commands:
            self.commands[cmd_name] = LAZY[cmd_name]()
        command = super().get_command(ctx, cmd_name)
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
        option, a missing argument) is our two lines, `error:` and `hint:`, exit 2,
        rather than a boxed panel (help, and a bare `declora-node`, stay as they are)."""
        from typer._click import exceptions as errors
        from typer.exceptions import Abort

        def run(standalone: bool) -> Any:
            return super(_LazyGroup, self).main(
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
        except errors.UsageError as exc:
            message = " ".join(exc.format_message().split())
            typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
            typer.echo(f"hint: see `{self._where(exc.ctx, args)} --help`", err=True)
            sys.exit(exc.exit_code)
        except errors.ClickException as exc:
            typer.secho(f"error: {exc.format_message()}", err=True, fg=typer.colors.RED)
            sys.exit(exc.exit_code)
        except Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def _where(self, ctx: click.Context | None, args: Sequence[str] | None) -> str:
        """The command a usage error is about: `declora-node lab` (click leaves the
        context out of some errors: then the first command named in the arguments)."""
        if ctx is not None and ctx.parent is not None:
            return f"declora-node {ctx.info_name}"
        words = list(sys.argv[1:] if args is None else args)
        named = [w for w in words if w in LAZY or w in self.commands]
        return f"declora-node {named[0]}" if named else "declora-node"


app = typer.Typer(
    name="declora-node",
    cls=_LazyGroup,
    help="Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

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


# --debug; whether a command's own code has begun (None: not even its parsing)
STATE: dict[str, bool | None] = {"debug": False, "began": None}


# commands that import no torch, so need no temporary folder; `start` checks it itself
# (`launch`, after its log format is set), `inspect` after its arguments
NO_TORCH = frozenset({"start", "config", "status", "inspect"})


def _need_temp_folder() -> None:
    """Exit 2 with a hint when there is no writable temporary folder (torch's import
    needs one: a read-only root filesystem without a tmpfs), before any work."""
    from declora.node import temp_folder

    if temp_folder.temp_folder_missing():
        fail(temp_folder.PROBLEM, hint=temp_folder.HINT)


def _marks_began(callback: Any, loads_torch: bool = False) -> Any:
    """`callback` noting in STATE that it has begun (once wrapped, it is kept); for a
    command that `loads_torch`, first `_need_temp_folder`."""
    if getattr(callback, "marks_began", False):
        return callback

    def began(*args: Any, **kwargs: Any) -> Any:
        STATE["began"] = True
        if loads_torch:
            _need_temp_folder()
        return callback(*args, **kwargs)

    began.marks_began = True  # type: ignore[attr-defined]
    return began


def interrupted(line: str, json_logs: bool = False) -> NoReturn:
    """After a Ctrl-C: `line` on stderr (what the interrupt left, e.g. "nothing was
    written"; with --debug the traceback first), exit 130; with `json_logs` (`start
    --log-format json`) as a JSON log record of level WARNING with `exit_code`."""
    if STATE["debug"]:
        import traceback

        traceback.print_exc()
    if json_logs:
        from declora.node.logs import json_line

        line = json_line("WARNING", line, exit_code=130)
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"declora {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show a traceback with an error (for bug reports).")
    ] = False,
) -> None:
    """Peer-to-peer decentralized LoRA fine-tuning (Dec-LoRA)."""
    STATE["debug"] = debug


def fail(message: str, code: int = 2, hint: str = "") -> None:
    """Print `error: message` (and `hint: ...`) on stderr and exit with `code`."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def refuse(message: str, code: int = 2, hint: str = "", json_logs: bool = False) -> NoReturn:
    """`fail`, or with `json_logs` (`start --log-format json`) the same as one JSON log
    record on stderr (`logs.json_line`: level ERROR, `hint` and `exit_code` fields)."""
    if json_logs:
        from declora.node.logs import json_line

        typer.echo(json_line("ERROR", message, hint=hint, exit_code=code), err=True)
        raise typer.Exit(code)
    fail(message, code, hint)
    raise AssertionError("unreachable: fail exits")


def _warn(line: str, json_logs: bool = False) -> None:
    """`warning: line` on stderr, or a JSON log record of level WARNING (`refuse`)."""
    if json_logs:
        from declora.node.logs import json_line

        typer.echo(json_line("WARNING", line), err=True)
    else:
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)


def json_logs_asked(options: dict[str, Any], config: Path | None) -> bool:
    """Whether `start` was given --log-format json (flag, then DECLORA_LOG_FORMAT, then
    the config file's log_format, as the settings take them), known before they are
    built or when they are refused. A log format that is itself refused is not json:
    what was asked is unknown, so that refusal is the plain `error:` line."""
    from declora.node.settings import ConfigFileError, env_name, read_config_file

    value = options.get("log_format")
    if value is None:
        name = env_name("log_format")
        value = next((v for k, v in os.environ.items() if k.upper() == name), None)
    if value is None and config is not None:
        try:
            value = read_config_file(config).get("log_format")
        except ConfigFileError:
            value = None
    return value == "json"


def fail_with(exc: BaseException, code: int = 2) -> None:
    """`fail` for an error that carries its hint apart (`errors.HintedError`: data,
    model and adapter errors; InspectError), printed as the `hint:` line."""
    message, hint = str(getattr(exc, "message", "") or exc), str(getattr(exc, "hint", "") or "")
    fail(message, code, hint)


def config_hint(command: str, config: bool = False) -> str:
    """The hint of a bad configuration of `command`."""
    shown = "; `declora-node config` shows where each value came from" if config else ""
    return f"see `declora-node {command} --help` for what each option accepts{shown}"


def _check_format(fmt: str) -> None:
    """Exit 2 unless `fmt` is one of FORMATS, the values of every --format (before any
    work)."""
    if fmt not in FORMATS:
        hint = "use --format json" if fmt == "jsonl" else ""
        fail(f"--format must be {' or '.join(FORMATS)}, got {fmt!r}", hint=hint)


def _check_output(
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


def _check_call(target: str | None, timeout: float | None = None) -> None:
    """Exit 2 when --target is not host:port or --timeout is out of range (before any call)."""
    from declora.cli.client import target_problem, timeout_problem

    problem = (target_problem(target) if target is not None else None) or (
        timeout_problem(timeout) if timeout is not None else None
    )
    if problem:
        fail(problem)


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    """One validation error as the user would fix it: `--option: message`."""
    msg = msg.removeprefix("Value error, ")
    option = "-".join(str(p) for p in loc).replace("_", "-")
    return f"--{option}: {msg}" if option else msg  # model-level checks name their options


def _client_tls(
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
        raise  # unreachable: fail exits


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML, JSON or YAML file of options (keys as the flags)."),
]
FormatOpt = Annotated[str, typer.Option("--format", help="text or json.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing files.")]


def _settings(
    options: dict[str, Any], config: Path | None, command: str = "start", json_logs: bool = False
) -> Resolved:
    """Settings from flags, environment, file, defaults (exit 2 naming a bad value);
    warns about DECLORA_* variables that are no option. With `json_logs` the warnings
    and the refusal are JSON log records (`refuse`)."""
    from declora.node.settings import (
        ConfigFileError,
        SettingsError,
        resolve_settings,
        unknown_env_vars,
    )

    for line in unknown_env_vars(dict(os.environ)):
        _warn(line, json_logs)
    try:
        resolved = resolve_settings(options, config)
    except (SettingsError, ConfigFileError) as exc:
        if STATE["debug"]:
            raise
        hint = config_hint(command, config=command == "start")
        if isinstance(exc, ConfigFileError):  # it says its own hint
            refuse(exc.message, hint=exc.hint or hint, json_logs=json_logs)
        refuse(str(exc), hint=hint, json_logs=json_logs)
    for line in resolved.warnings:  # a key or secret open to others, a certificate ending
        _warn(line, json_logs)
    return resolved


def start(config: ConfigOpt = None, options: dict[str, Any] | None = None) -> None:
    """Run a node: train LoRA locally and mix with live neighbours every round.

    Every option is also an environment variable (DECLORA_RANK for --rank) and a config
    file key (rank); a flag wins over the environment, which wins over the file.
    `declora-node config` shows what applies and where it came from.
    """
    # once launch has checked the configuration, a stop signal stops the node (`signals`)
    not_started = "interrupted before the node started; nothing was written"
    with Interrupts(not_started) as guard:
        json_logs = guard.json_logs = json_logs_asked(options or {}, config)
        settings = _settings(options or {}, config, json_logs=json_logs).settings
        from declora.node.daemon.launch import launch
        from declora.node.daemon.signals import NotStarted
        from declora.node.daemon.startup import as_user_error
    try:
        code = launch(settings)
    except NotStarted:
        interrupted(not_started, settings.log_format == "json")
    except Exception as exc:
        mistake = as_user_error(exc)
        if mistake is None or STATE["debug"]:
            raise
        refuse(mistake.message, mistake.code, mistake.hint, settings.log_format == "json")
    raise typer.Exit(code)


def config_command(
    config: ConfigOpt = None, fmt: FormatOpt = "text", options: dict[str, Any] | None = None
) -> None:
    """Print the settings `start` would use, and where each came from.

    Sources: flag, env (the variable), file (the config file), default, or the option
    a value is taken from (advertise: listen; swarm-secret: swarm-secret-file).
    """
    _check_format(fmt)
    resolved = _settings(options or {}, config, "config")
    values = resolved.settings.model_dump(mode="json")
    rows = {k: {"value": values[k], "source": resolved.sources[k]} for k in values}
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from declora.cli.client import folded, report_console
    from declora.node.settings import default_text

    table = Table("option", "value", "source", box=None, pad_edge=False)
    for name, row in rows.items():
        value = row["value"]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        if shown in (None, ""):
            shown = f"({default_text(name)})"
        table.add_row(name.replace("_", "-"), str(shown), row["source"])
    report_console().print(folded(table))  # a long path folded, never cut with an ellipsis


@app.command()
def status(
    target: Annotated[str, typer.Option(help="host:port of a running node.")] = "127.0.0.1:7070",
    fmt: FormatOpt = "text",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the answer (at most 3600).")
    ] = 5.0,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    tls_crl: TlsCrl = None,
) -> None:
    """Show a node's round, loss, last evaluation and neighbours.

    `main` answers the plain forms without this app (`cli/fast.py`), in a fraction of
    the time; both end in `client.show_status`.
    """
    from declora.cli.client import show_status

    _check_format(fmt)
    _check_call(target, timeout)
    tls = _client_tls(tls_cert, tls_key, tls_ca, tls_crl)
    raise typer.Exit(show_status(target, fmt == "json", timeout, tls))


@app.command()
def inspect(
    path: Annotated[
        Path | None, typer.Argument(help="A saved adapter or checkpoint directory.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="host:port: show that node's peer view.")
    ] = None,
    fmt: FormatOpt = "text",
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    tls_crl: TlsCrl = None,
) -> None:
    """Describe a saved adapter/checkpoint (config, tensors, fingerprint) or a node's peers."""
    _check_format(fmt)
    if (path is None) == (target is None):
        fail("give either PATH or --target")
    _check_call(target)
    _need_temp_folder()  # cli.inspect imports torch (a --target too)
    from declora.cli.inspect import InspectError, inspect_path, inspect_target

    tls = _client_tls(tls_cert, tls_key, tls_ca, tls_crl)
    try:
        info = inspect_path(path) if path is not None else inspect_target(str(target), tls)
    except InspectError as exc:  # a path that is no adapter: the user's; a node: runtime
        # (but a secret's environment that cannot be used: `client.SecretEnvError`, 2)
        fail_with(exc, 2 if path is not None else getattr(exc.__cause__, "code", 1))
        return
    from declora.cli.inspect import render

    if fmt == "json":
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        render(info)


certs_app = typer.Typer(
    name="certs",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(certs_app)


@certs_app.callback(
    help=(
        "Mint mTLS certificates for nodes, signed by the swarm CA in --output.\n\n"
        "A folder without ca.pem gets a new CA, and a certificate for this CLI (cli.pem) too. "
        "A folder with ca.pem and ca-key.pem keeps its CA: only the named nodes' certificates "
        "are minted, so a node can join, or one node's certificate be renewed, while the "
        "others stay valid. Existing node files are replaced only when forced, the CA only "
        "with --new-ca. Nothing is written when any check fails."
    )
)
def certs(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder to write the PEM files into.")
    ] = None,
    nodes: Annotated[
        str | None, typer.Option(help="Node names, comma-separated: node-0,node-1.")
    ] = None,
    hosts: Annotated[
        str, typer.Option(help="Every host name or IP the nodes are dialled at, comma-separated.")
    ] = "127.0.0.1,localhost",
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
    force: ForceOpt = False,
    new_ca: Annotated[
        bool,
        typer.Option(
            "--new-ca",
            help="Replace the CA in --output with a new one: every node's certificate "
            "must then be re-issued.",
        ),
    ] = False,
) -> None:
    """Certificates for `nodes` signed by the CA in `out`, or a new one (the help above)."""
    from declora.cli.certs import CertsError, mint, usage, warnings

    def split(v: str | None) -> list[str]:
        return [x.strip() for x in (v or "").split(",") if x.strip()]

    if ctx.invoked_subcommand is not None:
        if out is not None or nodes is not None:
            fail(
                f"the options of `certs {ctx.invoked_subcommand}` go after its name",
                hint=f"e.g. `declora-node certs {ctx.invoked_subcommand} --output PKI-FOLDER ...`",
            )
        return
    if out is None:
        fail(
            "--output: give the folder for the PEM files",
            hint="e.g. `declora-node certs --output pki --nodes node-0,node-1`",
        )
        return
    _check_output(out, "--output")
    try:
        minted = mint(out, split(nodes), split(hosts), days, force, new_ca)
    except CertsError as exc:
        fail_with(exc, 2)
        return
    for line in warnings(minted):
        typer.secho(f"warning: {line}", err=True, fg=typer.colors.YELLOW)
    typer.echo(usage(minted))


@certs_app.command(
    "revoke",
    help=(
        "Revoke certificates of the CA in --output (its signed list: --tls-crl).\n\n"
        "Adds them to the CA's certificate revocation list, keeping what it held; put the "
        "list in any running node's --tls-crl: it re-reads it within seconds, drops a "
        "neighbour it revokes, refuses its calls, and passes the list on to the nodes "
        "started with a --tls-crl of this CA (give each one the list once)."
    ),
)
def certs_revoke(
    out: Annotated[
        Path, typer.Option("--output", "-o", help="The folder of the CA (ca.pem, ca-key.pem).")
    ],
    cert: Annotated[
        list[Path] | None,
        typer.Option("--cert", metavar="FILE", help="A certificate to revoke (repeatable)."),
    ] = None,
    serial: Annotated[
        list[str] | None,
        typer.Option(
            "--serial",
            metavar="N",
            help="A serial to revoke: decimal, 0x-hex or aa:bb:.. (repeatable).",
        ),
    ] = None,
    crl: Annotated[
        Path | None,
        typer.Option("--crl", help="The revocation list to add to.", show_default="OUTPUT/crl.pem"),
    ] = None,
    days: Annotated[int, typer.Option(help="Days until the list's nextUpdate.")] = 30,
) -> None:
    """`certs.revoke` with the flags (the help above)."""
    from declora.cli.certs import CertsError, revoke

    try:
        done = revoke(out, cert or [], serial or [], crl, days)
    except CertsError as exc:
        fail_with(exc, 2)
        return
    for n in done.already:
        typer.secho(f"warning: serial {n:#x} was already revoked", err=True, fg=typer.colors.YELLOW)
    added = ", ".join(f"{n:#x}" for n in done.added) or "nothing new"
    typer.echo(
        f"revoked {added}: {done.crl} lists {done.total} certificates, until "
        f"{done.next_update:%Y-%m-%d %H:%M} UTC (its nextUpdate: revoke again or re-sign "
        "before then; nodes warn once it passed, and keep enforcing it)"
    )
    typer.echo(
        f"copy {done.crl} over one running node's --tls-crl: it re-reads it within seconds "
        "and passes it on to its neighbours (nodes started with a --tls-crl); a new node "
        "gets it as --tls-crl"
    )


def simulate(
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Folder for the results: run.json, run.md, run.png."),
    ] = Path("runs/simulate"),
    force: ForceOpt = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Run Dec-LoRA with N virtual nodes in this process, beside centralized LoRA."""
    untouched = "interrupted before the simulation wrote its results; nothing was written"
    with Interrupts(
        untouched, f"interrupted while writing the results: {output} may hold some"
    ) as guard:
        _simulate(output, force, options or {}, guard)


def _simulate(output: Path, force: bool, options: dict[str, Any], guard: Interrupts) -> None:
    from pydantic import ValidationError

    from declora.cli.experiment import run_one
    from declora.cli.options import given
    from declora.node.data_files import DataError
    from declora.node.model_source import ModelError
    from declora.node.partition import scheme_for_data
    from declora.node.sim_config import SimConfig

    try:
        cfg = SimConfig(**given(options))
    except ValidationError as exc:
        fail(
            "bad configuration: " + "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors()),
            hint=config_hint("simulate"),
        )
        return
    _check_output(output, "--output", force)
    try:  # the scheme the run uses is the one its header and run.json name
        scheme, why = scheme_for_data(
            cfg.partition_scheme,
            "partition_scheme" in cfg.model_fields_set,
            bool(cfg.labels),
            cfg.task,
            cfg.data,
            cfg.label_column,
        )
    except DataError as exc:
        fail_with(exc)
        return
    if why:
        typer.echo(f"simulate: {why}", err=True)
        cfg = SimConfig(**given(options), partition_scheme=scheme)
    guard.watch(output)  # run_one writes its results only at the end
    try:
        run_one(cfg, output)
    except (DataError, ModelError) as exc:  # the data (shared out among --nodes), the model
        if STATE["debug"]:
            raise
        fail_with(exc)


STUDIES = ("swarm", "lm-parity", "methods")  # experiment --task: selection, then seeds


def _study(task: str, output: Path | None, workers: int, table_only: bool) -> str:
    """Run study `task` (resumable) and return its table; with `table_only` rebuild
    the table from its finished runs and selection.json instead, running nothing."""
    from declora.cli import generalization, lm_parity, methods_study

    if task == "swarm":
        study = generalization.SWARM_STUDY
        folder = output or study.output
        if not table_only:
            return generalization.run_study(study, output, workers, say=typer.echo)
        return generalization.table(study, folder, _selection(folder))
    module = lm_parity if task == "lm-parity" else methods_study
    folder = output or module.OUTPUT
    if not table_only:
        return module.run_study(output, workers, say=typer.echo)
    return module.table(folder, _selection(folder))


def _selection(folder: Path) -> dict[str, Any]:
    path = folder / "selection.json"
    if not path.is_file():
        fail(f"{path} does not exist: no lr chosen yet", hint="run the study without --table")
    try:
        chosen = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        chosen = None
    if not isinstance(chosen, dict):
        fail(f"{path} is not a JSON object", hint="delete it and run the study again")
    return dict(chosen)


@app.command()
def experiment(
    task: Annotated[
        str,
        typer.Option(
            help="cls: the paper's grid (MiniLM); lm: the causal-LM grid (SmolLM2); swarm: "
            "the generalization study (4 topologies x 5 seeds, chosen on validation); "
            "lm-parity: SmolLM2 swarm vs centralized LoRA (3 seeds, chosen on validation); "
            "methods: every --method vs centralized LoRA and full fine-tuning (MiniLM ring "
            "of 8, 3 seeds, chosen on validation)."
        ),
    ] = "cls",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for every run and the table [default: results/paper or llm].",
        ),
    ] = None,
    only: Annotated[str | None, typer.Option(help="Comma-separated run names to (re)run.")] = None,
    list_runs: Annotated[bool, typer.Option("--list", help="List the runs and exit.")] = False,
    table: Annotated[
        bool, typer.Option("--table", help="Only rebuild table.md from finished runs.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            show_default="2",
            help="runs at a time (--task swarm, lm-parity, methods; one thread each)",
        ),
    ] = None,
) -> None:
    """Reproduce a comparison of Dec-LoRA with centralized LoRA (resumable)."""
    from declora.cli.experiment import GRIDS, run_grid, write_table

    help_hint = "see `declora-node experiment --help`"
    if task in STUDIES:
        if only is not None or list_runs:
            fail(
                f"--only and --list are for --task {' or '.join(GRIDS)}: --task {task} runs "
                "its whole study (resumable; --table rebuilds its table)",
                hint=help_hint,
            )
        if table and workers is not None:
            fail("--workers runs studies: --table runs nothing", hint="leave out --workers")
        typer.echo(_study(task, output, workers or 2, table))
        return

    if task not in GRIDS:
        fail(f"--task must be one of {', '.join([*GRIDS, *STUDIES])}, got {task!r}")
    if workers is not None:
        fail(
            f"--workers is for --task {', '.join(STUDIES)}: --task {task} runs its grid one "
            "run at a time",
            hint="leave out --workers",
        )
    if list_runs and table:
        fail("give --list or --table, not both", hint=help_hint)
    if only is not None and (list_runs or table):
        flag = "--list" if list_runs else "--table"
        fail(
            f"--only picks runs to (re)run: {flag} runs nothing",
            hint=f"leave out --only, or {flag}",
        )
    grid = GRIDS[task]
    folder = output or grid.output
    if list_runs:
        for name, cfg in grid.runs.items():
            typer.echo(f"{name:18s} {cfg.label}")
        return
    if table:
        if not folder.is_dir():
            fail(
                f"{folder} is no folder: no finished runs of --task {task} to tabulate",
                hint=f"run `declora-node experiment --task {task}` first, or give the --output "
                "it wrote",
            )
        typer.echo(write_table(folder, grid))
        return
    names = None
    if only is not None:
        names = [n.strip() for n in only.split(",")]
        if not all(names):
            fail(
                f"--only needs run names, comma-separated, got {only!r}",
                hint=f"`declora-node experiment --task {task} --list` lists them; leave out "
                "--only to run them all",
            )
    unknown = sorted(set(names or []) - set(grid.runs))
    if unknown:
        fail(
            f"unknown runs {unknown}",
            hint=f"`declora-node experiment --task {task} --list` lists them",
        )
    run_grid(folder, names, grid)


def lab(
    fmt: Annotated[
        str, typer.Option("--format", help="text or json for the final summary.")
    ] = "text",
    force: ForceOpt = False,
    options: dict[str, Any] | None = None,
) -> None:
    """Start N real daemons on 127.0.0.1 and compare them with centralized LoRA.

    Shows every node live, then each node's accuracy (perplexity for --task lm) and
    its gap to a centralized reference trained on the same samples.
    """
    stopped = "interrupted: every node was stopped; the output folder may hold partial results"
    with Interrupts("interrupted before any node started; nothing was written", stopped) as guard:
        _lab(fmt, force, options or {}, guard)


def _lab(fmt: str, force: bool, options: dict[str, Any], guard: Interrupts) -> None:
    from pydantic import ValidationError

    from declora.cli.lab import LabConfig, run_lab
    from declora.cli.options import given

    _check_format(fmt)
    try:
        cfg = LabConfig(**given(options))
    except ValidationError as exc:
        fail(
            "bad configuration: " + "; ".join(_problem(e["loc"], e["msg"]) for e in exc.errors()),
            hint=config_hint("lab"),
        )
        return
    _check_output(cfg.output, "--output", force)
    from declora.node.data_files import DataError
    from declora.node.model_source import ModelError

    # a Ctrl-C while the nodes run: run_lab stops them, sums up; it rewrites lab-N
    guard.watch(cfg.output, [f"lab-{i}" for i in range(cfg.nodes)])
    try:
        summary: dict[str, Any] = run_lab(cfg)
    except (DataError, ModelError) as exc:  # the reference's data or model, in process
        if STATE["debug"]:
            raise
        fail_with(exc)
        return
    if fmt == "json":
        typer.echo(json.dumps(summary, indent=2, default=str))
    raise typer.Exit(0 if summary.get("ok") else 1)


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


AdapterArg = Annotated[
    Path, typer.Argument(help="A saved adapter folder, a checkpoint, or a checkpoint root.")
]
BaseOpt = Annotated[
    str | None,
    typer.Option(help="A local copy of the base model (default: the base the adapter records)."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]


@app.command()
def predict(
    adapter: AdapterArg,
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A .txt (a text a line), .jsonl, .csv, .tsv or .parquet file; - stdin.",
        ),
    ] = "-",
    text_column: Annotated[str, typer.Option(help="The column that holds the texts.")] = "text",
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="text (tab-separated) or json (JSON Lines: one object a line)."
        ),
    ] = "text",
    base: BaseOpt = None,
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 32,
    debug: DebugOpt = False,
) -> None:
    """Classify texts with a saved adapter: one output line per input line, in order (a
    blank line gives an empty one): label and probability (an LM adapter: each text's
    mean token loss and perplexity)."""
    from declora.cli.predict import USER_ERRORS, run_predict

    _check_format(fmt)
    try:
        run_predict(adapter, input_, text_column, fmt, sys.stdout, sys.stdin, base, batch_size)
    except USER_ERRORS as exc:
        if debug or STATE["debug"]:
            raise
        fail_with(exc)


@app.command()
def generate(
    adapter: AdapterArg,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="The text to continue.")
    ] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="A file of prompts: .txt one a line; .jsonl, .csv, .tsv or .parquet with a "
            "prompt or messages column; - stdin (the default without --prompt).",
        ),
    ] = None,
    chat_template: Annotated[
        bool,
        typer.Option(
            "--chat-template/--no-chat-template",
            help="Render text prompts as one user turn (the chat template; without one, "
            "the plain rendering for an adapter trained on conversations); "
            "--no-chat-template sends them as they are.",
        ),
    ] = True,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 samples.")] = 0.0,
    top_p: Annotated[
        float, typer.Option(help="Nucleus sampling mass (with temperature > 0).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (set before each prompt).")] = 0,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="text (completions) or json (JSON Lines: one object a line)."
        ),
    ] = "text",
    base: BaseOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Continue prompts with a saved causal-LM adapter (chat models: as a user turn)."""
    from declora.cli.generate import Sampling, run_generate
    from declora.cli.predict import USER_ERRORS

    _check_format(fmt)
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    try:
        run_generate(
            adapter,
            prompt,
            input_,
            sys.stdout,
            sys.stdin,
            sampling=sampling,
            chat_template=chat_template,
            fmt=fmt,
            base=base,
        )
    except USER_ERRORS as exc:
        if debug or STATE["debug"]:
            raise
        fail_with(exc)


@app.command()
def export(
    adapter: AdapterArg,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="New folder.")] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge/--no-merge",
            help="Merge LoRA into the base: a plain transformers model folder (else: a copy "
            "of the PEFT adapter).",
        ),
    ] = False,
    base: BaseOpt = None,
    force: ForceOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export a saved adapter: with --merge, a model transformers loads on its own.
    Replacing an earlier export is allowed; the adapter's folder, a declora run or a
    running node's folder never is. --output is held while it is written, as a running
    node holds its folder: a node started on it meanwhile is refused."""
    from declora.cli.predict import USER_ERRORS, check_export_output, run_export
    from declora.node import run_folder

    if output is None:
        fail("--output is required: the folder to write")
        return
    _check_output(output, "--output", force, replaced="the whole folder")
    try:
        check_export_output(adapter, output, base)  # before --output is made: none made
        with run_folder.holding(output):
            typer.echo(run_export(adapter, output, merge, base))  # checks it again, held
    except run_folder.FolderBusy as busy:  # a node took it since the check
        fail(
            f"--output {output} is held by {busy.who} (a running node's folder?)",
            hint="stop that process first, or choose another --output",
        )
    except USER_ERRORS as exc:
        if debug or STATE["debug"]:
            raise
        fail_with(exc)


def main() -> None:
    import warnings

    # gRPC's C core logs every failed TLS handshake (hundreds of lines a minute when
    # certificates do not match); errors only, unless the user asks for more. Set
    # before grpc is imported, and inherited by `lab`'s daemons.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # transformers deprecation chatter is not the user's business
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    from declora.node.daemon.signals import Interrupt

    with contextlib.suppress(ValueError):  # not the main thread: nothing to install
        _taken_over(Interrupt.handle, _OTHER_STOPS)
    try:
        if sys.argv[1:2] == ["status"]:  # the plain forms without building the app
            from declora.cli.fast import status_main

            STATE["began"] = True
            code = status_main(sys.argv[2:])
            if code is not None:
                sys.exit(code)
        app(prog_name="declora-node")
    except KeyboardInterrupt:  # before the app handles them (`_LazyGroup.invoke`)
        typer.echo(NOT_BEGUN if STATE["began"] is None else "interrupted", err=True)
        sys.exit(130)


_loaded()  # `main` handles them

if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
