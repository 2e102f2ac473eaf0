"""Two probes of a neighbour at the edge, on in-process daemons run as `start` runs
one (`Daemon.run`), pushing over real gRPC on 127.0.0.1:
- one whose push handler holds each push of its neighbour until exactly that round's
  deadline (`RoundPayload.deadline`, the sender's clock: both share one loop);
- one that leaves (a signed leave notice) and shakes hands again after every round.
Either way both nodes finish their rounds, exit 0, with no traceback. Guards (they pass
on the code before them too) taking ~30 s together: slow, beside test_peer_stall's and
test_rejoin_probation's checks of the same paths in `make test`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import HOST, InProcess, InProcessNode, free_ports, node_settings, train_args

from declora.node.daemon.exchange import Exchange
from declora.node.daemon.inbox import Inbox
from declora.node.daemon.sending import RoundPayload, Sender
from declora.proto import pb

pytestmark = pytest.mark.slow

ROUNDS = 4


def run_pair(data: Path, tmp_path: Path, swarm_id: str) -> tuple[list[int], str]:
    """Nodes a and b (each the other's static peer) run `ROUNDS` rounds; their exit
    codes and the swarm's log."""
    ports = free_ports(2)
    swarm = InProcess()
    nodes: list[InProcessNode] = []
    try:
        for i, name in enumerate(("a", "b")):
            flags = [*train_args(data), "--rounds", str(ROUNDS), "--eval-every", "0"]
            nodes.append(
                swarm.start(
                    node_settings(
                        [*flags, "--round-deadline", "3"],
                        node_id=name,
                        swarm_id=swarm_id,
                        listen=f"{HOST}:{ports[i]}",
                        peers=[f"{HOST}:{ports[1 - i]}"],
                        checkpoint_dir=tmp_path / name,
                    )
                )
            )
        codes = [swarm.wait_exit(node, 300) for node in nodes]
    finally:
        swarm.close()
    return codes, nodes[0].log()


@pytest.mark.timeout(400)
def test_a_neighbour_holding_each_push_until_the_deadline(
    synthetic_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deadlines: dict[str, float] = {}
    holds: list[float] = []  # how long each push of a to b was held (s)
    send_round = Sender.send_round
    receive = Inbox.receive

    async def recording(self: Sender, live: Any, out: RoundPayload) -> Any:
        deadlines[self.me.node_id] = out.deadline
        return await send_round(self, live, out)

    async def held(
        self: Inbox, stream: AsyncIterator[pb.Chunk], *args: Any, **kwargs: Any
    ) -> pb.PushAck:
        if self.me.node_id == "b" and "a" in deadlines:
            holds.append(max(0.0, deadlines["a"] - asyncio.get_running_loop().time()))
            await asyncio.sleep(holds[-1])
        return await receive(self, stream, *args, **kwargs)

    monkeypatch.setattr(Sender, "send_round", recording)
    monkeypatch.setattr(Inbox, "receive", held)
    codes, log = run_pair(synthetic_jsonl, tmp_path, "held")
    assert len(holds) >= ROUNDS - 1 and max(holds) > 0, holds
    assert codes == [0, 0], log[-4000:]
    assert f"round {ROUNDS} done" in log and "Traceback" not in log, log[-4000:]


@pytest.mark.timeout(400)
def test_a_neighbour_that_leaves_and_rejoins_every_round(
    synthetic_jsonl: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mix: Callable[[Exchange, int, int], None] = Exchange.mix
    rejoins: list[asyncio.Task[None]] = []

    async def leave_and_rejoin(ex: Exchange) -> None:
        peer = ex.peers.get("a")
        if peer is None or not peer.live:
            return
        h = ex.sender.handshaker
        notice = pb.LeaveNotice(
            node_id="b",
            swarm_id=ex.settings.swarm_id,
            round=ex.progress.round,
            session=peer.token_out,
            receiver_id="a",
        )
        await ex.peers.stub(peer).Leave(ex.sender.auth.sign(notice), timeout=2)
        ex.peers.drop(peer, "left (probe)")
        await h.dial(peer.address)

    def mixing(self: Exchange, r: int, own_degree: int) -> None:
        mix(self, r, own_degree)
        if self.settings.node_id == "b" and r < ROUNDS:
            rejoins.append(asyncio.get_running_loop().create_task(leave_and_rejoin(self)))

    monkeypatch.setattr(Exchange, "mix", mixing)
    codes, log = run_pair(synthetic_jsonl, tmp_path, "rejoins")
    assert rejoins and all(t.done() and t.exception() is None for t in rejoins), log[-4000:]
    assert codes == [0, 0], log[-4000:]
    assert f"round {ROUNDS} done" in log and "Traceback" not in log, log[-4000:]
