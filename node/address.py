"""Node addresses: `host:port` or `[IPv6]:port`, the one parser for every option and
message that names a node (--peers, --listen, --advertise, --target, Hello, mDNS).
Standard library only, so the fast CLI paths can use it."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from typing import Any

_DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_ADDRESS = re.compile(
    r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>[0-9]{1,5})$"
)  # ASCII digits only: `\d` took '７０００' (fullwidth) and '١٢', int() read them
# a name made of numbers only, which the C library reads as an IPv4 address however
# written ('127.1', '0x7f000001', '0x0': 0.0.0.0), past `dial_problem`
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]+")


class PortOutOfRange(ValueError):
    """A `host:port` whose port is not 1-65535 (`port` holds it)."""

    def __init__(self, message: str, port: int) -> None:
        super().__init__(message)
        self.port = port

    @staticmethod
    def what(port: int) -> str:
        return f"port {port} is not 1-65535"


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError if malformed."""
    m = _ADDRESS.match(address.strip())
    if not m:
        raise ValueError(f"{address!r} is not host:port")
    port = int(m.group("port"))
    if not 0 < port < 65536:  # 0 too: a node's peers must know its port
        raise PortOutOfRange(f"{address!r}: {PortOutOfRange.what(port)}", port)
    host = m.group("v6") or m.group("host")
    if m.group("v6"):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{address!r}: {host!r} is not an IPv6 address") from None
    return host, port


def join_address(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"``, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ip_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP literal `host` (an IPv4-mapped IPv6 address as IPv4), None for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_problem(address: str) -> str:
    """'' when `address` is a node's dial address: `host:port` with an IPv4 or [IPv6]
    literal or a DNS name of letters, digits, '-' and '_', not of numbers alone
    (port 1-65535), nothing around it; else what is wrong, the address quoted (repr,
    at most 80 characters)."""
    quoted = repr(address) if len(repr(address)) <= 80 else repr(address)[:77] + "..."
    try:
        if address != address.strip():
            raise ValueError
        host, _port = split_address(address)
    except PortOutOfRange as exc:
        return f"{quoted}: {PortOutOfRange.what(exc.port)}"
    except ValueError:
        return f"{quoted} is not host:port"
    labels = host.removesuffix(".").split(".")
    if ip_of(host) is None and (
        len(host) > 253
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
        or all(_NUMBER.fullmatch(label) for label in labels)
    ):
        return f"{quoted}: {host[:80]!r} is not a host name or IP"
    return ""


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def dial_problem(address: str) -> str:
    """'' unless `address` (one `address_problem` passes) names an IP no peer can dial:
    unspecified (0.0.0.0, ::), multicast (224.0.0.0/4, ff00::/8) or the broadcast
    255.255.255.255 (IPv4-mapped ones too); else why, the address quoted. Link-local
    addresses (169.254.0.0/16, fe80::/10) are dialable on a LAN without DHCP, as
    zeroconf hands them out, and pass; a cloud's metadata service among them
    (169.254.169.254) is harmless to a peer's dial: it answers no gRPC call and
    gets nothing but a Hello."""
    try:
        ip = ip_of(split_address(address)[0])
    except ValueError:
        return ""
    if ip is None:  # a DNS name: what it resolves to is the dialler's business
        return ""
    if ip.is_unspecified:
        what = "an unspecified address"
    elif ip.is_multicast:
        what = "a multicast address"
    elif ip == _BROADCAST:
        what = "the broadcast address"
    else:
        return ""
    return f"{address[:80]!r} is {what}: no peer can dial it"


# host name lookups in flight, one per (host, port): a lookup runs in a thread of the
# event loop's default executor (which training and payload checks share) and goes on
# after its caller's timeout, so with a slow or dead resolver a repeated call waits on
# the lookup already running instead of taking one more thread
_LOOKUPS: dict[tuple[str, int], asyncio.Task[Any]] = {}


def _lookup(host: str, port: int) -> asyncio.Task[Any]:
    """The running loop's lookup of (`host`, `port`): the one in flight, or a new one."""
    loop = asyncio.get_running_loop()
    key = (host, port)
    task = _LOOKUPS.get(key)
    if task is None or task.get_loop() is not loop:
        task = loop.create_task(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        _LOOKUPS[key] = task

        def done(t: asyncio.Task[Any]) -> None:
            if _LOOKUPS.get(key) is t:
                del _LOOKUPS[key]
            if not t.cancelled():
                t.exception()  # retrieved: a failure is the callers' empty answer

        task.add_done_callback(done)
    return task


async def endpoints(address: str, timeout: float = 2.0) -> frozenset[tuple[str, int]]:
    """The (IP, port) pairs `address` reaches: the literal for an IP (IPv4-mapped as
    IPv4), a host name's resolved IPs otherwise; empty when it is malformed or does not
    resolve within `timeout` seconds. Calls for one name share the lookup in flight
    (one thread per name however often it is asked while the resolver hangs)."""
    try:
        host, port = split_address(address)
    except ValueError:
        return frozenset()
    ip = ip_of(host)
    if ip is not None:
        return frozenset({(str(ip), port)})
    try:
        infos = await asyncio.wait_for(asyncio.shield(_lookup(host, port)), timeout)
    except (OSError, UnicodeError, TimeoutError):
        return frozenset()
    found = (ip_of(str(info[4][0]).split("%", 1)[0]) for info in infos)
    return frozenset((str(f), port) for f in found if f is not None)
