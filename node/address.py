"""Node addresses: `host:port` or `[IPv6]:port`, the one parser for every option and
message that names a node (--peers, --listen, --advertise, --target, Hello, mDNS).
Standard library only, so the fast CLI paths can use it."""

from __future__ import annotations

import ipaddress
import re

_ADDRESS = re.compile(
    r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$"
)


def split_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``; ValueError if malformed."""
    m = _ADDRESS.match(address.strip())
    port = int(m.group("port")) if m else 0
    if not m or not 0 < port < 65536:
        raise ValueError(f"{address!r} is not host:port")
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
