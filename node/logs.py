"""Logging for the daemon: every record carries the node id and the current round.

`configure(node_id, fmt, level)` installs one stderr handler on the `declora` logger;
`set_round(r)` updates the round shown on later records. `fmt="json"` writes one JSON
object per line (time, level, logger, node, round, message, and any `extra=` fields).

Every record's message is made safe before anything else sees it (`SafeFilter`):
control characters, line and paragraph separators and bidirectional overrides are
escaped (`\\n`, `\\x1b`, `\\u202e`), so text a peer sent can never start a line of its
own or move the terminal's cursor, and it is cut at `MAX_MESSAGE` characters, saying
how much was cut, so one record costs a bounded number of bytes. An attached traceback
is escaped line by line, each line indented, at most `MAX_TRACEBACK_LINES` lines.

Warnings and errors are rate-limited (`RepeatFilter`): a message is written once, its
repeats within `REPEAT_WINDOW` seconds are counted, and the next one after that window
is written with "(repeated N times in the last M s)"; distinct messages of one
template (a refusal with a different id each time) are written at most
`PER_TEMPLATE` times a window, the rest held back and counted on the next one
written; `flush_repeats()` writes what is still counted (at exit). `RefusalLog` is
the same bound for one kind of refusal, with its own summary line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_context = {"node": "-", "round": 0}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "node",
    "round",
    "template",
}

MAX_MESSAGE = 2000  # characters of one record's message; the rest is cut
MAX_TEMPLATE = 200  # characters of a message's template kept to group its repeats
MAX_TRACEBACK_LINES = 200  # lines of a record's traceback kept (the last ones)
# C0 and C1 controls (newline, ESC, NEL...), DEL, zero-width and bidirectional marks,
# line and paragraph separators, BOM: what could forge or hide a line on a terminal
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    )


def safe_text(text: str, limit: int | None = MAX_MESSAGE) -> str:
    """`text` on one line: control and invisible characters escaped, at most about
    `limit` characters ("... [N more characters cut]" says how much was cut; None:
    never cut, for text of a bounded source such as the CLI's own errors). Backslashes
    are left alone, so text escaped before is not escaped twice."""
    if limit is None:
        return _UNSAFE.sub(_escape, text)
    head = _UNSAFE.sub(_escape, text[:limit]) if _UNSAFE.search(text, 0, limit) else text[:limit]
    if len(head) > limit:  # escaping made it longer
        head = head[:limit]
    cut = len(text) - min(len(text), limit)
    return head if not cut else f"{head}... [{cut} more characters cut]"


_plain = logging.Formatter()


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = _context["node"]
        record.round = _context["round"]
        return True


class SafeFilter(logging.Filter):
    """Formats each record's message once, escaped and bounded (`safe_text`), and keeps
    its template (the format string, bounded) as `record.template` for grouping."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "template", None) is None:
            record.template = safe_text(str(record.msg), MAX_TEMPLATE)
        try:
            message = record.getMessage()
        except Exception:  # a format that does not fit its args: still written, never raised
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = safe_text(message, self.limit)
        record.args = None
        if record.exc_info or record.stack_info:  # an exception's text may quote a peer
            record.exc_text = safe_traceback(record)
            record.exc_info, record.stack_info = None, None
        return True


def safe_traceback(record: logging.LogRecord) -> str:
    """The record's traceback (and stack) as lines that each begin with two spaces and
    are escaped like a message, at most `MAX_TRACEBACK_LINES` of them: an exception's
    message cannot start a line of its own."""
    parts = [record.exc_text or ""]
    if record.exc_info and not record.exc_text:
        parts = [_plain.formatException(record.exc_info)]
    if record.stack_info:
        parts.append(_plain.formatStack(record.stack_info))
    lines = "\n".join(p for p in parts if p).splitlines()
    kept = [f"  {safe_text(line, MAX_MESSAGE)}" for line in lines[-MAX_TRACEBACK_LINES:]]
    if len(lines) > MAX_TRACEBACK_LINES:
        kept.insert(0, f"  ... [{len(lines) - MAX_TRACEBACK_LINES} earlier lines cut]")
    return "\n".join(kept)


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
        if record.exc_info:  # a record that no SafeFilter saw
            out["exc"] = safe_traceback(record)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str)


def json_line(
    level: str, message: str, exc_info: BaseException | None = None, **fields: object
) -> str:
    """One line as `JsonFormatter` writes a record of the `declora` logger at `level`
    (time, level, logger, node, round, message, then `fields`, and `exc_info`'s
    traceback as its `exc` field, `safe_traceback`), its text escaped and bounded
    (`safe_text`): what a command says outside the handler, e.g. a refused start under
    --log-format json."""
    record = logging.makeLogRecord(
        {
            "name": "declora",
            "levelname": level,
            "levelno": logging.getLevelName(level),
            "msg": safe_text(message),
            "node": _context["node"],
            "round": _context["round"],
            **{k: safe_text(v) if isinstance(v, str) else v for k, v in fields.items()},
        }
    )
    if exc_info is not None:
        record.exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    return JsonFormatter().format(record)


REPEAT_WINDOW = 30.0  # seconds
MAX_TRACKED = 1000  # distinct messages remembered (each at most MAX_MESSAGE characters)
PER_TEMPLATE = 60  # distinct messages of one template written per window


class RepeatFilter(logging.Filter):
    """Writes a WARNING-or-worse message once per `window` seconds; the repeats between
    are counted and reported on the next one written ("(repeated N times in the last M
    s)"), or by `flush`. Distinct messages of one template (logger, level, format
    string) are written at most `per_template` times a window; the rest are held back,
    counted, and reported on the next one of that template written after the window
    ("(N like it held back in the last M s)"), or by `flush`. Lower levels pass
    untouched. Memory: at most `MAX_TRACKED` messages and templates, each bounded
    when a `SafeFilter` runs first."""

    def __init__(
        self,
        window: float = REPEAT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        per_template: int = PER_TEMPLATE,
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self.per_template = per_template
        # message -> (time last written, repeats since, the latest repeat)
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int, logging.LogRecord]]
        self._seen = OrderedDict()
        # template -> its window (written, held back)
        self._templates: OrderedDict[tuple[str, int, str], _Template] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window:
            self._seen[key] = (seen[0], seen[1] + 1, record)
            return False
        if not self._template_allows(record, now):
            return False
        if seen is not None and seen[1]:
            _mark_repeated(record, seen[1], now - seen[0])
        self._seen[key] = (now, 0, record)
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_TRACKED:
            self._seen.popitem(last=False)
        return True

    def _template_allows(self, record: logging.LogRecord, now: float) -> bool:
        template = getattr(record, "template", None)
        if template is None:
            template = str(record.msg)[:MAX_TEMPLATE]
        key = (record.name, record.levelno, template)
        state = self._templates.get(key)
        if state is None or now - state.start >= self.window:
            if state is not None and state.held:
                _mark_held(record, state.held, now - state.start)
            self._templates[key] = _Template(now)
            self._templates.move_to_end(key)
            while len(self._templates) > MAX_TRACKED:
                self._templates.popitem(last=False)
            return True
        if state.written < self.per_template:
            state.written += 1
            return True
        state.held += 1
        state.last = record
        return False

    def pending(self) -> list[logging.LogRecord]:
        """The latest repeat of every message with uncounted repeats, and the latest
        held-back message of every template with some, marked; forgets them."""
        now = self.clock()
        out = []
        for key, (shown, count, record) in list(self._seen.items()):
            if count:
                _mark_repeated(record, count, now - shown)
                out.append(record)
                self._seen[key] = (now, 0, record)
        for key, state in list(self._templates.items()):
            if state.held and state.last is not None:
                _mark_held(state.last, state.held, now - state.start, last=True)
                out.append(state.last)
                self._templates[key] = _Template(now, written=0)
        return out


@dataclass
class _Template:
    """One template's window: when it began, messages written, held back, the latest."""

    start: float
    written: int = 1
    held: int = 0
    last: logging.LogRecord | None = None


def _mark_repeated(record: logging.LogRecord, count: int, seconds: float) -> None:
    record.msg = f"{record.getMessage()} (repeated {count} times in the last {seconds:.0f} s)"
    record.args = None
    record.repeated = count


def _mark_held(record: logging.LogRecord, count: int, seconds: float, last: bool = False) -> None:
    this = "; this is the last" if last else ""
    record.msg = (
        f"{record.getMessage()} ({count} like it held back in the last {seconds:.0f} s{this})"
    )
    record.args = None
    record.held_back = count


def flush_repeats() -> None:
    """Write the repeats the handlers `configure` installed (the `declora` logger's,
    the other libraries') have counted but not shown."""
    root = [h for h in logging.getLogger().handlers if isinstance(h, _LibraryHandler)]
    for handler in [*logging.getLogger("declora").handlers, *root]:
        for f in handler.filters:
            if isinstance(f, RepeatFilter):
                for record in f.pending():
                    handler.handle(record)


REFUSALS_LOGGED = 20  # refusals of one kind logged in full per window; the rest counted
REFUSAL_WINDOW = 60.0  # seconds


class RefusalLog:
    """Warnings about refusals (each one differs: ids, reasons), at most `limit` per
    `window` seconds in full; the rest are counted and written as one summary line
    when the window has passed (at the next refusal or `flush`), or at `flush(True)`
    (the node stopping). `logger`: where they go (the caller's module)."""

    def __init__(
        self,
        what: str,
        limit: int = REFUSALS_LOGGED,
        window: float = REFUSAL_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.what = what
        self.limit, self.window, self.clock = limit, window, clock
        self.log = logger or logging.getLogger(__name__)
        self.start = clock()
        self.logged = 0
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        self.flush()
        if self.logged < self.limit:
            self.logged += 1
            self.log.warning(msg, *args)
        else:
            self.suppressed += 1

    def flush(self, final: bool = False) -> None:
        """Start a new window once the current one has passed (or now, `final`),
        summing up the last."""
        now = self.clock()
        if not final and now - self.start < self.window:
            return
        if self.suppressed:
            self.log.warning(
                "%d more %s not logged in the last %.0f s (over %d a window; "
                "`declora-node status` counts them all)",
                self.suppressed,
                self.what,
                now - self.start,
                self.limit,
            )
        self.start, self.logged, self.suppressed = now, 0, 0


class _LibraryHandler(logging.StreamHandler):
    """The root logger's handler `configure` installs (and replaces on the next call)."""


def _handler(fmt: str, cls: type[logging.StreamHandler] = logging.StreamHandler) -> logging.Handler:
    """A stderr handler writing `fmt`: node and round on each record, escaped, bounded,
    repeats counted."""
    handler = cls(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.addFilter(SafeFilter())
    handler.addFilter(RepeatFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(node)s r%(round)s] %(message)s")
        )
    return handler


def configure(node_id: str, fmt: str = "text", level: str = "INFO") -> logging.Logger:
    """The `declora` logger writes to stderr in `fmt` from `level` on; so do other
    libraries' loggers and Python warnings (`warnings.warn`) from WARNING on, so under
    "json" every line on stderr is one JSON object (asyncio's or a library's warning
    went out as plain text through logging's last resort)."""
    _context["node"] = node_id
    logger = logging.getLogger("declora")
    logger.handlers.clear()
    logger.addHandler(_handler(fmt))
    logger.setLevel(level)
    logger.propagate = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _LibraryHandler)]:
        root.removeHandler(old)
    libraries = _handler(fmt, _LibraryHandler)
    libraries.setLevel(max(logging.WARNING, logging.getLevelName(level)))
    root.addHandler(libraries)
    logging.captureWarnings(True)
    route_libraries()
    return logger


# libraries whose loggers write through a stderr handler of their own and do not
# propagate: their warnings went around `configure`'s handler (plain text under json)
OWN_HANDLERS = ("transformers.utils.logging", "datasets.utils.logging")


def route_libraries() -> None:
    """The libraries of `OWN_HANDLERS` imported by now log through the handler
    `configure` installs, not their own (a library imported later keeps its own: call
    this again once it is)."""
    for name in OWN_HANDLERS:
        if name in sys.modules:  # its root logger has its stderr handler by now
            root = logging.getLogger(name.split(".")[0])
            for handler in [h for h in root.handlers if type(h) is logging.StreamHandler]:
                root.removeHandler(handler)  # (datasets 5 has no disable_default_handler)
            root.propagate = True


def set_round(r: int) -> None:
    _context["round"] = r
