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
  other nodes. Once every node hears the same set, the choice is a ring lattice, so
  connected; the peer table enforces it (`PeerTable.admit`: a chosen newcomer takes
  the slot of a live peer not chosen), so links made first come, first served while
  the nodes heard only part of the swarm do not keep it split.

This module holds the static list and neighbour selection, and is where callers
import discovery from; `peer_info` holds `PeerInfo` and `Discovery`, `mdns` the
zeroconf announcer and browser, `mdns_services` the service table's policy and bounds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from declora.node.address import ip_of, join_address, split_address
from declora.node.mdns import MdnsDiscovery
from declora.node.mdns_services import SERVICE_TYPE, instance_name
from declora.node.peer_info import Discovery, PeerInfo, peer_key

__all__ = [
    "SERVICE_TYPE",
    "Discovery",
    "MdnsDiscovery",
    "PeerInfo",
    "StaticDiscovery",
    "instance_name",
    "select_neighbors",
]


# --------------------------------------------------------------------------- static


def normalize_address(address: str) -> str:
    """Canonical spelling of an address: lower-case host, compressed IP literal."""
    host, port = split_address(address)
    ip = ip_of(host)
    return join_address(str(ip) if ip is not None else host.lower(), port)


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
        if old is None or peer_key(peer) < peer_key(old):
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
