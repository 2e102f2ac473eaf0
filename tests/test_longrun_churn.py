"""A node that trains until stopped (`--rounds 0`) among neighbours that come and go
under fresh ids keeps what it holds bounded (audit "longrun"): tables by peer id, the
inbox, the core's public copies, checkpoints on disk. A guard: every bound here held
before the audit too but the inbox's, which `test_longrun_bounds` pins."""

from __future__ import annotations

import asyncio
from pathlib import Path

from memory_transport import MemoryContext
from test_daemon_parts import pair
from test_longrun_bounds import keyframe_stream

from declora.node import checkpoint
from declora.node.daemon.persistence import Persistence
from declora.node.daemon.service import SwarmService
from declora.proto import pb

ROUNDS = 60
AHEAD = 4  # rounds each id pushes for, from the one in progress


def test_rounds_among_ids_that_come_and_go_hold_bounded_state(synthetic_jsonl: Path) -> None:
    """Each round a new id (its own address) shakes hands, pushes keyframes for the
    rounds ahead and leaves; b mixes, records and checkpoints every round."""
    _, (_, b) = pair(synthetic_jsonl, rounds=0, round_deadline=1.0)
    b.peers.max_known = 8
    service = SwarmService(b)
    store = Persistence(b.settings.checkpoint_dir)
    store.attach(b)
    mine = b.handshaker.hello()

    async def go() -> None:
        for r in range(1, ROUNDS + 1):
            pid, ip = f"j{r}", f"10.0.{r // 250}.{r % 250 + 1}"
            joining = pb.Hello()
            joining.CopyFrom(mine)
            joining.node_id, joining.listen_address, joining.receiver = pid, f"{ip}:7071", "b"
            joining.round, joining.seq = r - 1, 5
            caller = MemoryContext(f"ipv4:{ip}:5000")
            welcome = await service.Handshake(joining, caller)  # type: ignore[arg-type]
            assert welcome.accepted, welcome.reason
            for ahead in range(r, r + AHEAD):
                ack = await b.inbox.receive(keyframe_stream(b, pid, welcome.node.session, ahead))
                assert ack.accepted, ack
            notice = pb.LeaveNotice(
                node_id=pid, swarm_id="parts", round=r - 1, session=welcome.node.session,
                receiver_id="b",
            )  # fmt: skip
            await service.Leave(notice, caller)  # type: ignore[arg-type]
            await b.exchange.exchange(r)
            b.progress.round = r
            store.record("train", False)
            assert store.save_checkpoint()

    asyncio.run(go())
    queued = sum(len(q) for q in b.inbox.queued.values())
    ckpts = sorted(p.name for p in b.settings.checkpoint_dir.glob("ckpt-*"))
    print(
        f"after {ROUNDS} rounds with a new id each: {len(b.peers.peers)} table entries, "
        f"{queued} payloads queued, {len(b.limits.pushes.counts)} push counts, "
        f"{len(b.node.gossip.peers)} public copies, checkpoints {ckpts}"
    )
    assert len(b.peers.peers) <= b.peers.max_known
    assert queued <= AHEAD * b.peers.max_known  # the rounds ahead of known ids only
    assert set().union(*b.inbox.queued.values()) <= set(b.peers.peers)
    assert len(b.limits.pushes.counts) <= AHEAD * AHEAD  # ids of the last rounds, ahead
    assert len(b.node.gossip.peers) <= b.settings.max_neighbors
    assert ckpts == [f"ckpt-{ROUNDS - 1:08d}", f"ckpt-{ROUNDS:08d}"]  # checkpoint.KEEP
    assert checkpoint.KEEP == 2
