"""Status under a flood: a per-address rate limit, and a state digest hashed off the
event loop once per state (`parts.StateDigests`), never from a state mid-step."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from test_daemon_parts import pair, push_stream

from declora.node.daemon import digests
from declora.node.daemon.parts import Parts
from declora.node.daemon.service import SwarmService
from declora.node.daemon.status import state_digest
from declora.node.limits import STATUS_PER_MINUTE, AddressBuckets
from declora.proto import pb


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class Context:
    """What `SwarmService.Status` uses of a servicer context, for a caller at `peer`."""

    def __init__(self, peer: str) -> None:
        self.caller = peer

    def peer(self) -> str:
        return self.caller

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Refused(code, details)


async def status(service: SwarmService, peer: str = "ipv4:127.0.0.1:5000") -> pb.StatusReply:
    return await service.Status(pb.StatusRequest(include_digest=True), Context(peer))  # type: ignore[arg-type]


class Hashes:
    """Counts `state_digest` (what reads the state for a digest) and where the hash ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.threads: list[str] = []
        read, hashed = state_digest, digests._hash

        def counted_read(*args: Any) -> str:
            self.reads += 1
            return read(*args)

        def counted_hash(*args: Any) -> Any:
            self.threads.append(threading.current_thread().name)
            return hashed(*args)

        monkeypatch.setattr(digests, "state_digest", counted_read)
        monkeypatch.setattr(digests, "_hash", counted_hash)

    def off_the_loop(self) -> bool:
        main = threading.main_thread().name
        return bool(self.threads) and all(name != main for name in self.threads)


def truth(p: Parts) -> str:
    """The digest of `p`'s state now, computed directly."""
    return state_digest(p.node, p.inbox.queued)


def test_a_status_flood_from_one_address_is_refused_while_another_is_served(
    synthetic_jsonl: Path,
) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)
    limit = STATUS_PER_MINUTE
    b.limits.statuses = AddressBuckets(limit, clock=lambda: 0.0)  # no refill during the burst
    assert limit >= 600  # the CLI, `lab` (1/s a node) and the tests (5/s) stay far below

    async def go() -> None:
        for i in range(limit):  # any port of one address: one bucket
            reply = await service.Status(pb.StatusRequest(), Context(f"ipv4:10.0.0.5:{i}"))  # type: ignore[arg-type]
            assert reply.node_id == "b"
        with pytest.raises(Refused) as info:
            await service.Status(pb.StatusRequest(), Context("ipv4:10.0.0.5:1"))  # type: ignore[arg-type]
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"more than {limit} Status requests a minute from 10.0.0.5" in info.value.details
        other = await service.Status(pb.StatusRequest(), Context("ipv4:10.0.0.6:1"))  # type: ignore[arg-type]
        assert other.node_id == "b" and other.rejected["rate_limited"] == 1

    asyncio.run(go())
    assert b.counters.rejected == {"rate_limited": 1}
    assert service.pools.in_use.get("Status", 0) == 0
    b.limits.statuses.clock = lambda: 60.0  # a minute on: the flooder is served again
    assert asyncio.run(status(service, "ipv4:10.0.0.5:1")).node_id == "b"


def test_repeated_digests_of_an_unchanged_state_hash_once(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (_a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)
    hashes = Hashes(monkeypatch)

    async def go() -> list[str]:
        flood = await asyncio.gather(*(status(service) for _ in range(8)))  # at once
        later = [await status(service) for _ in range(4)]  # one after the other
        return [r.state_digest for r in [*flood, *later]]

    digests = asyncio.run(go())
    assert set(digests) == {truth(b)}
    assert hashes.reads == 1 and len(hashes.threads) == 1 and hashes.off_the_loop()


def test_the_digest_follows_every_change_of_the_state(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A neighbour's copy added, a payload queued, local steps: each gives a new digest,
    equal to the state's, hashed once however often it is asked."""
    _, (a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)
    hashes = Hashes(monkeypatch)

    async def twice() -> str:
        first, second = (await status(service)).state_digest, (await status(service)).state_digest
        assert first == second == truth(b)
        return first

    async def go() -> list[str]:
        seen = [await twice()]
        assert await a.handshaker.dial(b.settings.advertise) is not None  # b keeps a's copy
        seen.append(await twice())
        await b.inbox.receive(push_stream(a, 1))  # a's round-1 delta, queued
        assert b.inbox.queued
        seen.append(await twice())
        b.node.train(1)  # a local step (outside a round: nothing else moves)
        seen.append(await twice())
        return seen

    seen = asyncio.run(go())
    assert len(set(seen)) == 4, seen
    assert hashes.reads == 4 and len(hashes.threads) == 4 and hashes.off_the_loop()


def test_a_digest_during_local_steps_is_the_one_before_them(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While steps run (`StateTransfer.stepping`) the adapter is not read: the digest
    is the state's before the steps (as a Pull serves it), or, when none was taken
    before them, the request waits for the steps to end."""
    _, (a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)
    hashes = Hashes(monkeypatch)
    monkeypatch.setattr(digests, "STEP_POLL", 0.01)

    def half_a_step() -> None:  # what a training thread does to the adapter, mid-step
        with torch.no_grad():
            b.node.trainer.tensors[0].add_(1.0)
        b.node.trainer.step += 1

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        before = (await status(service)).state_digest
        async with b.transfer.stepping():
            half_a_step()
            during = await asyncio.gather(status(service), status(service))
            assert [r.state_digest for r in during] == [before, before]
            assert hashes.reads == 1  # the state mid-step was not read
        after = (await status(service)).state_digest
        assert after == truth(b) != before

        half_a_step()  # steps outside `stepping`: the digest taken is not of the state...
        async with b.transfer.stepping():  # ...before these steps
            half_a_step()
            waiting = asyncio.create_task(status(service))
            await asyncio.sleep(0.2)
            assert not waiting.done() and hashes.reads == 2
            half_a_step()
        assert (await waiting).state_digest == truth(b) != after
        assert hashes.reads == 3

        b.progress.seq += 1  # an exchange (its mix left the adapter as it was)
        with_seq = (await status(service)).state_digest
        kept = b.node.trainer.tensors[0].detach().clone()
        async with b.transfer.stepping():  # the state before: taken at this round and seq
            half_a_step()
            await b.inbox.receive(push_stream(a, 1))  # a payload queued meanwhile
            queued = (await status(service)).state_digest
        assert queued != with_seq and hashes.reads == 5  # the node's part was not read
        b.node.trainer.tensors[0].data.copy_(kept)  # back to the state before the steps...
        b.node.trainer.step -= 1
        assert queued == truth(b)  # ...with the payload queued

    asyncio.run(go())
    assert hashes.off_the_loop()


def test_a_digest_request_waits_for_local_steps_only_so_long(
    synthetic_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no digest of the state before them, a request waits for the steps at most
    `STEP_WAIT`, then is answered UNAVAILABLE (counted `busy`) and frees its Status
    slot: 16 such requests parked for an LLM's minutes of steps held every slot."""
    _, (a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)
    monkeypatch.setattr(digests, "STEP_POLL", 0.01)
    monkeypatch.setattr(digests, "STEP_WAIT", 0.1)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None
        async with b.transfer.stepping():
            with pytest.raises(Refused) as info:
                await status(service)
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert "no state digest until they end" in info.value.details
            plain = await service.Status(pb.StatusRequest(), Context("ipv4:127.0.0.1:1"))  # type: ignore[arg-type]
            assert plain.node_id == "b"  # without the digest: answered at once
        assert (await status(service)).state_digest == truth(b)

    asyncio.run(go())
    assert b.counters.rejected == {"busy": 1}
    assert service.pools.in_use.get("Status", 0) == 0


def test_the_kept_digest_holds_no_array_of_the_state(synthetic_jsonl: Path) -> None:
    """The digest kept for the next request names the objects of the state it hashed
    (a neighbour's copy, a queued payload) without keeping them alive: once the node
    lets them go they are freed. Before, the kept digest held them (to keep their ids
    from being reused) until the next digest replaced it."""
    _, (a, b) = pair(synthetic_jsonl)
    service = SwarmService(b)

    async def go() -> None:
        assert await a.handshaker.dial(b.settings.advertise) is not None  # b keeps a's copy
        await b.inbox.receive(push_stream(a, 1))  # a's round-1 delta, queued
        assert (await status(service)).state_digest == truth(b)
        copies = b.node.gossip.peers
        (pid,) = copies
        copy = weakref.ref(copies[pid])
        queued = [weakref.ref(msg) for by_id in b.inbox.queued.values() for msg in by_id.values()]
        assert queued
        copies[pid] = copies[pid].copy()  # a new copy (as a keyframe taken)
        b.inbox.queued.clear()  # the payloads used (as a mix)
        gc.collect()
        assert copy() is None and all(q() is None for q in queued)
        assert (await status(service)).state_digest == truth(b)  # a new state, a new digest

    asyncio.run(go())


def test_a_freed_object_is_never_taken_for_a_new_one() -> None:
    """`_Same`: equal for one live object, never once it is freed (a new object may
    take its address), and None (held) equals None."""
    x = np.zeros(3, np.float32)
    key = digests._Same(x)
    assert key == digests._Same(x) and key != digests._Same(x.copy())
    del x
    gc.collect()
    assert key != digests._Same(np.zeros(3, np.float32))
    assert key != digests._Same(None) and digests._Same(None) == digests._Same(None)
