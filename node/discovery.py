"""Peer discovery: a static list (``--peers``) or mDNS / DNS-SD on a LAN.

Rules callers rely on:

* Every discovery implements :class:`Discovery`: ``await start()``, ``peers()``,
  ``await stop()``. ``peers()`` is a cheap snapshot of the current candidates, never
  includes this node, and may be called at any time (an empty list before ``start()``
  and after ``stop()``). ``stop()`` is idempotent and safe after a failed or cancelled
  ``start()``; an object is started at most once.
* :class:`StaticDiscovery` returns one :class:`PeerInfo` per configured address, in the
  configured order, without duplicates and without this node's own advertise address
  (compared after normalising host case and IP-literal spelling; no DNS lookups). Its
  entries carry only ``address``: node id, swarm, fingerprint and protocol version are
  learned at the handshake.
* :class:`MdnsDiscovery` announces this node as a ``_declora._tcp.local.`` service
  (instance name derived from the node id, TXT ``node_id``, ``swarm_id``, ``proto``,
  ``fp``, ``addr``) and browses for others. ``peers()`` holds only services with the same
  swarm id, protocol version and fingerprint, sorted by node id; each ignored peer is
  logged once per (peer, reason) at INFO, saying why. A peer that unregisters (sends
  mDNS goodbyes) leaves ``peers()`` as soon as the goodbye arrives; one that vanishes
  silently leaves when its records expire (:attr:`MdnsDiscovery.ttl`, 120 s).
  ``PeerInfo.address`` is the peer's advertised ``addr`` (its ``--advertise``).
* Anyone on the LAN may announce services, as many as it likes and posing as members
  of an open swarm (swarm id, fingerprint and protocol are in every member's TXT), so
  discovery trusts a dial's outcome more than an announcement: the caller reports each
  dial of a discovered address (``dialled``). An address whose dial did not join
  leaves ``peers()`` for :data:`SILENT_SECONDS`, doubled for each such dial in a row
  (at most :data:`SILENT_MOST`), so services where nothing answers cannot keep the
  neighbour places (:func:`select_neighbors`) from the members that do. At most
  :data:`MAX_SERVICES` services are tracked; a newcomer to a full table takes the place
  of the oldest that is no peer (another swarm, malformed, unresolved) or whose address
  did not join its last dial, else of the oldest never dialled; only when every one
  joined is it ignored (a stranger's 1,024 announcements kept every honest newcomer
  out).
* Node ids must be unique. ``start()`` raises zeroconf's ``NonUniqueNameException``
  when its probe finds the name taken; probe answers are unicast, so with several
  nodes on one host (loopback) they can miss, and then both nodes log a WARNING once
  the other's announcement arrives.
* :func:`select_neighbors` is for mDNS candidates (those with a node id); static peers
  are not subject to selection. It is deterministic, bounded by ``max_neighbors``,
  independent of the input order, and symmetric (i keeps j iff j keeps i) when every
  node sees the same node set and ``max_neighbors`` is even or at least the number of
  other nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from declora.node.address import address_problem, ip_of, join_address, split_address
from declora.node.identity import node_id_problem, shown

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "MdnsDiscovery",
    "PeerInfo",
    "StaticDiscovery",
    "instance_name",
    "select_neighbors",
]

SERVICE_TYPE = "_declora._tcp.local."

_LOG = logging.getLogger(__name__)
_MAX_LABEL = 63  # bytes in one DNS label (the service instance name)
_MAX_TXT_ENTRY = 255  # bytes in one TXT "key=value" string
MAX_SERVICES = 1024  # services tracked at once (the LAN's announcements bound nothing)
MAX_LOGGED = 4096  # (peer, reason) pairs remembered for logging once; then forgotten
SILENT_SECONDS = 60.0  # an address whose dial did not join leaves peers() this long...
SILENT_MOST = 3600.0  # ...doubled for each such dial in a row, at most this


@dataclass(frozen=True)
class PeerInfo:
    """A peer to dial."""

    address: str  # "host:port" to dial
    node_id: str = ""  # empty for static entries (learned at handshake)
    swarm_id: str = ""
    fingerprint: str = ""
    protocol_version: int = 0


class Discovery(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def peers(self) -> list[PeerInfo]:
        """Current candidates, never including this node."""
        ...

    def dialled(self, address: str, joined: bool) -> None:
        """How a dial of candidate `address` ended (`joined`: a handshake both accepted)."""
        ...


# --------------------------------------------------------------------------- addresses


def _is_loopback(host: str) -> bool:
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


def normalize_address(address: str) -> str:
    """Canonical spelling of an address: lower-case host, compressed IP literal."""
    host, port = split_address(address)
    ip = ip_of(host)
    return join_address(str(ip) if ip is not None else host.lower(), port)


# --------------------------------------------------------------------------- static


class StaticDiscovery:
    """Peers from ``--peers host:port,...``, minus this node's own advertise address.

    Order is kept, later duplicates are dropped; malformed addresses raise ValueError.
    """

    def __init__(self, addresses: Sequence[str], self_address: str) -> None:
        own = normalize_address(self_address) if self_address else ""
        seen: set[str] = set()
        peers: list[PeerInfo] = []
        for address in addresses:
            key = normalize_address(address)
            if key == own or key in seen:
                continue
            seen.add(key)
            peers.append(PeerInfo(address=address.strip()))
        self._peers = peers

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def peers(self) -> list[PeerInfo]:
        return list(self._peers)

    def dialled(self, address: str, joined: bool) -> None:
        """Nothing: configured peers are dialled whatever they answered."""


# --------------------------------------------------------------------------- selection


def _ring_key(node_id: str) -> tuple[bytes, str]:
    return hashlib.sha256(node_id.encode("utf-8")).digest(), node_id


def _peer_key(peer: PeerInfo) -> tuple[str, str, str, str, int]:
    return (peer.node_id, peer.address, peer.swarm_id, peer.fingerprint, peer.protocol_version)


def select_neighbors(
    candidates: Sequence[PeerInfo], self_id: str, max_neighbors: int
) -> list[PeerInfo]:
    """Choose at most ``max_neighbors`` of the mDNS ``candidates`` to connect to.

    All node ids (``self_id`` included) are placed on a ring ordered by
    ``sha256(node_id)``; this node keeps the nearest ring positions, alternating
    nearest successor, nearest predecessor, 2nd successor, 2nd predecessor, ... If
    there are at most ``max_neighbors`` other nodes, all are kept.

    * The result is sorted by node id and does not depend on the input order.
      Candidates equal to ``self_id`` are dropped; of several candidates with one node
      id, the smallest by (node_id, address, swarm_id, fingerprint, protocol_version)
      is kept.
    * Symmetry: if every node sees the same set of node ids, i keeps j iff j keeps i
      whenever ``max_neighbors`` is even (each keeps ``max_neighbors / 2`` successors
      and as many predecessors) or there are at most ``max_neighbors`` other nodes.
      With an odd ``max_neighbors`` and more other nodes than that, the extra successor
      is not reciprocated: use an even bound for symmetric links.
    * Only for candidates with a node id (mDNS). Static peers (empty node id) are not
      subject to selection and raise ValueError here.
    """
    if max_neighbors < 0:
        raise ValueError(f"max_neighbors must be >= 0, got {max_neighbors}")
    by_id: dict[str, PeerInfo] = {}
    for peer in candidates:
        if not peer.node_id:
            raise ValueError(
                f"select_neighbors needs node ids; static peer {peer.address} is not "
                "subject to selection"
            )
        if peer.node_id == self_id:
            continue
        old = by_id.get(peer.node_id)
        if old is None or _peer_key(peer) < _peer_key(old):
            by_id[peer.node_id] = peer
    if len(by_id) <= max_neighbors:
        return [by_id[i] for i in sorted(by_id)]
    ring = sorted([self_id, *by_id], key=_ring_key)
    n, pos = len(ring), ring.index(self_id)
    chosen: list[str] = []
    step = 1
    while len(chosen) < max_neighbors:
        for node_id in (ring[(pos + step) % n], ring[(pos - step) % n]):
            if len(chosen) < max_neighbors and node_id not in chosen:
                chosen.append(node_id)
        step += 1
    return [by_id[i] for i in sorted(chosen)]


# --------------------------------------------------------------------------- mDNS


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


class MdnsDiscovery:
    """Announce this node and find the others of its swarm by mDNS (DNS-SD).

    ``interface`` is an IP to bind zeroconf to (e.g. ``"127.0.0.1"``); empty means all
    interfaces. ``advertise`` is this node's ``host:port``; a host name is resolved at
    ``start()``, and an unspecified address (``0.0.0.0``) needs an ``interface``, whose
    address is then announced instead. See the module docstring for the rules.
    """

    ttl: int = 120
    """Seconds a silently vanished peer may linger (TTL of all announced records)."""
    resolve_timeout_ms: int = 3000
    """How long one resolution of a found service may take."""
    resolve_attempts: int = 3

    def __init__(
        self,
        *,
        node_id: str,
        swarm_id: str,
        fingerprint: str,
        protocol_version: int,
        advertise: str,
        interface: str = "",
        logger: logging.Logger | None = None,
    ) -> None:
        self.node_id = node_id
        self.interface = interface.strip()
        self.log = logger or _LOG
        self.instance = instance_name(node_id)
        self.service_name = f"{self.instance}.{SERVICE_TYPE}"
        host, self.port = split_address(advertise)
        if self.interface and ip_of(self.interface) is None:
            raise ValueError(f"mDNS interface must be an IP address, got {interface!r}")
        ip = ip_of(host)
        if ip is not None and ip.is_unspecified:
            if not self.interface:
                raise ValueError(
                    f"advertise {advertise!r} is not dialable; give a routable address "
                    "or an mDNS interface"
                )
            host = self.interface
        self.host = host
        self.advertise = join_address(host, self.port)
        self.properties = {
            "node_id": node_id,
            "swarm_id": swarm_id,
            "proto": str(protocol_version),
            "fp": fingerprint,
            "addr": self.advertise,
        }
        for key, value in self.properties.items():
            if len(f"{key}={value}".encode()) > _MAX_TXT_ENTRY:
                raise ValueError(f"mDNS TXT entry {key!r} is longer than {_MAX_TXT_ENTRY} bytes")
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._start_task: asyncio.Task[Any] | None = None
        self._started = False
        self._stopped = False
        self._peers: dict[str, PeerInfo] = {}  # service name -> accepted peer
        self._generation: dict[str, int] = {}  # service name -> events seen
        self._tasks: dict[str, asyncio.Task[None]] = {}  # service name -> resolution
        self._dials = Dials()
        self._once = OnceLog(self.log)
        self._filter = SwarmFilter(
            node_id, swarm_id, fingerprint, protocol_version, self.advertise, self._once
        )

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind, browse, and register this node's service (returns once announced)."""
        if self._started or self._stopped:
            raise RuntimeError("MdnsDiscovery can be started only once")
        self._started = True
        self._start_task = asyncio.current_task()
        try:
            addresses = await self._host_addresses()
            if self.interface:
                version = IPVersion.V6Only if ":" in self.interface else IPVersion.V4Only
                self._aiozc = AsyncZeroconf(interfaces=[self.interface], ip_version=version)
            else:
                v6 = any(":" in a for a in addresses)
                self._aiozc = AsyncZeroconf(
                    interfaces=InterfaceChoice.All, ip_version=IPVersion.All if v6 else None
                )
            self._browser = AsyncServiceBrowser(
                self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_service_state_change]
            )
            info = ServiceInfo(
                SERVICE_TYPE,
                self.service_name,
                port=self.port,
                properties=dict(self.properties),
                server=f"{self.instance}.local.",
                host_ttl=self.ttl,
                other_ttl=self.ttl,
                parsed_addresses=addresses,
            )
            self._info = info
            if not self.interface and any(_is_loopback(a) for a in addresses):
                self.log.warning(
                    "mDNS: announcing loopback address %s on all interfaces; "
                    "peers on other hosts cannot dial it",
                    self.advertise,
                )
            announced = await self._aiozc.async_register_service(info)
            await announced
            self.log.info(
                "mDNS: announced %s as %s on %s",
                self.node_id,
                self.advertise,
                self.interface or "all interfaces",
            )
        except BaseException:
            await self.stop()
            raise
        finally:
            self._start_task = None

    async def stop(self) -> None:
        """Unregister (mDNS goodbyes), stop browsing, close; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        starting = self._start_task
        if starting is not None and starting is not asyncio.current_task() and not starting.done():
            starting.cancel()
            await asyncio.wait([starting])
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        aiozc, browser, info = self._aiozc, self._browser, self._info
        self._aiozc = self._browser = self._info = None
        if browser is not None:
            with self._logged_errors("cancel the mDNS browser"):
                await browser.async_cancel()
        if aiozc is not None:
            if info is not None and self._registered(aiozc.zeroconf, info):
                with self._logged_errors("unregister the mDNS service"):
                    await (await aiozc.async_unregister_service(info))
            with self._logged_errors("close zeroconf"):
                await aiozc.async_close()
        self._peers.clear()

    # ----------------------------------------------------------------- queries

    def peers(self) -> list[PeerInfo]:
        """Accepted peers, sorted by node id (then address); never this node, nor one
        whose address is silent (`dialled`)."""
        silent = self._dials.silent
        return sorted((p for p in self._peers.values() if not silent(p.address)), key=_peer_key)

    def dialled(self, address: str, joined: bool) -> None:
        """How a dial of `address` (of a peer of `peers()`) ended: `joined`, a handshake
        both sides accepted; else (no answer, a refusal) it is silent for a while
        (module docstring)."""
        self._dials.note(address, joined)

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _registered(zc: Zeroconf, info: ServiceInfo) -> bool:
        return zc.registry.async_get_info_name(info.name) is not None

    @contextlib.contextmanager
    def _logged_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # shutting down: report, carry on
            self.log.warning("mDNS: could not %s: %s", what, exc)

    async def _host_addresses(self) -> list[str]:
        ip = ip_of(self.host)
        if ip is not None:
            return [str(ip)]
        loop = asyncio.get_running_loop()
        family = socket.AF_UNSPEC
        if self.interface:
            family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        try:
            infos = await loop.getaddrinfo(
                self.host, self.port, family=family, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise OSError(f"cannot resolve advertise host {self.host!r}: {exc}") from exc
        addresses = list(dict.fromkeys(str(i[4][0]).split("%")[0] for i in infos))
        if not addresses:
            raise OSError(f"advertise host {self.host!r} has no usable address")
        return addresses

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        """Browser callback (runs in the event loop)."""
        if self._stopped:
            return
        if name.lower() == self.service_name.lower():
            if state_change is not ServiceStateChange.Removed:
                self._filter.check_own_name(zeroconf, name)
            return
        old = self._tasks.pop(name, None)
        if old is not None:
            old.cancel()
        if state_change is ServiceStateChange.Removed:
            self._generation.pop(name, None)
            gone = self._peers.pop(name, None)
            if gone is not None:
                self.log.info("mDNS peer %s at %s left", gone.node_id, gone.address)
            return
        if name not in self._generation and len(self._generation) >= MAX_SERVICES:
            given = self._place()
            self._once(
                logging.WARNING,
                "",
                "full",
                f"mDNS: over {MAX_SERVICES} services; a newcomer takes the place of one that "
                "is no peer or did not join a dial, else it is ignored",
            )
            if given is None:
                return
            self._generation.pop(given)
            self._peers.pop(given, None)
            if (task := self._tasks.pop(given, None)) is not None:
                task.cancel()
        self._generation[name] = generation = self._generation.get(name, 0) + 1
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name, generation))
        self._tasks[name] = task
        task.add_done_callback(functools.partial(self._resolved, name))

    def _place(self) -> str | None:
        """The service a newcomer to a full table replaces (module docstring), or None."""
        never_dialled = None
        for name in self._generation:  # the oldest first
            peer = self._peers.get(name)
            rank = 0 if peer is None else self._dials.rank(peer.address)
            if rank == 0:
                return name
            if rank == 1 and never_dialled is None:
                never_dialled = name
        return never_dialled

    def _resolved(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.warning("mDNS: resolving %s failed: %r", name, exc)

    async def _resolve(self, zc: Zeroconf, name: str, generation: int) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        resolved = False
        for _ in range(self.resolve_attempts):
            resolved = await info.async_request(zc, self.resolve_timeout_ms)
            if resolved or self._generation.get(name) != generation:
                break
        if self._stopped or self._generation.get(name) != generation:
            return  # superseded by a later event for this service
        if not resolved:
            self._once(
                logging.INFO, name, "unresolved", f"mDNS: could not resolve service {name!r}"
            )
            return
        previous = self._peers.pop(name, None)
        peer = self._filter.accept(name, info)
        if peer is not None:
            if peer != previous:
                self.log.info("mDNS peer %s at %s found", peer.node_id, peer.address)
            self._peers[name] = peer


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
    address as a Hello's listen address must be, `address_problem`, not 0.0.0.0 or
    ::), else the first resolved address and the SRV port; None without either."""
    if not address_problem(addr):
        host, port = split_address(addr)
        ip = ip_of(host)
        if ip is None or not ip.is_unspecified:
            return join_address(host, port)
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
