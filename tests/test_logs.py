"""The daemon's log: repeated warnings are written once, then counted."""

from __future__ import annotations

import logging

from declora.node.logs import RepeatFilter, SafeFilter, safe_text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    return logging.LogRecord("declora.x", level, __file__, 1, msg, args, None)


def test_a_repeated_warning_is_written_once_per_window_then_counted() -> None:
    clock = Clock()
    f = RepeatFilter(window=30.0, clock=clock)
    assert f.filter(record("refused handshake from %s: %s", logging.WARNING, "x", "swarm"))
    shown = []
    for i in range(1, 50):
        clock.now = i * 0.5  # 49 more within 25 s
        shown.append(
            f.filter(record("refused handshake from %s: %s", logging.WARNING, "x", "swarm"))
        )
    assert not any(shown)
    assert f.filter(record("another warning"))  # a different message is not held back
    clock.now = 31.0
    later = record("refused handshake from %s: %s", logging.WARNING, "x", "swarm")
    assert f.filter(later)
    assert later.getMessage() == (
        "refused handshake from x: swarm (repeated 49 times in the last 31 s)"
    )
    assert later.repeated == 49  # type: ignore[attr-defined]


def test_info_passes_and_pending_repeats_are_flushed() -> None:
    clock = Clock()
    f = RepeatFilter(window=30.0, clock=clock)
    assert all(f.filter(record("round done", logging.INFO)) for _ in range(5))
    for _ in range(4):
        f.filter(record("peer down", logging.ERROR))
    clock.now = 12.0
    [pending] = f.pending()
    assert pending.getMessage() == "peer down (repeated 3 times in the last 12 s)"
    assert pending.levelno == logging.ERROR
    assert f.pending() == []


def test_safe_text_escapes_what_could_forge_a_line_and_cuts_with_a_count() -> None:
    assert safe_text("a\nb\r\x1b[2J\u2028\u202e\x85c") == "a\\nb\\r\\x1b[2J\\u2028\\u202e\\x85c"
    assert safe_text("already \\n escaped, caf\u00e9") == "already \\n escaped, caf\u00e9"
    assert safe_text("x" * 50, limit=10) == "x" * 10 + "... [40 more characters cut]"
    assert len(safe_text("\x1b" * 50, limit=10)) == len("... [40 more characters cut]") + 10


def test_a_format_that_does_not_fit_its_args_is_written_not_raised() -> None:
    r = record("peer %s sent %d", logging.WARNING, "b")  # one arg short
    assert SafeFilter().filter(r)
    assert r.getMessage() == "'peer %s sent %d' % ('b',)"
    assert r.template == "peer %s sent %d"  # type: ignore[attr-defined]


def test_distinct_messages_of_one_template_are_held_back_then_counted() -> None:
    clock = Clock()
    f = RepeatFilter(window=30.0, clock=clock, per_template=3)
    written = [f.filter(record("refused %s", logging.WARNING, str(i))) for i in range(10)]
    assert written == [True] * 3 + [False] * 7
    assert f.filter(record("another template"))
    clock.now = 31.0
    later = record("refused %s", logging.WARNING, "late")
    assert f.filter(later)
    assert later.getMessage() == "refused late (7 like it held back in the last 31 s)"
