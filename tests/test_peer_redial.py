"""A known peer that is not live is re-dialled with the peer table's backoff counted
from the end of its last dial (`PeerTable.dial_ended`), as a refusing candidate's is
from the refusal (`DialBackoff`): a dial slow to fail takes nothing off the wait.
In-process over the in-memory transport."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from test_daemon_parts import hello
from test_dial_backoff import handshakes, two_nodes

from declora.node.daemon.peers import BACKOFF_FIRST
from declora.proto import pb, pb_grpc

DELAY = 0.5  # seconds the peer takes to fail the handshake


class SlowFailing(pb_grpc.SwarmServicer):
    """A node that takes DELAY seconds to fail the handshake with `code`."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        await asyncio.sleep(DELAY)
        await context.abort(self.code, "not now, slowly")
        raise AssertionError("unreachable: abort raises")


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE]
)  # a refusal, and a failure that is none
def test_a_known_peer_backs_off_from_the_end_of_a_slow_dial(
    synthetic_jsonl: Path, code: grpc.StatusCode
) -> None:
    """Before, the backoff counted from the dial's start: a peer 0.5 s slow to fail was
    due again BACKOFF_FIRST - 0.5 s after its dial ended (a DIAL_TIMEOUT-slow one at
    once)."""
    network, a, _b, address = two_nodes(synthetic_jsonl, "permission")
    network.serve(address, SlowFailing(code))
    a.handshaker.discovery = None  # no candidates: only the known peer is dialled
    peer = a.peers.admit(hello(node_id="b", listen_address=address))
    assert peer is not None
    a.peers.drop(peer, "test")
    peer.configured, peer.next_dial = True, 0.0

    async def go() -> tuple[float, float]:
        began = time.monotonic()
        await a.handshaker.connect_known()  # the clock runs
        return began, time.monotonic()

    began, ended = asyncio.run(go())
    assert handshakes(network, address) == 1 and not peer.live
    assert began + DELAY + BACKOFF_FIRST <= peer.next_dial <= ended + BACKOFF_FIRST
    # due again only a whole backoff after the dial ended, then the wait doubles
    assert a.peers.due_for_dial(ended + BACKOFF_FIRST - DELAY) == []
    assert a.peers.due_for_dial(ended + BACKOFF_FIRST) == [peer]
    a.peers.dial_ended(peer, ended + BACKOFF_FIRST + DELAY)
    assert peer.next_dial == ended + BACKOFF_FIRST + DELAY + 2 * BACKOFF_FIRST
