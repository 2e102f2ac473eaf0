"""A member with 2 live ids at one IP (127.0.0.2) holds 8 Pulls it never reads (a raw
HTTP/2 connection whose window is 0, `revsec2_h2.Stalled`) against a real daemon; an
honest member on 127.0.0.1 pulls meanwhile (secleft2). Before, the 8 held the whole
Pull pool (`service.POOLS`) and the honest Pull was refused RESOURCE_EXHAUSTED "8 Pull
calls already in flight"; now the pool keeps a place for the other live neighbours'
IP. Printed with -s."""

from __future__ import annotations

import pytest
from revsec2_h2 import Stalled
from test_attacks import ATTACKER_HOST, Pair, open_pair  # noqa: F401 (a fixture)

from declora.proto import pb

PULL = "/declora.v1.Swarm/Pull"
HELD = 8  # the Pull pool's size


@pytest.mark.integration
@pytest.mark.slow
def test_two_ids_at_one_ip_leave_the_honest_catch_up_a_place(open_pair: Pair) -> None:  # noqa: F811
    pair = open_pair
    a = pair.a
    member = pair.attacker(a)  # through the relay: from 127.0.0.2
    sessions = {i: member.join(i, pair.member) for i in ("m1", "m2")}
    stalled = Stalled(a.address, ATTACKER_HOST)
    try:
        for k in range(HELD):
            node_id = ("m1", "m2")[k % 2]
            request = pb.PullRequest(
                node_id=node_id,
                swarm_id=pair.cluster.swarm_id,
                kind=pb.PAYLOAD_KIND_STATE,
                session=sessions[node_id],
                receiver_id=a.node_id,
            )
            stalled.call(PULL, request.SerializeToString())
        # one more from 127.0.0.2: refused once the 8 are counted (its streams' share)
        extra = pair.cluster.wait_until(
            "the member's 8 Pulls counted",
            lambda: (o := member.pull("m1", sessions["m1"])).code.name != "OK" and o,
            30,
        )
        honest = pair.attacker(a, via="")  # from 127.0.0.1, as n1
        got = honest.pull("h1", honest.join("h1", pair.member))
        print(f"\nmember's 9th Pull: {extra}; an honest member's Pull from 127.0.0.1: {got}")
        assert got.code.name == "OK", got  # before: RESOURCE_EXHAUSTED, 8 Pull calls in flight
    finally:
        stalled.close()
