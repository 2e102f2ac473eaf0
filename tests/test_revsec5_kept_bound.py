"""Kept answer places held by departed neighbours are bounded (revsec5). A live
neighbour's IP holds `first_message.ANSWERS_PER_NEIGHBOUR` kept unary answer places
(and `STREAMS_PER_NEIGHBOUR` streamed ones) outside the node-wide totals; those of an
IP whose neighbours left stay held while their callers leave them unread. A member
cycling ids through IPs (live, 4 unread Checks, Leave, the next IP) held 4 more at
each IP, without bound, until gRPC's cap on calls in flight refused every call; now
no kept place is taken while IPs whose neighbours left hold `size` of them."""

from __future__ import annotations

import pytest

from declora.node.daemon import first_message as fm


def cycled(per: int, unread: fm.Unread, ips: int) -> fm.Unread:
    """One live neighbour at a time, at a new IP each: each takes every kept place
    it is given and leaves them unread."""
    interceptor = fm.FirstMessage(unread=unread, streams=unread)
    live = {"127.0.1.0": 1}
    interceptor.neighbours = lambda ip: live.get(ip, 0)
    for i in range(ips):
        host = f"127.0.1.{i}"
        live.clear()
        live[host] = 1
        while interceptor.kept(unread, host, per):
            unread.take(host, kept=True)
    return unread


@pytest.mark.parametrize("per", [fm.ANSWERS_PER_NEIGHBOUR, fm.STREAMS_PER_NEIGHBOUR])
def test_kept_places_of_departed_neighbours_are_bounded(per: int) -> None:
    unread = cycled(per, fm.Unread(), 50)
    assert unread.total - unread.shared == unread.size  # before: 50 x per, without bound


def test_a_live_neighbour_keeps_its_places_beside_those_of_departed_ones() -> None:
    """A guard: a member's ids that left hold kept places; a live one still gets its."""
    unread = cycled(fm.ANSWERS_PER_NEIGHBOUR, fm.Unread(), 3)
    interceptor = fm.FirstMessage(unread=unread)
    interceptor.neighbours = lambda ip: int(ip == "127.0.0.1")  # the member's ids left
    assert interceptor.kept(unread, "127.0.0.1", fm.ANSWERS_PER_NEIGHBOUR)


def test_a_live_neighbour_keeps_its_places_beside_others_held() -> None:
    unread = fm.Unread()
    interceptor = fm.FirstMessage(unread=unread)
    live = {"127.0.0.1": 3, "127.0.0.2": 1}
    interceptor.neighbours = lambda ip: live.get(ip, 0)
    taken = {ip: 0 for ip in live}
    for ip in live:
        while interceptor.kept(unread, ip, fm.ANSWERS_PER_NEIGHBOUR):
            unread.take(ip, kept=True)
            taken[ip] += 1
    assert taken == {"127.0.0.1": 12, "127.0.0.2": 4}
    unread.taken("127.0.0.1", kept=True)  # one call done: its place is free again
    assert interceptor.kept(unread, "127.0.0.1", fm.ANSWERS_PER_NEIGHBOUR)
