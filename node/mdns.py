"""`MdnsDiscovery`: announce this node and browse for the others of its swarm with
zeroconf (rules: `node/discovery.py`); which services are peers, and the table's
bounds, are `node/mdns_services.py`'s."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Iterator
from typing import Any

from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from declora.node import mdns_services as services
from declora.node.address import ip_of, join_address, split_address
from declora.node.mdns_services import MAX_TXT_ENTRY, Dials, OnceLog, SwarmFilter, instance_name
from declora.node.peer_info import PeerInfo, peer_key

_LOG = logging.getLogger("declora.node.discovery")  # the name its records always had


def _is_loopback(host: str) -> bool:
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


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
        self.service_name = f"{self.instance}.{services.SERVICE_TYPE}"
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
            if len(f"{key}={value}".encode()) > MAX_TXT_ENTRY:
                raise ValueError(f"mDNS TXT entry {key!r} is longer than {MAX_TXT_ENTRY} bytes")
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
                self._aiozc.zeroconf,
                services.SERVICE_TYPE,
                handlers=[self._on_service_state_change],
            )
            info = ServiceInfo(
                services.SERVICE_TYPE,
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
        return sorted((p for p in self._peers.values() if not silent(p.address)), key=peer_key)

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
        if name not in self._generation and len(self._generation) >= services.MAX_SERVICES:
            given = self._place()
            self._once(
                logging.WARNING,
                "",
                "full",
                f"mDNS: over {services.MAX_SERVICES} services; a newcomer takes the place of one "
                "that is no peer or did not join a dial, else it is ignored",
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
        info = AsyncServiceInfo(services.SERVICE_TYPE, name)
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
