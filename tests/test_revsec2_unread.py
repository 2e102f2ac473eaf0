"""Answers a caller never reads keep no other caller out (revsec2; real gRPC on
127.0.0.1, a raw HTTP/2 caller, `revsec2_h2.Stalled`). A caller that announces a
stream window of 0 bytes sends its unary calls in full and never lets the answer
come: gRPC holds each call's place in its cap until the answer was taken, for ever,
whatever the handler does. Before `first_message.Unread`, 224 Check calls on one such
connection from a stranger held every place of a node, and every other call was
refused `Concurrent RPC limit exceeded!`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
import pytest
from daemon_helpers import Cluster, free_ports, train_args
from grpc_health.v1 import health_pb2_grpc
from revsec2_h2 import Stalled

from declora.node.daemon.first_message import FirstMessage, Unread
from declora.node.daemon.health import SERVING, Health
from declora.proto import pb, pb_grpc

CAP = 8  # the test server's maximum_concurrent_rpcs
STALLED = 3 * CAP  # the stranger's calls whose answers it never reads
SHARE = 2  # the test server's answers unread from one network
STRANGER = "127.0.0.2"  # another host (`limits.host_key`: each loopback address is one)
CHECK = "/grpc.health.v1.Health/Check"
STATUS = "/declora.v1.Swarm/Status"


class Answers(pb_grpc.SwarmServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(node_id="ok")


def poll(what: str, check: Callable[[], bool], seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


async def served(interceptor: FirstMessage | None, test: Callable[[str], Awaitable[None]]) -> None:
    server = grpc.aio.server(
        maximum_concurrent_rpcs=CAP, interceptors=[interceptor] if interceptor else []
    )
    pb_grpc.add_SwarmServicer_to_server(Answers(), server)
    health = Health()
    health.set("", SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await test(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


async def status_code(address: str) -> str:
    """How an honest Status call from 127.0.0.1 ends: 'ok' or its code's name."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await pb_grpc.SwarmStub(channel).Status(pb.StatusRequest(), timeout=10)
            return "ok"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name


@pytest.mark.parametrize("guarded", [False, True])
def test_answers_never_read_keep_no_caller_out(guarded: bool) -> None:
    interceptor = FirstMessage(unread=Unread(CAP // 2, SHARE)) if guarded else None
    seen: dict[str, Any] = {}

    async def test(address: str) -> None:
        stalled = await asyncio.to_thread(Stalled, address, STRANGER)
        try:
            calls = [stalled.call(CHECK if i % 2 else STATUS) for i in range(STALLED)]
            # every call past the stranger's share ends (refused, nothing to read)
            await asyncio.to_thread(
                poll, "the calls past the cap to end", lambda: len(stalled.ended()) >= STALLED - CAP
            )
            seen["honest"] = await status_code(address)
            seen["held"] = len(calls) - len(stalled.ended())
        finally:
            await asyncio.to_thread(stalled.close)
        if interceptor is not None:  # the stranger gone, its answers are forgotten
            await asyncio.to_thread(poll, "no answer left", lambda: not interceptor.unread.total)

    asyncio.run(served(interceptor, test))
    # unguarded, as gRPC serves: the answers nobody reads hold every place (CAP), and
    # the honest call is refused; guarded: a stranger's network holds at most its share
    expected = ("ok", SHARE) if guarded else ("RESOURCE_EXHAUSTED", CAP)
    assert (seen["honest"], seen["held"]) == expected


def test_unread_rules() -> None:
    unread = Unread(size=3, per_network=2)
    unread.take("a")
    unread.take("a")
    assert (
        unread.refusal("a", answering=False) == "2 answers to a are not yet read by their callers"
    )
    assert unread.refusal("b", answering=False) is None
    unread.take("b")
    assert unread.refusal("c", answering=False) is None  # its handler may run...
    assert unread.refusal("c", answering=True) == "3 answers are not yet read by their callers"
    unread.taken("a")
    assert unread.refusal("a", answering=True) is None
    unread.taken("a")
    unread.taken("b")
    assert (unread.total, unread.by_network) == (0, {})


# ------------------------------------------------------------- a real node, real gRPC

ATTACK_CALLS = 300  # more than a node's cap on calls in flight (224)


@pytest.fixture
def node(cluster: Cluster) -> Iterator[Any]:
    args = [*train_args(cluster.data), "--swarm-id", cluster.swarm_id, "--solo"]
    n0 = cluster.add("n0", free_ports(1)[0], args).start()
    cluster.wait_until("n0 answers Status", n0.status, 120.0, running=[n0])
    yield n0


def test_a_node_serves_on_beside_a_stranger_that_reads_no_answer(node: Any) -> None:
    stalled = Stalled(node.address, STRANGER)
    try:
        for i in range(ATTACK_CALLS):
            stalled.call(CHECK if i % 2 else STATUS)
        share = ATTACK_CALLS - Unread().per_network
        poll("the calls past the stranger's share to end", lambda: len(stalled.ended()) == share)
        # before: every call refused `Concurrent RPC limit exceeded!` while it stayed
        reply = node.status()
        assert reply is not None and reply.node_id == node.node_id
    finally:
        stalled.close()


def test_calls_cancelled_while_waiting_leave_nothing_behind() -> None:
    """A guard (it passed before): a caller that gives up while its call waits for
    its message (or for its answer to be read) leaves no place taken in the room."""
    interceptor = FirstMessage(unread=Unread(CAP // 2, SHARE))

    async def test(address: str) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            waiting = [channel.stream_unary(STATUS)() for _ in range(CAP // 2)]
            await asyncio.to_thread(
                poll, "the calls to wait", lambda: len(interceptor.room.calls) == CAP // 2
            )
            for call in waiting:
                call.cancel()
            await asyncio.to_thread(poll, "an empty room", lambda: not interceptor.room.calls)
        stalled = await asyncio.to_thread(Stalled, address, STRANGER)
        stalled.call(CHECK)
        await asyncio.to_thread(poll, "an unread answer", lambda: interceptor.unread.total == 1)
        await asyncio.to_thread(stalled.close)
        await asyncio.to_thread(poll, "no unread answer", lambda: not interceptor.unread.total)
        assert await status_code(address) == "ok"

    asyncio.run(served(interceptor, test))
