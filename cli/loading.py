"""Stop signals while `declora-node` loads (typer, the node package), before `main`
can catch a KeyboardInterrupt: `NOT_BEGUN` on stderr, exit 130, no traceback.

Only the standard library is imported here, and nothing while a signal is handled:
the import it interrupted may hold a module's lock. `cover` is the first thing
`cli/app.py` does, `uncover` its last (or its first, when an import fails).
"""

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
OTHER_STOPS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))

_COVERED: list[signal.Signals] = []  # the signals `cover` took over
# "json": whether the --config file asks for JSON logs (read by `cover`; unread: no)
_CONFIG_FILE: dict[str, bool] = {}


def _ignored(signum: int, frame: FrameType | None) -> None:
    """A stop signal after the one being handled: the same stop delivered again
    (`timeout` signals its child, then its process group), the process is exiting."""


def _interrupted_loading(signum: int, frame: FrameType | None) -> None:
    """`NOT_BEGUN` on stderr and exit 130; as a JSON record when the command line,
    DECLORA_LOG_FORMAT or the --config file asks for JSON logs (`_json_asked`)."""
    for sig in (signal.SIGINT, *OTHER_STOPS):
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
    """--log-format json on the command line, else DECLORA_LOG_FORMAT=json, else the
    --config file's log_format = "json" (read by `cover`), as the settings take them: a
    value they refuse ("JSON") is not json, a variable's name is read in any case."""
    flag = option_value(sys.argv[1:], "--log-format")
    if flag is not None:
        return flag == "json"
    env = _env_log_format()
    if env is not None:
        return env == "json"
    return _CONFIG_FILE.get("json", False)


def _env_log_format() -> str | None:
    """DECLORA_LOG_FORMAT's value (its name in any case, as the settings read it)."""
    return next((v for k, v in os.environ.items() if k.upper() == "DECLORA_LOG_FORMAT"), None)


def option_value(args: list[str], flag: str) -> str | None:
    """The value of `flag` in `args` (`--flag=value` or `--flag value`), or None."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{flag}="):
            return arg.partition("=")[2]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def _file_log_format(path: str) -> str | None:
    """The log_format key (or log-format) of the TOML, JSON or YAML config file `path`,
    parsed as `settings.read_config_file` does; None when there is none or the file
    cannot be used (the settings refuse it later, naming why)."""
    parsers = {".toml": "tomllib", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}
    parser = parsers.get(os.path.splitext(path)[1].lower())
    if parser is None or not os.path.isfile(path):  # never a FIFO: it might block
        return None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
        if parser == "tomllib":
            import tomllib

            data = tomllib.loads(text)
        elif parser == "json":
            import json

            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception:  # unreadable, not UTF-8, a syntax error, no yaml installed
        return None
    if not isinstance(data, dict):
        return None
    values = [v for k, v in data.items() if str(k).replace("-", "_") == "log_format"]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def taken_over(handler: object, signals: tuple[signal.Signals, ...]) -> list[signal.Signals]:
    """Those of `signals` still at their default (an ignored SIGHUP, `nohup`, stays
    ignored; SIGINT's raises KeyboardInterrupt) now go to `handler`."""
    taken = []
    for sig in signals:
        default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        if signal.getsignal(sig) is default:
            signal.signal(sig, handler)  # type: ignore[arg-type]
            taken.append(sig)
    return taken


def cover() -> None:
    """SIGINT and the other stops still at their default go to `_interrupted_loading`
    (imported off the main thread: nothing is installed); then the --config file's
    log_format is read, where neither the flag nor DECLORA_LOG_FORMAT sets one (a stop
    meanwhile is a plain line)."""
    try:
        _COVERED[:] = taken_over(_interrupted_loading, (signal.SIGINT, *OTHER_STOPS))
    except ValueError:
        _COVERED.clear()
    config = option_value(sys.argv[1:], "--config")
    unset = option_value(sys.argv[1:], "--log-format") is None and _env_log_format() is None
    if config is not None and unset:
        _CONFIG_FILE["json"] = _file_log_format(config) == "json"


def uncover() -> None:
    """The handlers `cover` replaced are back (where its own is still in place)."""
    for sig in _COVERED:
        if signal.getsignal(sig) is _interrupted_loading:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)
