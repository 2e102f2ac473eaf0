"""Push streams that trickle (a header announcing the largest message, then a byte now
and then) hold only the bytes they sent, and only until their `Pace` runs out, so a
neighbour's push still fits (audit: four such streams from two member ids held
the whole shared buffer, and every honest push was refused)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from test_daemon_parts import hello, pair, push_stream

from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.daemon import inbox
from declora.node.daemon.daemon import Parts
from declora.node.wire import Pace, WireError, chunks, make_header, read_stream
from declora.proto import pb

ATTACKERS = ("m1", "m2")


def trickle(b: Parts, sender: str, stop: asyncio.Event, every: float = 0.05):  # type: ignore[no-untyped-def]
    """A push from member `sender` to b announcing b's largest message, then a byte
    every `every` s until `stop`."""
    peer = b.peers.get(sender)
    assert peer is not None
    header = make_header(
        sender_id=sender, swarm_id="parts", fingerprint=b.lm.fingerprint, round=1,
        sender_degree=1, kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=b"",
        schema=b.lm.schema, session=peer.token_in, receiver_id="b",
    )  # fmt: skip
    header.total_bytes = b.inbox.max_bytes

    async def stream():  # type: ignore[no-untyped-def]
        yield pb.Chunk(header=header)
        while not stop.is_set():
            yield pb.Chunk(data=b"\0")
            await asyncio.sleep(every)

    return stream()


async def start_trickles(b: Parts, stop: asyncio.Event) -> list[asyncio.Task[pb.PushAck]]:
    """Two streams from each attacker id (its most), once each has sent a byte."""
    for mid in ATTACKERS:
        member = hello(node_id=mid, swarm_id="parts", listen_address=f"127.0.0.1:{len(mid)}")
        assert b.peers.admit(member) is not None
    tasks = [
        asyncio.create_task(b.inbox.receive(trickle(b, mid, stop)))
        for mid in ATTACKERS
        for _ in range(2)
    ]
    while b.inbox.budget.used < len(tasks):
        await asyncio.sleep(0.01)
    assert sum(b.inbox.open_streams.values()) == len(tasks)
    return tasks


def test_trickling_streams_do_not_crowd_out_an_honest_push(synthetic_jsonl: Path) -> None:
    _, (a, b) = pair(synthetic_jsonl)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        stop = asyncio.Event()
        tasks = await start_trickles(b, stop)
        try:
            # the four announced b's whole buffer (4 largest messages)...
            ack = await b.inbox.receive(push_stream(a, 1))
            assert ack.accepted, ack
            assert "a" in b.inbox.arrived(1)
            # ...but hold only the bytes they sent
            assert b.inbox.budget.used < 1024 < b.inbox.max_bytes
        finally:
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert b.inbox.budget.used == 0 and b.inbox.open_streams == {}

    asyncio.run(go())


def test_a_trickle_is_cut_when_its_pace_runs_out(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes keep arriving, so the idle cut never fires; the pace's deadline does."""
    monkeypatch.setattr(inbox, "PUSH_PACE", Pace(min_seconds=0.5, bytes_per_second=1e12))
    _, (a, b) = pair(synthetic_jsonl, stream_idle_seconds=0.3)  # the pace: max(0.5, 0.3) s

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        stop = asyncio.Event()
        t0 = time.monotonic()
        tasks = await start_trickles(b, stop)
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=5
            )
        finally:
            stop.set()
        assert time.monotonic() - t0 < 3
        for exc in results:
            assert isinstance(exc, WireError), exc
            assert (exc.code, exc.counter) == (grpc.StatusCode.DEADLINE_EXCEEDED, "slow_stream")
            assert "too slow" in exc.reason
        assert b.inbox.budget.used == 0 and b.inbox.open_streams == {}
        assert (await b.inbox.receive(push_stream(a, 1))).accepted  # and a's push is taken

    asyncio.run(go())


def test_pace_allows_the_announced_size_at_the_minimum_rate() -> None:
    schema = AdapterSchema((TensorSpec("w", (4,), "float32"),))
    data = bytes(16)
    header = make_header(
        sender_id="s", swarm_id="w", fingerprint="f", round=1, sender_degree=1,
        kind=pb.PAYLOAD_KIND_DELTA, codec="fp32", seq=1, data=data, schema=schema,
    )  # fmt: skip

    async def read(every: float, pace: Pace) -> object:
        async def stream():  # type: ignore[no-untyped-def]
            for c in chunks(header, data, 4):
                yield c
                await asyncio.sleep(every)

        try:
            return await read_stream(
                stream(), swarm_id="w", fingerprint="f", schema=schema, max_bytes=64,
                idle_seconds=0.25, pace=pace,
            )  # fmt: skip
        except WireError as exc:
            return exc.counter

    # 16 bytes in 4 chunks 0.1 s apart take 0.4-0.5 s, never idle for the 0.25 s idle cut:
    # within 16 bytes at 20 bytes/s (0.8 s)...
    assert not isinstance(asyncio.run(read(0.1, Pace(0.3, 20.0))), str)
    # ...not within 0.3 s (16 bytes at 100 bytes/s: 0.16 s, less than the floor)
    assert asyncio.run(read(0.1, Pace(0.3, 100.0))) == "slow_stream"
    # a silent stream is still cut as idle first
    assert asyncio.run(read(2.0, Pace(0.5, 100.0))) == "idle_stream"
