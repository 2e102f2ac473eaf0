"""test_final_eval.py's check on an in-process daemon (an in-memory transport, torch
loaded once): the final evaluation of an adapter its last round already evaluated logs
no second `eval` line; with no earlier evaluation the final one is logged once, in
round 2. The real `declora-node start` versions: test_final_eval.py (make test-slow)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from memory_transport import MemoryNetwork, MemoryTransport
from test_daemon_parts import settings

from declora.node import logs
from declora.node.daemon import Daemon


class _Lines(logging.Handler):
    """The `eval` lines the node logs, each with the round the log line names."""

    def __init__(self) -> None:
        super().__init__()
        self.evals: list[tuple[object, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("eval {"):
            self.evals.append((logs._context["round"], record.getMessage()))


@pytest.mark.parametrize(("every", "lines"), [(1, 2), (0, 1)])
def test_the_final_eval_line_is_logged_once_in_process(
    synthetic_jsonl: Path, every: int, lines: int
) -> None:
    s = settings("solo", synthetic_jsonl, 0, [], solo=True, rounds=2, eval_every=every)
    s = s.model_copy(update={"partition": "0/1"})
    seen = _Lines()
    logger = logging.getLogger("declora")
    logger.addHandler(seen)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert asyncio.run(Daemon(s, MemoryTransport(MemoryNetwork(), s, None)).run()) == 0
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    assert len(seen.evals) == lines, seen.evals  # was one more: the last round's line twice
    assert seen.evals[-1][0] == 2, seen.evals
