"""The link emulator of bench/bench_network.py: an uplink's loss, rate, queue and delay.

Pure arithmetic on given clock values (no devices, no root, nothing timed): the
figures the network benchmark prints are only as right as this shaping."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _netemu() -> ModuleType:
    spec = importlib.util.spec_from_file_location("netemu", BENCH / "netemu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("netemu", module)
    spec.loader.exec_module(module)
    return module


netemu = _netemu()
PKT = bytes(1500)


def uplink(rate: float = 0.0, delay: float = 0.0, loss: float = 0.0) -> object:
    return netemu.Uplink(rate, delay, loss, random.Random(0))


def test_rate_serializes_packets_and_delay_is_added_after() -> None:
    link = uplink(rate=12_000 * 8, delay=0.25)  # 12 kB/s: one 1500-byte packet per 0.125 s
    for _ in range(3):
        assert link.offer(10.0, 1, PKT)
    times = [t for t, _, _ in link.queue]
    assert times == pytest.approx([10.375, 10.5, 10.625])
    assert link.counts == {"packets": 3, "bytes": 4500, "lost": 0, "queue_drops": 0}


def test_a_full_queue_drops_at_the_tail_and_drains_with_time() -> None:
    link = uplink(rate=1500 * 8)  # one packet a second: the queue holds QUEUE_SECONDS of them
    offered = [link.offer(0.0, 1, PKT) for _ in range(4)]
    assert offered[:1] == [True] and offered[1:] == [False] * 3  # 1 s of backlog > 0.5 s
    assert link.counts["queue_drops"] == 3
    assert link.offer(0.6, 1, PKT)  # 0.4 s of backlog left: room again
    assert link.queue[-1][0] == pytest.approx(2.0)


def test_loss_drops_about_its_share_and_no_cap_means_no_wait() -> None:
    link = uplink(loss=0.1)
    kept = sum(link.offer(5.0, 2, PKT) for _ in range(10_000))
    assert link.counts["lost"] == 10_000 - kept
    assert 800 < link.counts["lost"] < 1200
    assert all(t == 5.0 for t, _, _ in link.queue)  # unshaped: delivered at once


def test_addresses_are_inside_the_emulated_subnet() -> None:
    assert [netemu.address(i) for i in (0, 3)] == ["10.77.0.1", "10.77.0.4"]
