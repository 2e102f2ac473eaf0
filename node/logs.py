"""Logging for the daemon: every record carries the node id and the current round.

`configure(node_id, fmt, level)` installs one stderr handler on the `declora` logger;
`set_round(r)` updates the round shown on later records. `fmt="json"` writes one JSON
object per line (time, level, logger, node, round, message, and any `extra=` fields).

Warnings and errors are rate-limited (`RepeatFilter`): a message is written once, its
repeats within `REPEAT_WINDOW` seconds are counted, and the next one after that window
is written with "(repeated N times in the last M s)"; `flush_repeats()` writes what is
still counted (at exit).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

_context = {"node": "-", "round": 0}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "node", "round"}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _context["node"]
        record.round = _context["round"]
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node", "-"),
            "round": getattr(record, "round", 0),
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


REPEAT_WINDOW = 30.0  # seconds
MAX_TRACKED = 1000  # distinct messages remembered


class RepeatFilter(logging.Filter):
    """Writes a WARNING-or-worse message once per `window` seconds; the repeats between
    are counted and reported on the next one written ("(repeated N times in the last M
    s)"), or by `flush`. Lower levels pass untouched."""

    def __init__(
        self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        # message -> (time last written, repeats since, the latest repeat)
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int, logging.LogRecord]]
        self._seen = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            self._seen[key] = (seen[0], seen[1] + 1, record)
            return False
        if seen is not None and seen[1]:
            _mark_repeated(record, seen[1], now - seen[0])
        self._seen[key] = (now, 0, record)
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_TRACKED:
            self._seen.popitem(last=False)
        return True

    def pending(self) -> list[logging.LogRecord]:
        """The latest repeat of every message with uncounted repeats, marked; forgets them."""
        now = self.clock()
        out = []
        for key, (shown, count, record) in list(self._seen.items()):
            if count:
                _mark_repeated(record, count, now - shown)
                out.append(record)
                self._seen[key] = (now, 0, record)
        return out


def _mark_repeated(record: logging.LogRecord, count: int, seconds: float) -> None:
    record.msg = f"{record.getMessage()} (repeated {count} times in the last {seconds:.0f} s)"
    record.args = None
    record.repeated = count


def flush_repeats() -> None:
    """Write the repeats the `declora` handler's RepeatFilter has counted but not shown."""
    for handler in logging.getLogger("declora").handlers:
        for f in handler.filters:
            if isinstance(f, RepeatFilter):
                for record in f.pending():
                    handler.handle(record)


def configure(node_id: str, fmt: str = "text", level: str = "INFO") -> logging.Logger:
    _context["node"] = node_id
    logger = logging.getLogger("declora")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.addFilter(RepeatFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(node)s r%(round)s] %(message)s")
        )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def set_round(r: int) -> None:
    _context["round"] = r
