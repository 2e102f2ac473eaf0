"""Joining: this node's Hello, the answer to a peer's, dialling and reconnecting.

- whether a Hello or Welcome may join is `admission`'s (the rule, `check_hello`, and
  the identity a peer claims); with a swarm secret every Hello, Welcome, pull and
  leave notice must carry a valid mac (`auth.Auth`); a refusal is counted
  (`bad_auth`, `replay`, `stale_nonce`) and a stranger learns nothing about this
  node; a refused Welcome carries the reason and nothing about this node;
- a Hello names its receiver (the address dialled; a Welcome: the dialler's id) and
  carries a session token the receiver must present in later calls; a re-handshake
  without the session this node holds for that id gets a fresh token, never the one
  issued before, and the token of the peer's last validated payload stays valid
  (`PeerTable.admit`);
- refused Hellos are logged in full at most `REFUSALS_LOGGED` times a minute, then
  counted and summed up in one line (`RefusalLog`); the `handshake` counter has them all;
- `dial` admits a peer only when its Welcome is authentic, names this node and
  passes `check_hello` (how each dial ended is recorded by `startup.DialLog`); a
  Welcome accepted there but refused here is recorded as "not joining: ..." and
  followed by a Leave, so the peer drops this node again;
- a configured peer (--peers, discovered: `Admission.configured`) always finds room:
  with every slot taken, a silent neighbour's slot is released for it, else that of a
  live neighbour that is not configured (`admit_with_room`); unlisted peers share slots by
  remote host (`Admission.host_refusal`), whether they call or this node dials them
  (the dialled address's IP, or the host the entry's Hellos came from); dialling a
  configured DNS name records the IPs it resolves to (`endpoints`, off the event
  loop, 2 s at most; `connect_known` resolves one not yet resolved), the hosts whose
  Hellos may speak for that name (`Admission.vouched`);
- a Welcome for an id that is live here is refused ("live at another address") unless
  the address dialled is that id's own and the Welcome names no other
  (`PeerTable.dialled_elsewhere`): a server this node was made to dial cannot take
  over a live neighbour's entry, nor have its token offered in later Hellos; a
  neighbour restarted at its own address still renews, and one that is not live may
  come back at a new address; it counts as a refusal for the dial backoff;
- the reconnect loop re-dials known peers that are not live with the peer table's
  backoff (counted from each dial's end: `PeerTable.dial_ended`), and candidates not
  in the table on every call, except one whose live node refused the handshake
  (`DialBackoff`: 2 s doubling to 8 s, counted from the refusal, forgotten on
  success); one where nothing answers yet (not listening, still loading) is found at
  once; an unexpected error is logged, never swallowed, and the loop goes on;
- under mTLS with --tls-crl a loop of its own (`auth.watch_revocations`, started by the
  daemon before it waits for neighbours, so no dial round delays it) re-reads the CRL
  once its file changed (`auth.drop_revoked`, every `revocation.POLL_SECONDS`, in a
  thread) and drops each live neighbour whose certificate (as last seen on one of its
  calls, or on the dial of its server) is revoked now, counted `revoked`; its later
  calls are refused (`auth.caller_refusal`), its server is refused at the next dial
  (`TlsFiles.server_name`); a Hello whose caller's certificate has no common name is
  refused (no id could be checked against it);
- under mTLS with --tls-crl a dial reads the server's certificate before it sends a
  Hello: a revoked server is not joined and never admits this node (it logged it
  joined, then left, on every re-dial); that refusal, and a server's refusal of this
  node's own revoked certificate, are logged at WARNING once per address and
  certificate, then at DEBUG (`revoked_dials`);
- a Hello says the CRL number of the list in use (`Hello.crl_number`, 0 without one);
  lists learned from peers (`revocation_spread`) are kept in the state folder
  (`LEARNED_CRL`) and read back at start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from declora.node import PROTOCOL_VERSION, __version__, logs, protocol_note
from declora.node.address import dial_problem, endpoints, split_address
from declora.node.daemon.admission import SAME_SECRET, Admission, address_ip
from declora.node.daemon.auth import NAMELESS, Auth, warn_own_revoked
from declora.node.daemon.dial_backoff import DialBackoff
from declora.node.daemon.peer_exchange import FULL  # peers that refused as full are asked
from declora.node.daemon.peers import Peer, PeerTable
from declora.node.daemon.revoked_dials import RevokedDials
from declora.node.daemon.state import Progress
from declora.node.daemon.status import Counters
from declora.node.daemon.transport import Transport
from declora.node.discovery import Discovery, select_neighbors
from declora.node.identity import shown
from declora.node.limits import peer_host
from declora.node.revocation import REVOKED
from declora.node.settings import NodeSettings
from declora.proto import pb, pb_grpc

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
LEARNED_CRL = "crl-learned.pem"  # in the state folder: the newest list learned from peers
DIAL_TIMEOUT = 5.0
# a gRPC error of a Handshake that is a live node's refusal, or its rate limit (anything
# else, e.g. UNAVAILABLE: nothing listens yet or it is still loading, is no refusal)
REFUSING_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


class RefusalLog(logs.RefusalLog):
    """`logs.RefusalLog` writing to this module's log."""

    def __init__(self, what: str, **kw: Any) -> None:
        kw.setdefault("logger", log)
        super().__init__(what, **kw)


def _host(address: str) -> str:
    """The host of a dialled `address` ('' when malformed): a Welcome's source, keyed
    as a caller's host is (`auth.source_key`)."""
    try:
        return split_address(address)[0]
    except ValueError:
        return ""


def dialled_host(peers: PeerTable, node: pb.Hello, address: str) -> str:
    """The remote host a dial of `address` (answered by `node`) reaches, for the
    per-host share (`Admission.host_refusal`): the address's IP, else the host the
    entry's Hellos came from ('' where neither is known)."""
    ip = address_ip(address)
    if ip is not None:
        return str(ip)
    known = peers.get(node.node_id) or peers.by_address(address)
    return "" if known is None else known.host


def offered_addresses(discovery: Discovery | None, node_id: str, max_neighbors: int) -> list[str]:
    """Addresses `discovery` offers: unnamed ones, and the named ones this node chooses
    (`select_neighbors`), each once; none without discovery."""
    if discovery is None:
        return []
    found = discovery.peers()
    named = [p for p in found if p.node_id]
    chosen = select_neighbors(named, node_id, max_neighbors) if named else []
    addresses = [p.address for p in found if not p.node_id] + [p.address for p in chosen]
    return list(dict.fromkeys(addresses))


def admit_with_room(
    peers: PeerTable, releases: RefusalLog, hello: pb.Hello, **how: Any
) -> Peer | None:
    """`PeerTable.admit`, once; where there is no room for `hello`, a silent
    neighbour's slot is released for it first (`PeerTable.release_silent`, only
    when that makes room), and for a configured peer (`how["configured"]`) still
    without room, the slot of a live peer that is not configured (one never proven
    first, then the one heard from least recently: `heard`, renewed by each
    handshake and validated payload): configured peers always find room. Each
    logged rate-limited. A refusal changes nothing."""
    released = peers.release_silent(hello)
    if released is not None:
        releases.warning(
            "released the slot of neighbour %s (no valid payload for %.0f s) for %s",
            released.node_id,
            time.monotonic() - max(released.quiet_since, peers.rounds_began or 0.0),
            shown(hello.node_id),
        )
    elif how.get("configured") and not peers.room_for(hello):
        others = [p for p in peers.live if not p.configured]
        if others:
            given = min(others, key=lambda p: (p.proven, p.heard))
            peers.drop(given, f"its slot went to configured peer {shown(hello.node_id)}")
            releases.warning(
                "released the slot of unlisted neighbour %s for configured peer %s",
                given.node_id,
                shown(hello.node_id),
            )
    return peers.admit(hello, **how)


class Handshaker:
    """This node's Hello, the answer to a peer's, and dialling peers."""

    def __init__(
        self,
        settings: NodeSettings,
        fingerprint: str,
        recipe: dict[str, str],
        progress: Progress,
        peers: PeerTable,
        transport: Transport,
        auth: Auth,
        counters: Counters,
        discovery: Discovery | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress
        self.peers = peers
        self.transport = transport
        self.auth = auth
        self.counters = counters
        self.discovery = discovery
        self.refusals = RefusalLog("refused handshakes")
        self.releases = RefusalLog("released slots of silent neighbours")
        self.backoff = DialBackoff()  # candidates whose node refused: `connect_known`
        self.answered_as: dict[str, str] = {}  # candidate address: the id that answered
        self.admission = Admission(settings, fingerprint, recipe, peers, auth, transport)
        self.revoked = RevokedDials(transport)  # revoked certificates met in dials
        tls = getattr(transport, "tls", None)
        if tls is not None and tls.crl is not None:  # lists learned from peers: kept there
            tls.crl.keep_learned(settings.state_dir / LEARNED_CRL)
            warn_own_revoked(tls)  # a list learned before may revoke this node's own

    @property
    def fingerprint(self) -> str:
        """This node's fingerprint, as its Hello states it (`Admission.fingerprint`)."""
        return self.admission.fingerprint

    @property
    def recipe(self) -> dict[str, str]:
        """This node's recipe, as its Hello states it (`Admission.recipe`)."""
        return self.admission.recipe

    def hello(self, receiver: str = "", session: bytes = b"") -> pb.Hello:
        """This node's Hello for `receiver` with the token it must present to us;
        signed (with a fresh nonce) when a swarm secret is set. An --advertise no peer
        can dial (`dial_problem`: 0.0.0.0, the image's --listen, left unset) is not
        stated: peers refuse one, and keep the address they dialled instead."""
        s = self.settings
        return self.auth.sign(
            pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                package_version=__version__,
                node_id=s.node_id,
                swarm_id=s.swarm_id,
                fingerprint=self.fingerprint,
                round=self.progress.round,
                live_degree=len(self.peers.live),
                listen_address="" if dial_problem(s.advertise) else s.advertise,
                seq=self.progress.seq,
                gradient_tracking=s.gradient_tracking,
                receiver=receiver,
                session=session,
                recipe=self.recipe,
                crl_number=self._crl_number(),
            )
        )

    def _crl_number(self) -> int:
        """The CRL number of the list in use as a Hello says it (`Revocations.said`; 0
        without one): `Hello.crl_number`."""
        tls = getattr(self.transport, "tls", None)
        return 0 if tls is None or tls.crl is None else tls.crl.said

    def answer(
        self, request: pb.Hello, cert_name: str | None = None, peer: str | None = None
    ) -> pb.Welcome:
        """The Welcome for a peer's Hello; admits the peer when it may join.

        `cert_name`: the common name of the caller's TLS certificate (mTLS), else None;
        `peer`: the caller's `context.peer()` (its remote host is bound to the id
        while the id is live), None where unknown. A refusal carries its reason only;
        an accepted Welcome carries a session token issued for this Hello alone."""
        who = shown(request.node_id or "?")
        host = peer_host(peer) if peer else ""
        refusal = self.auth.refusal(request, f"handshake from {who}", host)
        if refusal:  # nothing about this node for a stranger
            if not request.mac:  # the operator's mistake, read on both sides
                refusal += f" ({who} has none, this node has one: {SAME_SECRET})"
            return pb.Welcome(accepted=False, reason=f"not authenticated: {refusal}")
        configured = self.admission.configured(request, host, self.discovered())
        reason = self.admission.hello_refusal(request, cert_name, host, configured)
        if not cert_name and getattr(self.transport, "tls", None):
            reason = NAMELESS  # no id to check the Hello's against
        if reason:
            self.counters.count("handshake")
            self.refusals.warning("refused handshake from %s: %s", who, reason)
            return pb.Welcome(accepted=False, reason=reason)
        admitted = admit_with_room(
            self.peers, self.releases, request, host=host, configured=configured
        )
        if admitted is None:
            return pb.Welcome(accepted=False, reason=FULL)
        return pb.Welcome(
            accepted=True, node=self.hello(receiver=request.node_id, session=admitted.token_in)
        )

    async def dial(self, address: str, configured: bool = False) -> Peer | None:
        """Handshake with `address`; admit the peer on success (its Welcome authentic
        and naming this node, under mTLS its node id the name of the certificate its
        server presents); `configured`: a static or discovered address. A Welcome
        accepted there and refused here is recorded as this dial's outcome (the
        startup message names it) and followed by a Leave, so the peer does not count
        this node either."""
        return (await self._dial(address, configured))[0]

    async def _dial(self, address: str, configured: bool) -> tuple[Peer | None, bool]:
        """`dial`, and whether it was refused: a Welcome with accepted=false, one
        refused here (among them one claiming a live id from another address), or a
        gRPC error in `REFUSING_CODES` (a live node said no)."""
        if configured and address_ip(address) is None:  # who may speak for the name
            self.admission.note_resolved(address, {ip for ip, _ in await endpoints(address)})
        revoked, served_as = await self.revoked.server(address, DIAL_TIMEOUT)
        if revoked:  # no Hello: the server would count this node joined, then left
            self.revoked.say(
                address, f"not joining {address}: {revoked}", f"not joining: {revoked}"
            )
            return None, True
        channel = self.transport.channel(address)
        hello = self.hello(receiver=address, session=self.peers.token_for_dial(address))
        try:
            try:
                welcome = await pb_grpc.SwarmStub(channel).Handshake(hello, timeout=DIAL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                details = logs.safe_text(exc.details() or "", 300)
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED and REVOKED in details:
                    self.revoked.say(address, self.revoked.refused_line(address, details))
                log.debug("handshake with %s failed: %s %s", address, exc.code().name, details)
                return None, exc.code() in REFUSING_CODES
            if not welcome.accepted:
                reason = logs.safe_text(welcome.reason, 300)
                log.warning(
                    "%s refused the handshake: %s%s", address, reason, protocol_note(reason)
                )
                return None, True
            node = welcome.node
            if self.auth.refusal(node, f"the welcome of {address}", _host(address)):
                return None, True
            reason = self.admission.welcome_refusal(node, address)
            if not reason and self.peers.dialled_elsewhere(node, address):
                self.answered_as[address] = node.node_id  # not dialled while that id is live
                reason = f"node id {shown(node.node_id)} is live at another address"
            if not reason:
                reason = await self.admission.certificate_refusal(
                    address, node.node_id, DIAL_TIMEOUT, served_as
                )
            if not reason and not configured:
                reason = self.admission.host_refusal(node, dialled_host(self.peers, node, address))
            if reason:
                log.warning("not joining %s: %s", address, reason)
                await self._refused_welcome(channel, address, node, reason)
                return None, True
        finally:
            await channel.close()
        peer = admit_with_room(
            self.peers, self.releases, node, dialled=address, configured=configured
        )
        if peer is not None and peer.address != address:  # another name for its address
            self.answered_as[address] = peer.node_id
        return peer, False

    async def _refused_welcome(
        self, channel: grpc.aio.Channel, address: str, node: pb.Hello, reason: str
    ) -> None:
        """Record `reason` as how dialling `address` ended, and tell the peer, which
        accepted this node, that it left (best effort: never raises)."""
        dial_log = getattr(self.transport, "dial_log", None)
        if dial_log is not None:
            dial_log.record(address, f"not joining: {reason}")
        s = self.settings
        notice = pb.LeaveNotice(
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            round=self.progress.round,
            session=node.session,
            receiver_id=node.node_id,
        )
        try:
            await pb_grpc.SwarmStub(channel).Leave(self.auth.sign(notice), timeout=DIAL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            log.debug("leave to %s failed: %s", address, exc.code().name)

    def discovered(self) -> list[str]:
        """The addresses discovery offers now (none without discovery)."""
        return [] if self.discovery is None else [p.address for p in self.discovery.peers()]

    def candidates(self) -> list[str]:
        """Addresses discovery offers: unnamed ones, and the chosen named ones."""
        s = self.settings
        return offered_addresses(self.discovery, s.node_id, s.max_neighbors)

    async def connect_known(self, now: float | None = None) -> None:
        """Handshake with known peers due a re-dial (`PeerTable.due_for_dial`) and with
        every candidate not in the peer table, except one whose node refused the last
        dial and is not yet due again (`backoff`), and another name for a live
        neighbour's address: one that resolves to the same IP and port (`--peers
        localhost:7401` for 127.0.0.1:7401), or whose last answer came from an id that
        is live now (`answered_as`); dialled, it would be refused as "live at another
        address", and the Leave that follows would end the link. A candidate where
        nothing answers is dialled on every call. `now`: monotonic seconds, a clock
        that stands still during the call (tests); by default the clock, read again
        when a dial ends (each backoff counts from then)."""
        at = now  # None: the clock runs, and a dial's end is stamped when it comes
        now = time.monotonic() if now is None else now
        candidates = self.candidates()
        resolved = self.admission.resolved
        names = [a for a in candidates if address_ip(a) is None and a not in resolved]
        if names:  # a configured name's hosts (`Admission.vouched`), until it resolves once
            found = await asyncio.gather(*map(endpoints, names))
            for a, pairs in zip(names, found, strict=True):
                self.admission.note_resolved(a, {ip for ip, _ in pairs})
        for p in self.peers.all():  # one that introduced itself at a configured address
            vouched = p.address in candidates and self.admission.vouched(p.address, p.host)
            p.configured = p.configured or vouched
        known = {p.address for p in self.peers.all()}
        live = {p.node_id for p in self.peers.live}
        self.answered_as = {a: i for a, i in self.answered_as.items() if a in candidates}
        fresh = [a for a in candidates if a not in known and self.answered_as.get(a) not in live]
        if fresh and live:  # another name (localhost, a DNS name) for a live peer's address
            # resolved at once: a peer's slow name costs this call one timeout (2 s), once
            ends = await asyncio.gather(*map(endpoints, [p.address for p in self.peers.live]))
            named = await asyncio.gather(*map(endpoints, fresh))
            reached = set().union(*ends)
            fresh = [a for a, e in zip(fresh, named, strict=True) if not e & reached]
        self.backoff.keep(fresh)
        due = [p for p in self.peers.due_for_dial(now) if p.address not in fresh]
        dials: list[Awaitable[object]] = [
            self._dial_candidate(a, at) for a in fresh if self.backoff.due(a, now)
        ]
        dials += [self._redial(p, at) for p in due]
        if dials:
            await asyncio.gather(*dials)

    async def _redial(self, peer: Peer, at: float | None) -> None:
        """Dial known `peer` (due by `PeerTable.due_for_dial`); however it ends, its
        next backoff counts from the end (the clock then; `at` where the caller stands
        the clock still)."""
        try:
            await self.dial(peer.address, configured=peer.configured)
        finally:
            self.peers.dial_ended(peer, time.monotonic() if at is None else at)

    async def _dial_candidate(self, address: str, at: float | None) -> None:
        """Dial candidate `address`: a refusal lengthens its backoff, counted from when
        the refusal came (the clock then; `at` where the caller stands the clock
        still), a join forgets it; discovery is told how it ended (`Discovery.dialled`:
        mDNS services where nothing joins give way to those that do)."""
        peer, refused = await self._dial(address, configured=True)
        if self.discovery is not None:
            self.discovery.dialled(address, joined=peer is not None)
        if peer is not None:
            self.backoff.succeeded(address)
        elif refused:
            # from the refusal: a node slow to refuse (up to DIAL_TIMEOUT) takes nothing
            # off the wait
            wait = self.backoff.refused(address, time.monotonic() if at is None else at)
            log.debug("%s refused: next dial in %g s", address, wait)

    def flush_refusals(self, final: bool = False) -> None:
        """Sum up the refusals not logged in full (`RefusalLog`); `final` at exit."""
        self.refusals.flush(final)
        self.releases.flush(final)
        self.auth.refusals.flush(final)
        self.counters.flush_refusals(final)

    async def reconnect_forever(self) -> None:
        """Re-dial peers that are not live until the node stops."""
        while not self.progress.stop_requested:
            self.flush_refusals()
            try:
                await self.connect_known()
            except Exception:  # one bad round of dialling must not end reconnecting
                log.exception("reconnecting failed; trying again in %gs", RECONNECT_SECONDS)
            await asyncio.sleep(RECONNECT_SECONDS)
