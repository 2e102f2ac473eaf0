"""One IP cannot fill a node's Pull pool (secleft2). A member with 2 live ids at one IP
had 4 kept streamed-answer places there (`first_message.STREAMS_PER_NEIGHBOUR` each)
and its network's 4: 8 unread Pulls, the whole pool (`service.POOLS`), for
`service.PULL_SECONDS` each, and an honest neighbour's catch-up Pull from another IP
was refused RESOURCE_EXHAUSTED meanwhile. Now the pool keeps a place for each other
live neighbour's IP that holds none; the nodes of one lab (one IP) still pull at once
(revsec3's 7 of 7: `test_revsec3_lab_pulls`). The service's own checks run here on
two daemons' parts; their Pulls' readers never read (`Stuck`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from test_daemon_parts import hello, pair

from declora.node.daemon import service
from declora.node.daemon.daemon import Parts
from declora.proto import pb


class Stuck:
    """A Pull's caller at `ip` that never reads its state (it holds its place)."""

    def __init__(self, ip: str, aborted: list[str]) -> None:
        self.ip, self.aborted = ip, aborted

    def peer(self) -> str:
        return f"ipv4:{self.ip}:40000"

    async def write(self, message: object) -> None:
        await asyncio.Event().wait()

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.aborted.append(f"{self.ip} {code.name}")
        raise asyncio.CancelledError  # ends the handler as gRPC's abort does


def member(node: Parts, node_id: str, ip: str) -> pb.PullRequest:
    """A live neighbour `node_id` of `node` whose Hello came from `ip`; its Pull."""
    peer = node.peers.admit(
        hello(node_id=node_id, swarm_id="parts", listen_address=f"{ip}:7999"), host=ip
    )
    assert peer is not None and peer.live
    return pb.PullRequest(
        node_id=node_id,
        swarm_id="parts",
        kind=pb.PAYLOAD_KIND_STATE,
        session=peer.token_in,
        receiver_id=node.settings.node_id,
    )


def pulls(node: Parts, callers: list[tuple[str, pb.PullRequest]]) -> tuple[list[str], int]:
    """Every caller's Pull to `node` at once, none read: (each refusal's caller IP and
    code, the Pulls in flight once each was refused or held its place)."""
    svc = service.SwarmService(node)
    aborted: list[str] = []

    async def go() -> int:
        tasks = [asyncio.create_task(svc.Pull(r, Stuck(ip, aborted))) for ip, r in callers]  # type: ignore[arg-type]
        for _ in range(200):  # each Pull holds its place or was refused in a few steps
            await asyncio.sleep(0)
        held = svc.pools.in_use.get("Pull", 0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert svc.pools.in_use.get("Pull", 0) == 0 and not svc.pools.pull_ids
        return held

    held = asyncio.run(go())
    return aborted, held


def test_a_member_with_two_ids_at_one_ip_leaves_a_place_for_another_ips_pull(
    synthetic_jsonl: Path,
) -> None:
    _, (_, b) = pair(synthetic_jsonl)
    m1, m2 = member(b, "m1", "127.0.0.2"), member(b, "m2", "127.0.0.2")
    honest = member(b, "n1", "127.0.0.1")
    attack = [("127.0.0.2", m1 if i % 2 else m2) for i in range(service.POOLS["Pull"])]
    aborted, held = pulls(b, [*attack, ("127.0.0.1", honest)])
    # before: the member's 8 held the pool and the honest Pull was refused
    assert aborted == ["127.0.0.2 RESOURCE_EXHAUSTED"] and held == service.POOLS["Pull"]
    assert b.counters.rejected.get("rate_limited") == 1


def test_a_labs_neighbours_at_one_ip_take_every_place(synthetic_jsonl: Path) -> None:
    """A guard: with every live neighbour at 127.0.0.1 nothing is kept for another IP."""
    _, (_, b) = pair(synthetic_jsonl)
    lab = [("127.0.0.1", member(b, f"n{i}", "127.0.0.1")) for i in range(7)]
    aborted, held = pulls(b, lab)
    assert (aborted, held) == ([], 7)


def test_the_neighbours_of_a_lan_each_take_a_place(synthetic_jsonl: Path) -> None:
    """Neighbours at 10 IPs pulling at once take a place each (the pool has one per
    live neighbour, `--max-neighbors 16`: secleft3; a rule that kept places for IPs
    holding none whatever the caller held let 1 in)."""
    _, (_, b) = pair(synthetic_jsonl, max_neighbors=16)
    lan = [(f"10.0.0.{i}", member(b, f"n{i}", f"10.0.0.{i}")) for i in range(10)]
    aborted, held = pulls(b, lan)
    assert (len(aborted), held) == (0, 10)
