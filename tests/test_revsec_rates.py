"""Pull and Leave are rate-limited before a swarm secret's mac is checked (review of
attack 11's fix): a member's signed calls from one address no longer go into the
replay cache unbounded. Before, a Pull was limited only after the identity check (a
non-neighbour's were never limited) and a Leave not at all: attack 11's flood was
101,000 signed Leaves in 54 s from one client. Real gRPC on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from test_auth_mismatch import serve, served_parts, stop

from declora.node.security import SwarmAuth
from declora.proto import pb, pb_grpc

SECRET = "revsec-secret-0123456789abcdef"
LIMIT = 3  # pulls, and Leaves (at the handshakes' rate), a minute


def test_signed_pulls_and_leaves_from_one_address_are_limited_first(synthetic_jsonl: Path) -> None:
    extra = {
        "swarm_secret": SECRET,
        "max_pulls_per_minute": LIMIT,
        "max_handshakes_per_minute": LIMIT,
    }
    nodes = served_parts(synthetic_jsonl, [("a", extra, None)])
    [(_, a)] = nodes
    member = SwarmAuth(SECRET.encode())
    secret = a.handshaker.auth.secret
    assert secret is not None
    codes: dict[str, list[str]] = {"pull": [], "leave": []}

    async def go() -> None:
        await serve(nodes)
        try:
            async with grpc.aio.insecure_channel(a.settings.advertise) as channel:
                stub = pb_grpc.SwarmStub(channel)
                for kind, call, request in (
                    ("pull", stub.Pull, pb.PullRequest),
                    ("leave", stub.Leave, pb.LeaveNotice),
                ):
                    for _ in range(4 * LIMIT):
                        msg = member.sign(request(node_id="m", swarm_id=a.settings.swarm_id))
                        try:
                            reply = call(msg, timeout=10)
                            if kind == "pull":
                                async for _ in reply:
                                    pass
                            else:
                                await reply
                        except grpc.aio.AioRpcError as exc:
                            codes[kind].append(exc.code().name)
        finally:
            await stop(nodes)

    asyncio.run(go())
    for kind in codes:
        assert codes[kind].count("RESOURCE_EXHAUSTED") >= 3 * LIMIT - 1, (kind, codes[kind])
    assert secret.remembered <= 2 * (LIMIT + 1)  # only those within the rates were read


def test_leaves_have_a_bucket_of_their_own() -> None:
    """A join and its goodbye never spend one budget twice: an address at its Hello
    limit may still say goodbye (attack 4's 500 Hellos + 500 Leaves from one address
    were refused at 600 when Leaves counted as Hellos)."""
    from declora.node.limits import NodeLimits

    limits = NodeLimits(
        handshakes_per_minute=2, pushes_per_round=4, pulls_per_minute=2, rounds_ahead=8,
        clock=lambda: 0.0,
    )  # fmt: skip
    peer = "ipv4:10.0.0.5:7070"
    for _ in range(2):
        limits.check_handshake(peer)
    for _ in range(2):
        limits.check_leave(peer)  # the Hellos spent nothing of the Leaves'
    try:
        limits.check_leave(peer)
    except Exception as exc:
        assert "leaves a minute" in str(exc)
    else:
        raise AssertionError("a third Leave within the minute was not refused")
