"""A push over a link that slowed down mid-run (found by bench/bench_network.py over
shaped links, 1 Gbit/s then 0.5 Mbit/s).

A receiver sees a push stream chunk by chunk: it cuts one silent for
`--stream-idle-seconds` (`idle_stream`). A push was sent in `--chunk-kib` chunks (1 MiB
by default): a 600 kB payload was one chunk, which at 0.5 Mbit/s shared by two pushes
takes about 19 s to arrive, so every push was cut as idle though its bytes flowed, and
its sender counted the cut as a late ack and dropped the receiver. Now each chunk
arrives within the idle window at the slowest pace a receiver accepts (`PUSH_PACE`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from test_daemon_parts import pair

from declora.node.daemon.inbox import PUSH_PACE
from declora.node.daemon.sending import MIN_CHUNK, RoundPayload, push_chunk_bytes
from declora.proto import pb


class Recorder:
    """A stub whose Push reads the whole stream and accepts it."""

    def __init__(self) -> None:
        self.data: list[int] = []  # each data chunk's bytes

    async def Push(self, stream: Any, timeout: float) -> pb.PushAck:
        for chunk in stream:
            if chunk.WhichOneof("body") == "data":
                self.data.append(len(chunk.data))
        return pb.PushAck(accepted=True)


@pytest.mark.parametrize("idle", [10.0, 2.0])
def test_each_chunk_of_a_large_push_arrives_within_the_idle_window_at_the_slowest_pace(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch, idle: float
) -> None:
    _, (a, b) = pair(synthetic_jsonl, stream_idle_seconds=idle)
    recorder = Recorder()
    message = bytes(600_000)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        monkeypatch.setattr(a.peers, "stub", lambda peer: recorder)
        out = RoundPayload(1, message, 1, 0, 0, time.monotonic() + 60)
        ack = await a.exchange.sender.push_one(
            a.peers.peers["b"], out, pb.PAYLOAD_KIND_DELTA, message, None
        )
        assert ack.accepted

    asyncio.run(go())
    assert a.settings.chunk_kib * 1024 > len(message)  # --chunk-kib alone: one chunk
    assert sum(recorder.data) == len(message)
    assert max(recorder.data) / PUSH_PACE.bytes_per_second < idle


def test_chunk_kib_still_sets_smaller_chunks_and_a_floor_holds(synthetic_jsonl: Path) -> None:
    """Guard: a smaller --chunk-kib is kept; a tiny idle window does not give tiny chunks."""
    _, (a, _b) = pair(synthetic_jsonl, chunk_kib=16)
    assert push_chunk_bytes(a.settings) == 16 * 1024
    _, (c, _d) = pair(synthetic_jsonl, stream_idle_seconds=0.01)
    assert push_chunk_bytes(c.settings) == MIN_CHUNK
