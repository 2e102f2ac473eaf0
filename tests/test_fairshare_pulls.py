"""A live neighbour holding no Pull place takes one from an id holding several (the
Pull pool, `service.Pools.pull`). The pool keeps a place for each live id holding none
when a Pull starts, but an id that became live later found none: a member's 2 ids at
one IP took 7 of 8 places, the eighth stayed kept for the neighbour already live, and
a neighbour that joined then was refused RESOURCE_EXHAUSTED "7 Pull calls in flight,
1 place(s) kept for other neighbours" (`tests/test_secleft2_pull_flood.py` on a real
node, in make test-slow)."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import pytest

from declora.node.daemon.service import Pools
from declora.node.wire import WireError


def test_a_neighbour_that_joined_later_takes_a_place_from_the_busiest_id() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=16, pulls=8)
        live = ["b", "m1", "m2"]
        with ExitStack() as held:
            member = []
            for k in range(8):
                try:
                    member.append(held.enter_context(pools.pull(("m1", "m2")[k % 2], live)))
                except WireError:
                    break
            assert len(member) == 7  # one place kept for b
            live.append("h1")  # a neighbour joins
            h1 = held.enter_context(pools.pull("h1", live))  # before: refused
            assert not h1.cut and sum(h.cut for h in member) == 1
            assert member[0].cut  # the busiest id's oldest place (m1, 4 places)
            b = held.enter_context(pools.pull("b", live))  # b's kept place is still there
            assert not b.cut and pools.in_use["Pull"] == 8
            assert pools.pull_ids == {"m1": 3, "m2": 3, "h1": 1, "b": 1}
        assert pools.in_use["Pull"] == 0 and not (pools.pull_ids or pools.pull_holds)

    asyncio.run(go())


def test_an_id_holding_one_place_is_never_cut_for_another() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=16, pulls=2)
        with pools.pull("a", ["a", "b"]) as a, pools.pull("b", ["a", "b"]) as b:
            with (
                pytest.raises(WireError, match="2 Pull calls in flight"),
                pools.pull("c", ["a", "b", "c"]),
            ):
                pass
            assert not (a.cut or b.cut)

    asyncio.run(go())


def test_a_caller_holding_a_place_cuts_nobody() -> None:
    async def go() -> None:
        pools = Pools(push_streams=4, per_host=16, pulls=3)
        live = ["m", "n"]
        with ExitStack() as held:
            m = [held.enter_context(pools.pull("m", live)) for _ in range(2)]
            n = held.enter_context(pools.pull("n", live))
            with pytest.raises(WireError):  # n already holds one: no more at m's cost
                held.enter_context(pools.pull("n", live))
            assert not (any(h.cut for h in m) or n.cut)

    asyncio.run(go())
