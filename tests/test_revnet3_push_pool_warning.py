"""A Push pool raised above --max-concurrent-streams (`service.push_places`: every live
neighbour's kept places) is told once, at start, with the value that says so; before,
the option was silently raised."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_daemon_parts import pair

from declora.node.daemon.service import SwarmService


def raised(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "--max-concurrent-streams" in r.message]


def test_a_push_pool_raised_for_the_neighbours_is_told_once(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, (a, _) = pair(synthetic_jsonl, max_neighbors=40, max_concurrent_streams=64)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        service = SwarmService(a)
    assert service.pools.limits["Push"] == 80
    [line] = raised(caplog)
    assert "--max-concurrent-streams 64 is below the 80 pushes" in line
    assert "--max-concurrent-streams 80 or more" in line


def test_a_push_pool_as_configured_is_not_told(
    synthetic_jsonl: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Guard: 8 neighbours' 16 kept places fit --max-concurrent-streams 64."""
    _, (a, _) = pair(synthetic_jsonl, max_neighbors=8, max_concurrent_streams=64)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        SwarmService(a)
    assert raised(caplog) == []
