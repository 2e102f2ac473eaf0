"""The peer table: what this node knows of each neighbour, and the live set.

Invariants callers may rely on:
- a peer is live only after a good handshake (`admit`); it leaves the live set by
  `drop` (missed deadline, failed push, bad message, refused connection) or a leave
  notice, and returns only through another handshake;
- `admit` decides how the two public copies get in step: both at the shared seeded
  init (seq 0) means no keyframe; a peer that is new, restarted or out of step is
  forgotten by the core and gets a keyframe next;
- wherever a peer's public copy is forgotten (out of step, dropped, evicted, or
  `forget_all_copies`) or restarts at the init (a Hello out of step at seq 0), its
  payloads queued for later mixes go with it (`copy_forgotten`, the inbox's): a
  payload can only be applied to the copy it followed, so none is applied to a later
  one or held against its sender;
- `Peer.copy` changes whenever the peer's public copy is forgotten or restarts at
  the init: a push checked while it changed followed another copy (an old process's
  push, checked while its restart's Hello was admitted) and is refused (`Inbox`);
- with every slot taken, a configured newcomer (`admit`'s `configured`) whose address
  this node chose (`chosen`: its static peers and the mDNS `select_neighbors` choice)
  takes the slot of a live peer it did not choose (`displaced`), so links made first
  come, first served give way to the chosen graph, which is connected (a swarm split
  in two trains two adapters and says nothing);
- with every slot taken, a newcomer with no live neighbour (its Hello's
  `live_degree` 0) splits a link (`split`): the slot of a live peer this node did not
  choose and whose degree is 2 or more (it keeps a neighbour) goes to it, at most
  once every `SPLIT_SECONDS`; the newcomer, which learnt that peer's address (peer
  exchange), dials it next, so the link A-B becomes A-new-B, degrees unchanged: nodes
  that found a full swarm (a closed ring) are not left alone, and a Hello that lies
  costs this node one link a period;
- the table is bounded: at most `max_neighbors` live peers and `max_known` entries;
  a newcomer evicts the longest-unseen peer that is not live, entries unseen for
  `FORGET_SECONDS` are pruned, and a new id at the address of a peer that is not live
  replaces that entry (a restart under another id);
- every peer has a session token this node issued (`token_in`): its pushes, pulls
  and leave notices must carry it (the current or the previous one); an inbound
  Hello for a known id gets a fresh one (the one before stays valid as `token_prev`,
  for a push already in flight) unless it repeats the session this node holds for
  that id (`token_out`: the same incarnation renewing), so a Hello never learns the
  token another caller of that id holds; a Hello refused for want of room (`room_for`)
  changes nothing, tokens included;
- an outbound handshake (a Welcome to this node's dial) for a live id is admitted only
  from that id's own address (`dialled_elsewhere`): a dial of another address never
  re-keys or re-addresses a live entry, so a live neighbour's token is offered
  (`token_for_dial`) only in a Hello to the address it was admitted at;
- `host` is the remote host (the IP of `context.peer()`) the peer's last accepted
  inbound Hello came from; `handshake` refuses a Hello for a live id from another
  host;
- `round` is what this node verified (a validated payload's round - 1); `claimed_round`
  is what the peer's Hello said, bounded, and moves nothing by itself; so are its
  `release` (cut to `RELEASE` characters) and `crl_number` (only compared);
- a live peer that has delivered no validated payload for `silence_limit` s of this
  node's rounds (`SILENT_GRACE`, or `SILENT_ROUNDS` of its recent rounds when longer;
  counted from its handshake, or from its last payload) holds its slot only until
  another peer wants it and releasing it admits that peer (`release_silent`): ids
  that shake hands and then stay silent cannot keep honest peers out; an id that
  never delivered keeps its clock across re-handshakes, so re-joining does not buy it
  a new grace;
- a peer that is not live is re-dialled with exponential backoff, counted from the
  end of its last dial (`dial_ended`: a dial slow to fail takes nothing off the wait);
  one that introduced itself (an inbound Hello) and never delivered a validated
  payload is re-dialled at most once (`redial.Redial`, the schedule);
- a dropped peer's channel closes with a grace longer than a push's deadline, so a
  push in flight ends by its own deadline instead of being cancelled;
- `left_after` is the round a peer's leave notice said it left after (clamped to
  `MAX_ROUND` where the notice is read, `service`), until it joins again; a peer that
  left after `finish_round` (this node's last training exchange; 0, until stopped:
  never), or that sent no leave notice since it joined and whose handshake claimed
  that round or later (its goodbye lost, or never sent to this node, not live then),
  has `finished`: it is not pruned, so `all_finished` (every known peer finished, at
  least one) stays true while nobody joins, and not re-dialled (it may still dial
  this node). A claim weighs no more than a leave notice here: either only spares
  the wait for that peer, and a joining peer's new Hello replaces both;
- a peer joining the live set wakes a round or a wait (`Progress.wake`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import grpc

from declora.node.daemon.redial import Redial
from declora.node.daemon.state import Progress
from declora.node.daemon.transport import Transport
from declora.node.dec_lora import DecLoraNode
from declora.node.discovery import normalize_address
from declora.node.logs import safe_text
from declora.node.metrics import NodeMetrics
from declora.proto import pb, pb_grpc

log = logging.getLogger(__name__)

FORGET_SECONDS = 600.0  # a peer unseen this long (and not live) leaves the table
BACKOFF_FIRST = 2.0  # seconds before the first re-dial of a peer not live, then doubling
BACKOFF_MAX = 60.0  # up to this for peers that introduced themselves
BACKOFF_MAX_CONFIGURED = 8.0  # and this for static or discovered addresses
TOKEN_BYTES = 16
PENDING_TOKENS = 4096  # tokens offered in dials not yet answered (`token_for_dial`)
WHY = 500  # characters of why a neighbour left, as logged
RELEASE = 64  # characters of a neighbour's package_version kept (`Peer.release`)
SILENT_GRACE = 60.0  # seconds a live neighbour may deliver nothing before its slot is free...
SILENT_ROUNDS = 3  # ...or this many of this node's recent rounds, when that is longer
SPLIT_SECONDS = 30.0  # at most one link split for a newcomer with no neighbour this often


def new_token() -> bytes:
    return os.urandom(TOKEN_BYTES)


@dataclass
class Peer:
    """What this node knows of one neighbour."""

    node_id: str
    address: str
    live: bool = False
    degree: int = 0
    round: int = 0  # verified: the last validated payload's round - 1
    claimed_round: int = 0  # what its Hello said (bounded); moves nothing by itself
    seq: int = 0
    heard: float = 0.0  # `PeerTable.clock` (monotonic) at its last Hello or payload
    quiet_since: float = field(default_factory=time.monotonic)  # no valid payload since
    missed: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    weight: float = 0.0
    send_keyframe: bool = False
    expected_seq: int | None = None  # None: no copy of its public state yet
    copy: int = 0  # counts the copies forgotten (`PeerTable._forget_copy`): which one is held
    token_in: bytes = field(default_factory=new_token)  # what it must present to us
    token_prev: bytes = b""  # the token before the current one (a renewal in flight)
    token_used: bytes = b""  # the token of its last validated payload (kept valid)
    token_out: bytes = b""  # what we present to it (its Hello's session)
    host: str = ""  # the remote host of its last accepted inbound Hello ('' if none yet)
    configured: bool = False  # a static or discovered address: always re-dialled
    proven: bool = False  # delivered a validated payload at least once
    left_after: int | None = None  # its leave notice's round (bounded); None since it joined
    dials: int = 0  # dials since it was last live
    next_dial: float = 0.0  # monotonic time of the next re-dial
    channel: grpc.aio.Channel | None = None
    stub: pb_grpc.SwarmStub | None = None
    release: str = ""  # its Hello's package_version, at most RELEASE characters ('': unknown)
    crl_number: int = 0  # the CRL number it said its list has, not fetched yet (a Hello)
    crl_told: int = -1  # the CRL number this node last told it (-1: none since it joined)
    crl_asked: float = float("-inf")  # monotonic time of this node's last call about lists
    crl_served: float = float("-inf")  # monotonic time this node last gave it its list

    def token_ok(self, token: bytes) -> bool:
        return bool(token) and token in (self.token_in, self.token_prev)


class PendingTokens(dict[str, bytes]):
    """Address -> the session token offered in a dial to it, not yet answered."""

    def offer(self, address: str) -> bytes:
        """The token to offer `address`: the one offered before, else a new one. At
        most `PENDING_TOKENS`, the oldest forgotten past it: dropping them all would
        forget the offers of dials in flight (each candidate of discovery's is dialled
        at once), whose Welcome would then install another token than the one the peer
        holds, and its pushes be refused `bad_session`."""
        token = self.get(address)
        if token is None:
            if len(self) >= PENDING_TOKENS:
                del self[next(iter(self))]
            token = self[address] = new_token()
        return token


def same_address(address: str) -> str:
    """`address` as compared with others: its normalised spelling (`normalize_address`:
    `LOCALHOST:7000` and `localhost:7000` are one), else as given."""
    try:
        return normalize_address(address)
    except ValueError:
        return address


def displaced(live: list[Peer], chosen: Collection[str], address: str) -> Peer | None:
    """The live peer whose slot a configured newcomer at `address` takes where there is
    no room (`PeerTable.admit` drops it): where `address` is `chosen` and not every live
    peer's, of those not chosen one never proven first, then the one heard from least
    recently; else None. Addresses compare as `same_address` spells them."""
    chosen = {same_address(a) for a in chosen}
    if not address or same_address(address) not in chosen:
        return None
    others = [p for p in live if same_address(p.address) not in chosen]
    return min(others, key=lambda p: (p.proven, p.heard), default=None)


def split(live: list[Peer], chosen: Collection[str]) -> Peer | None:
    """The live peer whose slot a newcomer with no neighbour takes where there is no
    room (`PeerTable.admit`): of those not `chosen` with a degree of 2 or more, the
    highest degree, then the one heard from least recently; else None."""
    chosen = {same_address(a) for a in chosen}
    others = [p for p in live if same_address(p.address) not in chosen and p.degree >= 2]
    return min(others, key=lambda p: (-p.degree, p.heard), default=None)


class PeerTable:
    """Neighbours by node id, the live set, and each one's channel."""

    def __init__(
        self,
        node: DecLoraNode[str],
        progress: Progress,
        transport: Transport,
        metrics: NodeMetrics,
        max_neighbors: int,
        close_grace: float,
        max_known: int = 64,
    ) -> None:
        self.node = node
        self.progress = progress
        self.transport = transport
        self.metrics = metrics
        self.max_neighbors = max_neighbors
        self.max_known = max(max_known, max_neighbors)
        self.close_grace = close_grace
        self.peers: dict[str, Peer] = {}
        self.leaving: dict[str, str] = {}  # left after sending this round's payload: why
        self.pending_tokens = PendingTokens()  # tokens offered in dials not yet answered
        self.silence_limit = SILENT_GRACE  # seconds (`release_silent`); `Exchange` raises it
        self.rounds_began: float | None = None  # monotonic: silence counts from then on
        self.finish_round = 0  # this node's last training exchange (0: none); `Exchange` sets it
        self.redial = Redial(BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_MAX_CONFIGURED)
        # called with a peer's id when its copy is forgotten; `Inbox` drops its queued payloads
        self.copy_forgotten: Callable[[str], None] = lambda node_id: None
        # the addresses this node chose to mix with (`displaced`); `build_parts` sets it
        self.chosen: Callable[[], Collection[str]] = tuple
        # what a peer's stay is measured with (`heard`, `prune`): a wall clock's step
        # (NTP, a suspended laptop) must not forget every idle peer at once
        self.clock: Callable[[], float] = time.monotonic
        self.split_at = float("-inf")  # `clock` at the last link split (`split`)

    def get(self, node_id: str) -> Peer | None:
        return self.peers.get(node_id)

    def all(self) -> list[Peer]:
        """Every known peer, by node id."""
        return sorted(self.peers.values(), key=lambda p: p.node_id)

    @property
    def live(self) -> list[Peer]:
        """The live set, by node id."""
        return [p for p in self.all() if p.live]

    def by_address(self, address: str) -> Peer | None:
        return next((p for p in self.peers.values() if p.address == address), None)

    def channel(self, peer: Peer) -> grpc.aio.Channel:
        """The peer's channel, opened on first use."""
        if peer.channel is None:
            peer.channel = self.transport.channel(peer.address)
            peer.stub = pb_grpc.SwarmStub(peer.channel)
        return peer.channel

    def stub(self, peer: Peer) -> pb_grpc.SwarmStub:
        """The peer's stub, on its channel."""
        self.channel(peer)
        assert peer.stub is not None
        return peer.stub

    # ------------------------------------------------------------ tokens
    def token_for_dial(self, address: str) -> bytes:
        """The session token to offer in a Hello to `address`: the token of the known
        peer whose address it is, else a pending one for that address (installed by
        `admit` when the dial joins). A live entry's address changes only by a Hello
        or Welcome from that address (`admit`), so its token goes to no other."""
        peer = self.by_address(address)
        if peer is not None:
            return peer.token_in
        return self.pending_tokens.offer(address)

    # ------------------------------------------------------------ membership
    def admit(
        self, hello: pb.Hello, dialled: str = "", configured: bool = False, host: str = ""
    ) -> Peer | None:
        """Add or refresh a neighbour after a good handshake; None when this node has
        its maximum of neighbours (or of known peers, all live).

        `dialled`: the address this node dialled (an outbound handshake), whose
        offered token becomes the peer's `token_in` (and a new entry's address where
        the Welcome states none); `configured`: that address is a
        static or discovered one (the peer is then always re-dialled); `host`: the
        remote host an inbound Hello came from (remembered as the peer's `host`).

        An inbound Hello (no `dialled`) for a known id gets a fresh `token_in`, unless
        its session is the `token_out` on record (only that peer and this node know it:
        a renewal): the answer to a stranger's Hello never hands out a token that was
        issued before it. The token of the peer's last validated payload (else the
        current one) stays valid as `token_prev`, however many such Hellos come.

        An outbound handshake for a live id from another address than its entry's
        (`dialled_elsewhere`) is refused: a dial never re-keys or re-addresses a live
        entry from elsewhere (the handshake refuses it first: "live at another address").

        Where there is no room (`room_for` false), a configured `hello` this node
        chose takes the slot of `displaced` (dropped), if any, and one with no live
        neighbour that of `split` (`_split_for`); else the refusal changes nothing: no
        token, no entry."""
        if dialled and self.dialled_elsewhere(hello, dialled):
            return None
        room = self.room_for(hello)
        gone = (
            None
            if room or not configured
            else displaced(self.live, self.chosen(), hello.listen_address)
        )
        if gone is not None:
            self.drop(gone, f"its slot went to chosen neighbour {safe_text(hello.node_id)!r}")
        elif not room and (gone := self._split_for(hello)) is not None:
            self.drop(gone, f"its slot went to {safe_text(hello.node_id)!r}, which had none")
        elif not room:
            return None
        peer = self.peers.get(hello.node_id)
        if peer is None:
            self._make_room(hello)  # cannot fail: `room_for` said so
            peer = Peer(node_id=hello.node_id, address=hello.listen_address or dialled)
            self.peers[hello.node_id] = peer
        elif not dialled and bytes(hello.session) != peer.token_out:
            peer.token_prev, peer.token_in = peer.token_used or peer.token_in, new_token()
        if dialled:
            token = self.pending_tokens.pop(dialled, None)
            if token is not None and token != peer.token_in:
                peer.token_prev, peer.token_in = peer.token_in, token
        peer.configured = peer.configured or configured
        if host:
            peer.host = host
        if hello.listen_address:
            peer.address = hello.listen_address
        peer.token_out = bytes(hello.session)
        in_step = peer.live and peer.expected_seq is not None and peer.expected_seq == hello.seq + 1
        if not in_step:
            # what it queued followed another copy (a restart): never applied to this one
            self._forget_copy(peer)
            # a delta with seq 1 is relative to the shared seeded init: a copy held at
            # the init takes the peer's seq-1 delta (it may have been built just before
            # this handshake, as ours may), and a later one is out of step there and
            # asks for a keyframe (`Inbox`), as a forgotten copy's would
            if hello.seq <= 1:
                self.node.add_peer(peer.node_id)
                peer.expected_seq = 1
            peer.send_keyframe = self.progress.seq > 1
            if not peer.live:
                log.info("neighbour %s (%s) joined the live set", peer.node_id, peer.address)
                peer.crl_told = -1  # a new session (a restart?): told our list's number again
                if peer.proven:  # it delivered before: a new grace (one that never did: none)
                    peer.quiet_since = time.monotonic()
                self.progress.wake()  # a round waiting for it, or for anyone
        peer.live = True
        peer.left_after = None
        peer.missed = 0
        peer.dials = 0
        peer.claimed_round, peer.seq, peer.degree = hello.round, hello.seq, hello.live_degree
        peer.release = hello.package_version[:RELEASE]
        peer.crl_number = hello.crl_number
        self.heard_from(peer)
        self.metrics.neighbors.set(len(self.live))
        return peer

    def _split_for(self, hello: pb.Hello) -> Peer | None:
        """The peer `split` names for `hello` where it has no live neighbour, that
        peer's slot frees room for it, and no link was split for `SPLIT_SECONDS`; the
        split is counted from now."""
        now = self.clock()
        if hello.live_degree or now - self.split_at < SPLIT_SECONDS:
            return None
        gone = split(self.live, self.chosen())
        if gone is None or not self.room_for(hello, freed=gone):
            return None
        self.split_at = now
        return gone

    def dialled_elsewhere(self, welcome: pb.Hello, dialled: str) -> bool:
        """Whether `welcome`, the answer to a dial of `dialled`, claims a live id from
        another address than that entry's: `dialled` is not the entry's address, or the
        Welcome names another listen address (the rule an inbound Hello gets, "live at
        another address"). Where the id is not live, anyone may claim it, anywhere."""
        peer = self.peers.get(welcome.node_id)
        if peer is None or not peer.live:
            return False
        listen = welcome.listen_address
        return dialled != peer.address or bool(listen and listen != peer.address)

    def room_for(self, hello: pb.Hello, freed: Peer | None = None) -> bool:
        """Whether `admit` takes `hello` in (it changes nothing): its id is live, or a
        live slot is free and, for a new id, so is an entry of the table or one held
        by a peer that is not live (`_make_room` evicts it). `freed`: as if that live
        peer were dropped first (`release_silent`)."""
        peer = self.peers.get(hello.node_id)
        if peer is not None and peer.live:
            return True
        live = sum(p.live and p is not freed for p in self.peers.values())
        if live >= self.max_neighbors:
            return False  # a known id that is not live takes a slot too
        if peer is not None or len(self.peers) < self.max_known:
            return True
        return any(not p.live or p is freed for p in self.peers.values())

    def _make_room(self, hello: pb.Hello) -> None:
        """Prune, merge a stale entry at the newcomer's address, evict if full (the
        longest-unseen peer that is not live: `room_for` says there is one)."""
        self.prune()
        if hello.listen_address:
            old = self.by_address(hello.listen_address)
            if old is not None and not old.live:
                self._forget(old)
        idle = [p for p in self.peers.values() if not p.live]
        if len(self.peers) >= self.max_known and idle:
            self._forget(min(idle, key=lambda p: p.heard))

    def prune(self, now: float | None = None) -> None:
        """Forget peers that are not live and were unheard for `FORGET_SECONDS` of
        `clock` (`now`: its reading), but those that `finished` (a full table still
        evicts them, `_make_room`)."""
        now = self.clock() if now is None else now
        for p in [p for p in self.peers.values() if not (p.live or self.finished(p))]:
            if now - p.heard > FORGET_SECONDS:
                self._forget(p)

    def heard_from(self, peer: Peer) -> None:
        """`peer` was just heard from (a Hello, a validated payload): its stay counts
        from now (`heard`, by `clock`; `status` shows it as a wall-clock time)."""
        peer.heard = self.clock()

    def _forget(self, peer: Peer) -> None:
        self._forget_copy(peer)
        self.peers.pop(peer.node_id, None)
        if peer.channel is not None:
            self.transport.close_later(peer.channel, self.close_grace)

    def silent(self, now: float | None = None) -> list[Peer]:
        """Live peers that delivered no validated payload for `silence_limit` s of this
        node's rounds (none before its first round), the longest silent first."""
        if self.rounds_began is None:
            return []
        now = time.monotonic() if now is None else now
        began = self.rounds_began

        def since(p: Peer) -> float:
            return max(p.quiet_since, began)

        return sorted((p for p in self.live if now - since(p) > self.silence_limit), key=since)

    def release_silent(self, hello: pb.Hello) -> Peer | None:
        """Drop the longest silent live peer (`silent`) when that, and only that, lets
        `admit` take `hello` in (`room_for`); it, or None (nothing dropped). Logged by
        the caller (the handshake, rate-limited)."""
        silent = self.silent()
        if not silent or self.room_for(hello) or not self.room_for(hello, freed=silent[0]):
            return None
        self.drop(silent[0], "silent: its slot was released", quiet=True)
        return silent[0]

    def drop(self, peer: Peer, why: str, quiet: bool = False) -> None:
        """Take `peer` out of the live set; its public copy is forgotten (`quiet`: the
        caller logs it). `why` may carry what the peer sent (an error's details): it is
        logged escaped and bounded."""
        if peer.live and not quiet:
            log.warning("neighbour %s left the live set: %s", peer.node_id, safe_text(why, WHY))
        peer.live = False
        self.redial.dropped(peer, time.monotonic())
        self._forget_copy(peer)
        self.metrics.neighbors.set(len(self.live))
        if peer.channel is not None:  # it may sit in reconnect backoff: a new one on return
            self.transport.close_later(peer.channel, self.close_grace)
            peer.channel, peer.stub = None, None

    def leave(self, peer: Peer, why: str, after_mix: bool, left_after: int | None = None) -> None:
        """A neighbour said goodbye (after its round `left_after`, when known: the
        caller bounds it); with `after_mix` its payload of the round in progress still
        counts and it is dropped by `drop_leaving` after the mix."""
        if left_after is not None:
            peer.left_after = left_after
        if after_mix:
            self.leaving[peer.node_id] = why
        else:
            self.drop(peer, why)

    def finished(self, peer: Peer) -> bool:
        """Whether `peer` is past this node's last training exchange (`finish_round`, 0:
        never) by its leave notice's round, or, without one since it joined, by its
        handshake's claim: it has finished its rounds and will not come back for ours."""
        past = peer.claimed_round if peer.left_after is None else peer.left_after
        return self.finish_round > 0 and past >= self.finish_round

    def all_finished(self) -> bool:
        """Whether every known peer `finished` (false with none known)."""
        peers = self.all()
        return bool(peers) and all(self.finished(p) for p in peers)

    def drop_leaving(self) -> None:
        for pid, why in self.leaving.items():
            peer = self.peers.get(pid)
            if peer is not None:
                self.drop(peer, why)
        self.leaving.clear()

    def forget_all_copies(self) -> None:
        """After this node's public copy jumped (catch-up): every peer needs a keyframe,
        and sends one (its queued deltas are dropped)."""
        for p in self.peers.values():
            p.send_keyframe = True
            p.expected_seq = None
            self.copy_forgotten(p.node_id)

    def _forget_copy(self, peer: Peer) -> None:
        """Forget `peer`'s public copy: the core's, its sequence, its queued payloads;
        a push checked meanwhile is not queued (`copy` moved on)."""
        self.node.forget_peer(peer.node_id)
        peer.expected_seq = None
        peer.copy += 1
        self.copy_forgotten(peer.node_id)

    # ------------------------------------------------------------ re-dialling
    def due_for_dial(self, now: float | None = None) -> list[Peer]:
        """Peers not live whose backoff has passed and that may still be dialled (not
        one that `finished`: it will not come back for this node's rounds); each
        one returned is counted as dialled (its next backoff doubles) and is due again
        that backoff after `now`, until `dial_ended` restarts the wait from the end."""
        now = time.monotonic() if now is None else now
        self.prune()
        return self.redial.due(self.all(), now, skip=self.finished)

    def dial_ended(self, peer: Peer, now: float | None = None) -> None:
        """A dial of `peer` (from `due_for_dial`) ended at `now` (monotonic; by default
        the clock): unless it joined, its backoff counts from then, so a dial slow to
        fail or be refused (up to its timeout) does not shorten the wait."""
        self.redial.ended(peer, time.monotonic() if now is None else now)

    async def close(self) -> None:
        for p in self.peers.values():
            if p.channel is not None:
                await p.channel.close()
