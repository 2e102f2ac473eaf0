"""node/address.py: the one parser of node addresses, and the options that use it."""

from __future__ import annotations

import ipaddress

import pytest

from declora.cli.client import target_problem
from declora.node.address import address_problem, ip_of, join_address, split_address
from declora.node.mdns_services import service_address
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
    with pytest.raises(ValueError, match=r"not host:port|not an IPv6 address|is not 1-65535"):
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


@pytest.mark.parametrize(
    "address, problem",
    [
        ("127.0.0.1:7070", ""),
        ("[::1]:7070", ""),
        ("node-1.lab.local:7070", ""),
        ("node_1:7070", ""),
        ("1.2.3.4.5:7070", "is not a host name or IP"),  # digits and dots: no name
        ("bad..name:7070", "is not a host name or IP"),
        ("-x:7070", "is not a host name or IP"),
        (" 127.0.0.1:7070", "is not host:port"),
        ("127.0.0.1:0", "port 0 is not 1-65535"),
        ("127.0.0.1", "is not host:port"),
        ("a" * 300 + ":1", "is not a host name or IP"),
    ],
)
def test_a_dial_address_is_checked_in_one_place(address: str, problem: str) -> None:
    """`address_problem`: a Hello's listen address and an mDNS record's addr alike."""
    found = address_problem(address)
    assert (problem in found) if problem else found == ""
    assert len(found) < 200


def test_an_mdns_addr_that_is_no_dial_address_falls_back_to_the_resolved_one() -> None:
    class Info:  # the two things `service_address` reads of a zeroconf ServiceInfo
        port = 7070

        def parsed_addresses(self) -> list[str]:
            return ["10.0.0.5"]

    assert service_address(Info(), "10.0.0.9:7071") == "10.0.0.9:7071"  # type: ignore[arg-type]
    for bad in ("1.2.3.4.5:7071", "0.0.0.0:7071", "no port", "x" * 300 + ":1"):
        assert service_address(Info(), bad) == "10.0.0.5:7070"  # type: ignore[arg-type]


def test_a_hung_resolver_costs_one_lookup_per_name_not_one_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each lookup holds a thread of the default executor (shared with training) past
    its caller's timeout; repeated calls for one name while the resolver hangs share
    the lookup in flight (before: one more thread each call, every 2 s per name)."""
    import asyncio
    import socket
    import threading

    from declora.node.address import endpoints

    calls: list[str] = []
    release = threading.Event()

    def hung(host: str, *args: object, **kwargs: object) -> list[object]:
        calls.append(host)
        release.wait(5)
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", hung)

    async def go() -> list[frozenset[tuple[str, int]]]:
        got = [await endpoints("node1:7070", timeout=0.05) for _ in range(4)]
        got += await asyncio.gather(*(endpoints("node1:7070", timeout=0.05) for _ in range(4)))
        got.append(await endpoints("node2:7070", timeout=0.05))
        release.set()
        await asyncio.sleep(0.1)  # the lookups end (failed)
        return got

    got = asyncio.run(go())  # a lookup that waited for the hung one would never end
    assert all(g == frozenset() for g in got)
    assert sorted(calls) == ["node1", "node2"]
