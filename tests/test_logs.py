"""The daemon's log: repeated warnings are written once, then counted."""

from __future__ import annotations

import logging

from declora.node.logs import RepeatFilter


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
