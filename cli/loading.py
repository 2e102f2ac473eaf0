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


def _ignored(signum: int, frame: FrameType | None) -> None:
    """A stop signal after the one being handled: the same stop delivered again
    (`timeout` signals its child, then its process group), the process is exiting."""


def _interrupted_loading(signum: int, frame: FrameType | None) -> None:
    """`NOT_BEGUN` on stderr and exit 130; as a JSON record when the command line or
    DECLORA_LOG_FORMAT asks for JSON logs."""
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
    """--log-format json on the command line, else DECLORA_LOG_FORMAT=json."""
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg.startswith("--log-format="):
            return arg.partition("=")[2].strip().lower() == "json"
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1].strip().lower() == "json"
    return os.environ.get("DECLORA_LOG_FORMAT", "").strip().lower() == "json"


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
    (imported off the main thread: nothing is installed)."""
    try:
        _COVERED[:] = taken_over(_interrupted_loading, (signal.SIGINT, *OTHER_STOPS))
    except ValueError:
        _COVERED.clear()


def uncover() -> None:
    """The handlers `cover` replaced are back (where its own is still in place)."""
    for sig in _COVERED:
        if signal.getsignal(sig) is _interrupted_loading:
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, default)
