"""Peer exchange under attack, with the fake handshaker of `test_pex_bounds`: a
member cannot renew a victim's dials by flooding it out of the learnt candidates and
naming it again; the exchange ends on cancel while a Status call hangs (real gRPC)."""

from __future__ import annotations

import asyncio
import threading

import grpc
from daemon_helpers import HOST, free_ports, serve_fake_peer
from test_pex_bounds import FakeHandshaker

from declora.node.daemon import peer_exchange as px
from declora.proto import pb, pb_grpc

VICTIM = "127.0.0.3:9"


def naming(*addresses: str) -> pb.StatusReply:
    reply = pb.StatusReply(node_id="member")
    for i, a in enumerate(addresses):
        reply.neighbors.add(node_id=f"m{i}", address=a, live=True)
    return reply


def test_a_victim_flooded_out_after_a_failed_dial_is_not_learnt_again() -> None:
    h = FakeHandshaker(f"{HOST}:5")
    pex = px.PeerExchange(h)  # type: ignore[arg-type]
    assert pex.learn(naming(VICTIM)) == [VICTIM]
    asyncio.run(pex._dial(VICTIM, at=0.0))  # the fake's dials fail
    assert pex.learnt[VICTIM] == 1
    for batch in range(px.LEARNT // px.TAKE):  # pushes the victim out
        pex.learn(naming(*(f"127.0.0.2:{1000 + batch * px.TAKE + i}" for i in range(px.TAKE))))
    assert VICTIM not in pex.learnt
    assert pex.learn(naming(VICTIM)) == []  # its failed dial still counts


class Hanger(pb_grpc.SwarmServicer):
    """A member whose Status never answers until `release` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        self.entered.set()
        self.release.wait()
        return pb.StatusReply()


def test_run_ends_on_cancel_while_a_status_call_hangs() -> None:
    (port,) = free_ports(1)
    seed = f"{HOST}:{port}"
    hanger = Hanger()
    server = serve_fake_peer(hanger, seed)
    pex = px.PeerExchange(FakeHandshaker(seed))  # type: ignore[arg-type]

    async def main() -> bool:
        task = asyncio.create_task(pex.run())
        await asyncio.to_thread(hanger.entered.wait)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled() and not hanger.release.is_set()

    try:
        assert asyncio.run(main())  # ended while the call still hung
    finally:
        hanger.release.set()
        server.stop(grace=None)
