"""node/address.py: the one parser of node addresses, and the options that use it."""

from __future__ import annotations

import ipaddress

import pytest

from declora.cli.client import target_problem
from declora.node.address import ip_of, join_address, split_address
from declora.node.settings import load_settings


@pytest.mark.parametrize(
    ("address", "parts"),
    [
        ("127.0.0.1:7070", ("127.0.0.1", 7070)),
        ("node-a.lan:1", ("node-a.lan", 1)),
        ("[::1]:65535", ("::1", 65535)),
        (" host:80 ", ("host", 80)),
    ],
)
def test_split_and_join_round_trip(address: str, parts: tuple[str, int]) -> None:
    assert split_address(address) == parts
    assert split_address(join_address(*parts)) == parts


@pytest.mark.parametrize(
    "bad",
    ["host", "host:0", "host:65536", ":80", "[::zz]:80", "unix:/tmp/s", "dns:///a:1", "a b:1"],
)
def test_the_options_refuse_what_the_parser_refuses(bad: str) -> None:
    """--peers, --listen and status --target agree on what an address is."""
    with pytest.raises(ValueError, match=r"not host:port|not an IPv6 address"):
        split_address(bad)
    with pytest.raises(ValueError, match="peers"):
        load_settings({"peers": bad})
    with pytest.raises(ValueError, match="listen"):
        load_settings({"listen": bad})
    assert target_problem(bad) is not None


def test_ip_of() -> None:
    assert ip_of("10.0.0.5") == ipaddress.IPv4Address("10.0.0.5")
    assert ip_of("::ffff:10.0.0.5") == ipaddress.IPv4Address("10.0.0.5")
    assert ip_of("node-a") is None
