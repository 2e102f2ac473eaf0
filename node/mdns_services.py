"""The mDNS service table's policy (rules: `node/discovery.py`): the service type and
instance names, which resolved services are peers of this node (`SwarmFilter`), how
the dials of their addresses ended and how long a silent one stays out (`Dials`), and
each ignored service logged once (`OnceLog`). Bounds are module constants, read where
used (`MdnsDiscovery` reads them here too)."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable

from zeroconf import ServiceInfo, Zeroconf
from zeroconf.asyncio import AsyncServiceInfo

from declora.node.address import address_problem, dial_problem, join_address, split_address
from declora.node.identity import node_id_problem, shown
from declora.node.peer_info import PeerInfo

SERVICE_TYPE = "_declora._tcp.local."
_MAX_LABEL = 63  # bytes in one DNS label (the service instance name)
MAX_TXT_ENTRY = 255  # bytes in one TXT "key=value" string
MAX_SERVICES = 1024  # services tracked at once (the LAN's announcements bound nothing)
MAX_LOGGED = 4096  # (peer, reason) pairs remembered for logging once; then forgotten
SILENT_SECONDS = 60.0  # an address whose dial did not join leaves peers() this long...
SILENT_MOST = 3600.0  # ...doubled for each such dial in a row, at most this


def instance_name(node_id: str) -> str:
    """The mDNS service instance name for ``node_id``.

    Lower-case letters, digits and single hyphens, at most 63 bytes. mDNS compares names
    case-insensitively, so whenever the node id is not already in that form a short hash
    of the exact node id is appended, keeping distinct node ids distinct
    (``node-127.0.0.1-7070`` -> ``node-127-0-0-1-7070-<8 hex>``).
    """
    if not node_id:
        raise ValueError("node_id must not be empty")
    base = re.sub(r"[^a-z0-9]+", "-", node_id.lower()).strip("-")
    if base == node_id and len(base) <= _MAX_LABEL:
        return base
    digest = hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:8]
    base = base[: _MAX_LABEL - len(digest) - 1].rstrip("-")
    return f"{base}-{digest}" if base else f"node-{digest}"


class Dials:
    """How the dials of discovered addresses ended (`MdnsDiscovery.dialled`), for at
    most `MAX_SERVICES` addresses (the oldest forgotten); `clock`: monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.joined: dict[str, None] = {}  # addresses whose last dial joined
        self.failed: dict[str, tuple[int, float]] = {}  # address -> (dials, silent until)

    def note(self, address: str, joined: bool) -> None:
        self.joined.pop(address, None)
        dials = self.failed.pop(address, (0, 0.0))[0]
        if joined:
            self.joined[address] = None
        else:
            wait = min(SILENT_SECONDS * 2.0 ** min(dials, 32), SILENT_MOST)
            self.failed[address] = (dials + 1, self.clock() + wait)
        for table in (self.joined, self.failed):
            while len(table) > MAX_SERVICES:
                del table[next(iter(table))]

    def silent(self, address: str) -> bool:
        """Whether `address`'s last dial did not join, within its wait."""
        failed = self.failed.get(address)
        return failed is not None and self.clock() < failed[1]

    def rank(self, address: str) -> int:
        """0: its last dial did not join; 1: never dialled (or forgotten); 2: joined."""
        return 0 if address in self.failed else 2 if address in self.joined else 1


class OnceLog:
    """Logs each (peer, reason) pair once, at the level given; remembers at most
    `MAX_LOGGED` pairs, then forgets them all (a LAN's announcements bound nothing)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._logged: set[tuple[str, str]] = set()

    def __call__(self, level: int, peer: str, reason: str, message: str) -> None:
        if (peer, reason) not in self._logged:
            if len(self._logged) >= MAX_LOGGED:
                self._logged.clear()
            self._logged.add((peer, reason))
            self.log.log(level, "%s", message)


class SwarmFilter:
    """Which resolved mDNS services are peers of this node: a valid node id that is not
    this node's, a dial address (`service_address`), and the same swarm id, protocol
    version and fingerprint (`mismatches`). Each service ignored, and each other node
    announcing this node's name, is logged once (`OnceLog`); nothing else changes."""

    def __init__(
        self,
        node_id: str,
        swarm_id: str,
        fingerprint: str,
        protocol_version: int,
        advertise: str,
        once: OnceLog,
    ) -> None:
        self.node_id, self.swarm_id = node_id, swarm_id
        self.fingerprint, self.protocol_version = fingerprint, protocol_version
        self.advertise = advertise
        self._once = once

    def accept(self, name: str, info: ServiceInfo) -> PeerInfo | None:
        """The peer described by a resolved service, or None (logged once) if ignored."""
        props = info.decoded_properties
        node_id = props.get("node_id") or ""
        address = service_address(info, props.get("addr") or "")
        self._once.log.debug("mDNS: resolved %s -> %s at %s %s", name, node_id, address, props)
        problem = node_id_problem(node_id)
        if problem or address is None:
            self._once(
                logging.INFO,
                name,
                "malformed",
                f"ignoring mDNS service {shown(name)}: {problem or 'no address'} in "
                f"{shown(props, 300)}",
            )
            return None
        if node_id == self.node_id:
            self._once(
                logging.WARNING,
                node_id,
                f"self:{address}",
                f"ignoring mDNS peer {node_id} at {address}: it has this node's id",
            )
            return None
        peer = PeerInfo(
            address=address,
            node_id=node_id,
            swarm_id=props.get("swarm_id") or "",
            fingerprint=props.get("fp") or "",
            protocol_version=_int_or(props.get("proto") or "", -1),
        )
        reason = mismatches(peer, self.swarm_id, self.fingerprint, self.protocol_version)
        if reason:
            self._once(
                logging.INFO,
                node_id,
                reason,
                f"ignoring mDNS peer {node_id} at {address}: {reason}",
            )
            return None
        return peer

    def check_own_name(self, zc: Zeroconf, name: str) -> None:
        """Warn if another node announces this node's instance name (a duplicate node id)."""
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not info.load_from_cache(zc):
            return
        props = info.decoded_properties
        theirs = (props.get("node_id") or "", props.get("addr") or "")
        if theirs != (self.node_id, self.advertise):
            self._once(
                logging.WARNING,
                name,
                f"duplicate:{theirs}",
                f"another mDNS node announces this node's name {instance_name(self.node_id)!r} "
                f"(node_id {theirs[0]!r} at {theirs[1]}); node ids must be unique",
            )


def service_address(info: ServiceInfo, addr: str) -> str | None:
    """The dial address of a resolved service: its TXT ``addr`` if usable (a dial
    address as a Hello's listen address must be: `address_problem`, `dial_problem`),
    else the first resolved address and the SRV port; None without either."""
    if not (address_problem(addr) or dial_problem(addr)):
        return join_address(*split_address(addr))
    addresses = info.parsed_addresses()
    if addresses and info.port:
        return join_address(addresses[0], info.port)
    return None


def mismatches(peer: PeerInfo, swarm_id: str, fingerprint: str, protocol_version: int) -> str:
    """Why an announced peer belongs to another swarm ('' when it does not)."""
    reasons = []
    if peer.swarm_id != swarm_id:
        reasons.append(f"swarm {shown(peer.swarm_id)} != {swarm_id!r}")
    if peer.protocol_version != protocol_version:
        reasons.append(f"protocol version '{peer.protocol_version}' != '{protocol_version}'")
    if peer.fingerprint != fingerprint:
        reasons.append(f"fingerprint {shown(peer.fingerprint)} != {fingerprint!r}")
    return "; ".join(reasons)


def _int_or(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default
