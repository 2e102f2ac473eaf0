"""One IPv6 site cannot take every unread place by its many /64s (secleft).

`first_message.Unread` keys a caller's unread answers on its network (`limits.host_key`:
an IPv6 /64, 8 places of 32): before, 4 /64s of one site (a /48, what one customer is
routed) held all 32, and every other caller's answer was refused. Now the /64s of one
/48 (`limits.site_key`) hold at most `SITE_SHARE` shares together, as the replay floors
fold into a /48 (`security.floor_network`). Loopback gives no second IPv6 /64, so the
rules are tested on `Unread` itself; test_revsec2_unread drives them over real gRPC."""

from __future__ import annotations

import pytest

from declora.node.daemon.first_message import SITE_SHARE, UNREAD, UNREAD_PER_NETWORK, Unread
from declora.node.limits import site_key


def fill(unread: Unread, host: str) -> int:
    """Answers `host` leaves unread until its calls are refused; how many."""
    taken = 0
    while unread.refusal(host, answering=True) is None:
        unread.take(host)
        taken += 1
    return taken


def test_one_site_holds_at_most_its_share_of_unread_answers() -> None:
    unread = Unread()
    site = [fill(unread, f"2001:db8:1:{n}::1") for n in range(UNREAD // UNREAD_PER_NETWORK)]
    # before: 8 + 8 + 8 + 8, every place
    assert site == [UNREAD_PER_NETWORK] * SITE_SHARE + [0] * (len(site) - SITE_SHARE)
    assert unread.refusal("2001:db8:1:9::1", answering=False) == (
        f"{SITE_SHARE * UNREAD_PER_NETWORK} answers to 2001:db8:1::/48 are not yet read by "
        "their callers"
    )
    # another site, an IPv4 network: their shares are whole
    assert fill(unread, "2001:db8:2::1") == UNREAD_PER_NETWORK
    assert fill(unread, "10.0.0.1") == UNREAD_PER_NETWORK
    for n in range(SITE_SHARE):  # the site's answers taken, its places are back
        for _ in range(UNREAD_PER_NETWORK):
            unread.taken(f"2001:db8:1:{n}::7")  # any address of the /64
    assert "2001:db8:1::/48" not in unread.by_network
    assert unread.refusal("2001:db8:1:9::1", answering=True) is None


def test_addresses_of_one_64_share_one_share() -> None:
    """A guard: one /64's addresses count as one network (the interceptor keyed them so)."""
    unread = Unread()
    assert fill(unread, "2001:db8::1") == UNREAD_PER_NETWORK
    assert fill(unread, "2001:db8::2") == 0


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("2001:db8:1:2::1", "2001:db8:1::/48"),
        ("2001:db8:1:ffff:1:2:3:4", "2001:db8:1::/48"),
        ("10.0.0.1", None),
        ("::1", None),
        ("fe80::1%eth0", None),
        ("::ffff:10.0.0.1", None),
        ("64:ff9b::10.0.0.1", None),
        ("node.example", None),
    ],
)
def test_site_keys(host: str, key: str | None) -> None:
    assert site_key(host) == key
