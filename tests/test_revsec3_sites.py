"""One IPv6 site's many /64s count as one network where a full room or pool cuts the
oldest waiting call of the busiest network (revsec3): `first_message.Room` (calls
waiting for their request message) and `service.Pools` (pushes waiting for their
header). Keyed by /64, a site's callers from as many /64s each counted one, as many
as an honest network's waiting call, so the oldest waiting call of all was cut, the
honest one among them; keyed by `limits.group_key` (the /48) the site is the busiest:
it loses its own call (the room) or its newcomer is refused (the pool). Loopback
gives no second IPv6 /64, so the rules are tested on `FirstMessage.request` and
`Pools.push` themselves, with the addresses the interceptor and the servicer get."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import grpc

from declora.node.daemon.first_message import FirstMessage
from declora.node.daemon.service import Pools
from declora.node.limits import address_key, group_key, host_key
from declora.node.wire import WireError

HONEST = "2001:db8:9::1"  # another site, waiting first (its round trip)
SITE = [f"2001:db8:1:{n}::1" for n in range(1, 8)]  # one /48's /64s, coming after


class Caller:
    """A call's context that never sends its request message."""

    def __init__(self) -> None:
        self.aborted: list[grpc.StatusCode] = []

    async def read(self) -> None:
        await asyncio.Event().wait()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted.append(code)
        raise asyncio.CancelledError


def test_a_sites_calls_cut_their_own_in_a_full_room() -> None:
    async def go() -> list[list[grpc.StatusCode]]:
        interceptor = FirstMessage(room=4)
        callers = [Caller() for _ in [HONEST, *SITE]]
        tasks = []
        for caller, host in zip(callers, [HONEST, *SITE], strict=True):
            tasks.append(asyncio.create_task(interceptor.request(caller, host)))  # type: ignore[arg-type]
            await asyncio.sleep(0)  # it waits in the room
        cut = len(SITE) + 1 - 4
        while sum(t.done() for t in tasks) < cut:  # the cut calls end at once
            await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return [c.aborted for c in callers]

    ends = asyncio.run(go())
    # before: the honest call cut by the site's 4th /64
    assert ends == [[]] + [[grpc.StatusCode.RESOURCE_EXHAUSTED]] * 4 + [[]] * 3


def test_a_sites_pushes_cut_no_other_network_in_a_full_pool() -> None:
    pools = Pools(push_streams=4, per_host=16)
    refused = []
    with ExitStack() as held:
        # as `SwarmService.Push` asks for a place: network, IP, no kept place
        honest = held.enter_context(pools.push(host_key(HONEST), address_key(HONEST)))
        for h in SITE:
            try:
                held.enter_context(pools.push(host_key(h), address_key(h)))
            except WireError as exc:
                refused.append(exc.reason)
        assert not honest.cut  # before: cut by the site's 4th /64
        assert refused == ["4 Push calls already in flight"] * (len(SITE) - 3)
    assert (pools.in_use["Push"], pools.push_hosts, pools.waiting) == (0, {}, {})


def test_ipv4_networks_are_counted_as_before() -> None:
    """A guard: an IPv4 caller's group is its /24 (`limits.host_key`)."""
    assert group_key("10.0.0.5") == host_key("10.0.0.5") == "10.0.0.0/24"
    assert group_key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert group_key("::1") == "::1"
