"""Who may join: identity, Hellos, refusal reasons, dialling and reconnecting.

- `check_hello` is the rule (pure): same protocol version, swarm, fingerprint and
  gradient-tracking setting, a non-empty id that is not this node's; anything else is
  refused with a reason the operator can act on;
- with a swarm secret every Hello, Welcome, pull and leave notice must carry a valid
  mac (`Auth`); a refusal is counted (`bad_auth`, `replay`, `stale_nonce`) and a
  stranger learns nothing about this node; without one, a signed Hello or Welcome is
  refused too ("'a' uses --swarm-secret, this node has none"), so a swarm whose nodes
  disagree about the secret refuses on both sides and neither counts the other
  towards `--min-peers`;
- every number and id in a Hello is bounded (`identity`) before it is used; a
  refused Welcome carries the reason and nothing about this node;
- a Hello names its receiver (the address dialled; a Welcome: the dialler's id) and
  carries a session token the receiver must present in later calls; with a swarm
  secret a Hello for another receiver is refused, so a signed Hello seen on the wire
  cannot be replayed to another node;
- with mTLS, a node id must be its certificate's common name, and the CLI's
  certificate (`cli`) may only read Status: checked on a Hello (the caller's
  certificate) and, when dialling, on the Welcome (the certificate the server presents,
  read by a TLS connection of its own: `TlsFiles.server_name`);
- a Hello's `listen_address` is `host:port` only (an IPv4 or [IPv6] literal or a DNS
  name, port 1-65535): never another gRPC target (`unix:`, `dns:///`, a list), so a
  peer cannot make this node dial a local socket or look up a name of its choosing;
- a Hello for an id that is live at another address is refused, and so is one from
  another remote host (the IP of `context.peer()`) than the one the id's accepted
  Hellos came from (or, for a peer this node dialled, its address's IP; one dialled
  by DNS name and never heard from has no known host: only a renewal is accepted)
  unless it repeats the session this node holds for that id (a renewal; only the
  peer knows it); a re-handshake without that session gets a fresh token, never the
  one issued before, and the token of the peer's last validated payload stays valid
  (`PeerTable.admit`);
- refused Hellos are logged in full at most `REFUSALS_LOGGED` times a minute, then
  counted and summed up in one line (`RefusalLog`); the `handshake` counter has them all;
- `dial` admits a peer only when its Welcome is authentic, names this node and
  passes `check_hello` (how each dial ended is recorded by `startup.DialLog`); a
  Welcome accepted there but refused here is recorded as "not joining: ..." and
  followed by a Leave, so the peer drops this node again;
- a Welcome for an id that is live here is refused ("live at another address") unless
  the address dialled is that id's own and the Welcome names no other
  (`PeerTable.dialled_elsewhere`): a server this node was made to dial cannot take
  over a live neighbour's entry, nor have its token offered in later Hellos; a
  neighbour restarted at its own address still renews, and one that is not live may
  come back at a new address; it counts as a refusal for the dial backoff;
- the reconnect loop re-dials known peers that are not live with the peer table's
  backoff, and candidates not in the table on every call, except one whose live node
  refused the handshake (`DialBackoff`: 2 s doubling to 8 s, forgotten on success);
  one where nothing answers yet (not listening, still loading) is found at once; an
  unexpected error is logged, never swallowed, and the loop goes on.

What open mode (no swarm secret, no mTLS) can and cannot protect. Nothing in a Hello
proves who sent it, so the remote host is the only evidence: while a neighbour is
live, a third party on another host can neither take over its entry nor receive its
token (its Hello is refused: "live from another host"; the Welcome of a server of its
that this node dials: "live at another address"), nor push, pull or leave in its
name (no token). A third party on the neighbour's own host (every node of a local lab
shares 127.0.0.1), or one that can spoof source addresses or read the traffic (tokens
travel in clear), can handshake in its name and push with the fresh token it gets
(it never learns the neighbour's own token, which stays valid beside it, though its
Hello's session replaces the one this node pushes with: the neighbour renews); and
anyone may claim the id of a neighbour that is not live. Only a swarm secret or mTLS
binds an id to a key. The host check needs the caller's `context.peer()`
(`answer(..., peer=)`); where the servicer passes none, only the address check holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

import grpc

from declora.node import PROTOCOL_VERSION, __version__, logs
from declora.node.address import address_problem, endpoints, ip_of, split_address
from declora.node.daemon.peers import BACKOFF_FIRST, BACKOFF_MAX_CONFIGURED, Peer, PeerTable
from declora.node.daemon.state import Progress
from declora.node.daemon.status import Counters
from declora.node.daemon.transport import Transport
from declora.node.discovery import Discovery, select_neighbors
from declora.node.identity import (
    MAX_DEGREE,
    MAX_ROUND,
    MAX_SEQ,
    node_id_problem,
    shown,
)
from declora.node.limits import peer_host
from declora.node.logs import REFUSALS_LOGGED as REFUSALS_LOGGED  # re-exported
from declora.node.methods import DEFAULT_METHOD
from declora.node.security import AuthError, Signed, SignedT, SwarmAuth, TlsError
from declora.node.settings import NodeSettings
from declora.proto import pb, pb_grpc

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0
DIAL_TIMEOUT = 5.0
CLI_CERT = "cli"  # the common name `declora-node certs` gives the CLI's certificate
SAME_SECRET = "give every node the same secret"
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


def address_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of host:port `address`; None for a DNS name or a malformed address."""
    try:
        return ip_of(split_address(address)[0])
    except ValueError:
        return None


_LOCALHOST = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def same_host(a: str, b: str) -> bool:
    """Whether two remote hosts are one: equal IPs (IPv4-mapped IPv6 as IPv4), or
    127.0.0.1 and ::1 (localhost either way; other loopback addresses, 127.0.0.2 and
    on, count as hosts of their own, as in the per-host limits); other text as is."""
    ia, ib = ip_of(a), ip_of(b)
    if ia is None or ib is None:
        return a == b
    return ia == ib or {ia, ib} <= _LOCALHOST


class DialBackoff:
    """When a candidate address whose live node refused this node's handshake may be
    dialled again: `BACKOFF_FIRST` s after the first refusal, doubling with each
    refusal in a row, at most `BACKOFF_MAX_CONFIGURED` s (as the peer table's backoff
    for configured peers). An address without an entry is always due; only `refused`
    adds or lengthens one, `succeeded` forgets it, and `keep` forgets those of
    addresses no longer offered (`connect_known`: candidates not in the peer table),
    so there is at most one entry per candidate."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, float]] = {}  # address: (refusals, next dial)

    def due(self, address: str, now: float) -> bool:
        """Whether `address` may be dialled at `now` (monotonic seconds)."""
        entry = self.entries.get(address)
        return entry is None or now >= entry[1]

    def next_dial(self, address: str) -> float | None:
        """When `address` is due next; None: it has no entry (always due)."""
        entry = self.entries.get(address)
        return None if entry is None else entry[1]

    def refused(self, address: str, now: float) -> float:
        """Count a refusal of a dial of `address` at `now`; the seconds to wait."""
        count = self.entries.get(address, (0, 0.0))[0] + 1
        wait = min(BACKOFF_FIRST * 2 ** min(count - 1, 16), BACKOFF_MAX_CONFIGURED)
        self.entries[address] = (count, now + wait)
        return wait

    def succeeded(self, address: str) -> None:
        """A dial of `address` joined: its entry is forgotten."""
        self.entries.pop(address, None)

    def keep(self, addresses: Iterable[str]) -> None:
        """Forget the entries of addresses not among `addresses`."""
        offered = set(addresses)
        for address in [a for a in self.entries if a not in offered]:
            del self.entries[address]


class Auth:
    """The swarm secret's signatures; everything passes unchanged without a secret."""

    def __init__(self, secret: SwarmAuth | None, counters: Counters) -> None:
        self.secret = secret
        self.counters = counters
        self.refusals = RefusalLog("unauthenticated messages")

    def sign(self, msg: SignedT) -> SignedT:
        """`msg` with a nonce and mac when a swarm secret is set, else unchanged."""
        return msg if self.secret is None else self.secret.sign(msg)

    def sign_payload(self, header: pb.PayloadHeader, data: bytes) -> pb.PayloadHeader:
        return header if self.secret is None else self.secret.sign_payload(header, data)

    def refusal(self, msg: Signed, what: str) -> str:
        """'' when no secret is set or `msg` is authentic and fresh; else the reason,
        counted (`bad_auth`, `replay`, `stale_nonce`) and logged."""
        if self.secret is None:
            return ""
        try:
            self.secret.verify(msg)
        except AuthError as exc:
            self.counters.count(exc.counter)  # logged here, bounded: each `what` differs
            self.refusals.warning("refused a message: %s: %s", what, exc.reason)
            return exc.reason
        return ""


RECIPE_KEYS = (
    *("model", "task", "rank", "alpha", "targets", "max_length", "seed", "labels"),
    *("method", "deca_blocks", "deca_block_rounds"),  # DECA's only when it runs
    *("lora_dropout", "rslora", "dora", "quantize", "lr_schedule", "warmup_steps"),
    *("rounds", "local_steps"),  # the span of a schedule: compared when both state it
    *("gossip_steps", "weighting", "validation_fraction", "dedupe"),  # `Recipe.agreed_facts`
)
# the value of a key the spec omits when it is the default (see `LoraSpec.as_dict`,
# `Recipe.agreed_facts`)
RECIPE_DEFAULTS = {
    **{"lora_dropout": "0.0", "rslora": "False", "dora": "False", "quantize": "none"},
    **{"lr_schedule": "constant", "warmup_steps": "0", "gossip_steps": "1"},
    **{"weighting": "nodes", "validation_fraction": "0.0", "dedupe": "True"},
}
SCHEDULE_SPAN = ("rounds", "local_steps")


def recipe_facts(spec: dict[str, object], labels: tuple[str, ...]) -> dict[str, str]:
    """What a Hello says the fingerprint is made of, as text (see `recipe_differences`)."""
    facts = {k: str(spec[k]) for k in RECIPE_KEYS if k in spec}
    facts["targets"] = ",".join(map(str, spec.get("targets", ()) or ()))  # type: ignore[call-overload]
    facts["labels"] = ",".join(labels)
    facts["method"] = str(spec.get("method", DEFAULT_METHOD))  # the spec omits the default
    return {**RECIPE_DEFAULTS, **facts}


def recipe_differences(
    theirs: dict[str, str], ours: dict[str, str], where: tuple[str, str] = ("there", "here")
) -> str:
    """The options that differ, each with the peer's and this node's value, the two
    sides called `where` (a refusal names both nodes: it is read on both sides)."""
    out = []
    theirs, ours = {**RECIPE_DEFAULTS, **theirs}, {**RECIPE_DEFAULTS, **ours}
    for key in RECIPE_KEYS:
        if key in SCHEDULE_SPAN and not (key in theirs and key in ours):
            continue
        a, b = theirs.get(key, "?"), ours.get(key, "?")
        if a != b:
            out.append(
                f"--{key.replace('_', '-')} is {shown(a, 60)} {where[0]}, {shown(b, 60)} {where[1]}"
            )
    return "; ".join(out)


def check_hello(
    h: pb.Hello,
    *,
    node_id: str,
    swarm_id: str,
    fingerprint: str,
    gradient_tracking: bool,
    recipe: dict[str, str] | None = None,
) -> str:
    """'' when `h` may join this node's swarm, else the reason it may not; a recipe
    mismatch names the options that differ on both sides, by node id (the reason is
    logged here and read by the peer)."""
    sides = (f"at {shown(h.node_id, 40)}", f"at {node_id!r}")
    if h.protocol_version != PROTOCOL_VERSION:
        return (
            f"protocol version {h.protocol_version} != {PROTOCOL_VERSION} "
            f"(peer runs declora {shown(h.package_version, 40) if h.package_version else '?'}, "
            f"this node {__version__})"
        )
    if h.swarm_id != swarm_id:
        return f"swarm {shown(h.swarm_id)} != {swarm_id!r}"
    if h.fingerprint != fingerprint:
        differ = recipe_differences(dict(h.recipe), recipe or {}, sides)
        if differ:
            return f"the swarm's recipe differs: {differ}"
        return (
            f"fingerprint {shown(h.fingerprint)} != {fingerprint}: the base model's weights "
            "or the tensor schema differ (the same --model files everywhere?)"
        )
    if h.gradient_tracking != gradient_tracking:
        theirs, ours = ("on", "off") if h.gradient_tracking else ("off", "on")
        return (
            f"gradient tracking is {theirs} {sides[0]} and {ours} {sides[1]}: start every "
            "node of the swarm with the same --gradient-tracking"
        )
    problem = node_id_problem(h.node_id)
    if problem:
        return problem
    if h.node_id == node_id:
        return f"node id {h.node_id!r} is this node's own id"
    if h.round > MAX_ROUND or h.seq > MAX_SEQ or h.live_degree > MAX_DEGREE:
        return f"round {h.round}, seq {h.seq} or degree {h.live_degree} out of range"
    if len(h.listen_address) > 300 or len(h.session) > 64 or len(h.receiver) > 300:
        return "listen address, session or receiver too long"
    if h.listen_address and (problem := address_problem(h.listen_address)):
        return f"listen address {problem}"
    if len(h.recipe) > 32 or any(len(k) > 64 or len(v) > 4096 for k, v in h.recipe.items()):
        return "recipe too long"
    return ""


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
        self.fingerprint = fingerprint
        self.recipe = recipe
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

    def hello(self, receiver: str = "", session: bytes = b"") -> pb.Hello:
        """This node's Hello for `receiver` with the token it must present to us;
        signed (with a fresh nonce) when a swarm secret is set."""
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
                listen_address=s.advertise,
                seq=self.progress.seq,
                gradient_tracking=s.gradient_tracking,
                receiver=receiver,
                session=session,
                recipe=self.recipe,
            )
        )

    def check(self, h: pb.Hello) -> str:
        """`check_hello` against this node."""
        s = self.settings
        return check_hello(
            h,
            node_id=s.node_id,
            swarm_id=s.swarm_id,
            fingerprint=self.fingerprint,
            gradient_tracking=bool(s.gradient_tracking),
            recipe=self.recipe,
        )

    def secret_mismatch(self, h: pb.Hello, who: str) -> str:
        """Why a signed Hello or Welcome cannot join this open-mode node ('' when this
        node has a secret, whose check is `Auth.refusal`, or `h` carries no mac): the
        sender uses a swarm secret, so it refuses this node's unsigned messages; refused
        here too, so that neither side counts the other as a neighbour."""
        if self.auth.secret is not None or not (h.mac or h.nonce):
            return ""
        return f"{who} uses --swarm-secret, this node has none: {SAME_SECRET}"

    def names_me(self, receiver: str) -> bool:
        """Whether `receiver` (a Hello's) is this node: its id, advertised or listen
        address. Enforced with a swarm secret, where the mac makes it binding."""
        s = self.settings
        return self.auth.secret is None or receiver in (s.node_id, s.advertise, s.listen)

    def answer(
        self, request: pb.Hello, cert_name: str | None = None, peer: str | None = None
    ) -> pb.Welcome:
        """The Welcome for a peer's Hello; admits the peer when it may join.

        `cert_name`: the common name of the caller's TLS certificate (mTLS), else None;
        `peer`: the caller's `context.peer()` (its remote host is bound to the id
        while the id is live), None where unknown. A refusal carries its reason only;
        an accepted Welcome carries a session token issued for this Hello alone."""
        who = shown(request.node_id or "?")
        refusal = self.auth.refusal(request, f"handshake from {who}")
        if refusal:  # nothing about this node for a stranger
            if not request.mac:  # the operator's mistake, read on both sides
                refusal += f" ({who} has none, this node has one: {SAME_SECRET})"
            return pb.Welcome(accepted=False, reason=f"not authenticated: {refusal}")
        host = peer_host(peer) if peer else ""
        reason = (
            self.secret_mismatch(request, who)
            or self.check(request)
            or self._identity_refusal(request, cert_name, host)
        )
        if reason:
            self.counters.count("handshake")
            self.refusals.warning("refused handshake from %s: %s", who, reason)
            return pb.Welcome(accepted=False, reason=reason)
        admitted = self._admit(request, host=host)
        if admitted is None:
            return pb.Welcome(accepted=False, reason="node has its maximum of neighbours")
        return pb.Welcome(
            accepted=True, node=self.hello(receiver=request.node_id, session=admitted.token_in)
        )

    def _identity_refusal(self, h: pb.Hello, cert_name: str | None, host: str = "") -> str:
        if cert_name == CLI_CERT:
            return "the CLI's certificate may only read Status"
        if cert_name is not None and cert_name != h.node_id:
            return f"node id {shown(h.node_id)} is not the certificate's name {shown(cert_name)}"
        if not self.names_me(h.receiver):
            return (
                f"this Hello is for {shown(h.receiver)}, not this node: dial its advertised "
                f"address {self.settings.advertise}"
            )
        ip = address_ip(h.listen_address)
        own = h.listen_address in (self.settings.advertise, self.settings.listen)
        if own and not (ip is not None and ip.is_unspecified):  # 0.0.0.0:7070 twice: fine
            return f"listen address {shown(h.listen_address)} is this node's own"
        known = self.peers.get(h.node_id)
        if known is None or not known.live:
            return ""
        if known.address != h.listen_address:
            return f"node id {shown(h.node_id)} is live at another address"
        renewal = bool(h.session) and h.session == known.token_out
        if not host or renewal:
            return ""
        dialled = address_ip(known.address)  # a peer this node dialled calls from there
        expected = known.host or ("" if dialled is None else str(dialled))
        if not expected:  # dialled by name, never called: its host is unknown
            return f"node id {shown(h.node_id)} is live and only it can renew (its session)"
        if not same_host(host, expected):
            return f"node id {shown(h.node_id)} is live from another host"
        return ""

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
        channel = self.transport.channel(address)
        hello = self.hello(receiver=address, session=self.peers.token_for_dial(address))
        try:
            try:
                welcome = await pb_grpc.SwarmStub(channel).Handshake(hello, timeout=DIAL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                why = f"{exc.code().name} {logs.safe_text(exc.details() or '', 300)}".strip()
                log.debug("handshake with %s failed: %s", address, why)
                return None, exc.code() in REFUSING_CODES
            if not welcome.accepted:
                log.warning(
                    "%s refused the handshake: %s", address, logs.safe_text(welcome.reason, 300)
                )
                return None, True
            node = welcome.node
            if self.auth.refusal(node, f"the welcome of {address}"):
                return None, True
            reason = self.secret_mismatch(node, shown(node.node_id or address)) or self.check(node)
            if (
                not reason
                and self.auth.secret is not None
                and node.receiver != self.settings.node_id
            ):
                reason = f"its welcome is for {shown(node.receiver)}, not this node"
            if not reason and self.peers.dialled_elsewhere(node, address):
                self.answered_as[address] = node.node_id  # not dialled while that id is live
                reason = f"node id {shown(node.node_id)} is live at another address"
            if not reason:
                reason = await self._certificate_refusal(address, node.node_id)
            if reason:
                log.warning("not joining %s: %s", address, reason)
                await self._refused_welcome(channel, address, node, reason)
                return None, True
        finally:
            await channel.close()
        peer = self._admit(node, dialled=address, configured=configured)
        if peer is not None and peer.address != address:  # another name for its address
            self.answered_as[address] = peer.node_id
        return peer, False

    async def _certificate_refusal(self, address: str, node_id: str) -> str:
        """Under mTLS: '' when the server at `address` presents the certificate of
        `node_id` (what its Welcome claims), else why not; '' without mTLS."""
        tls = getattr(self.transport, "tls", None)
        if tls is None:
            return ""
        try:
            host, port = split_address(address)
            name = await tls.server_name(host, port, DIAL_TIMEOUT)
        except (ValueError, TlsError) as exc:  # TlsError is a ValueError
            return f"cannot check its certificate: {exc}"
        if name == CLI_CERT:
            return "it serves with the CLI's certificate, which may only read Status"
        if name != node_id:
            return f"node id {shown(node_id)} is not its certificate's name {shown(name)}"
        return ""

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

    def _admit(self, hello: pb.Hello, **how: Any) -> Peer | None:
        """`PeerTable.admit`, once; where there is no room for `hello`, a silent
        neighbour's slot is released for it first (`PeerTable.release_silent`, only
        when that makes room), logged rate-limited. A refusal changes nothing."""
        released = self.peers.release_silent(hello)
        if released is not None:
            self.releases.warning(
                "released the slot of neighbour %s (no valid payload for %.0f s) for %s",
                released.node_id,
                time.monotonic() - max(released.quiet_since, self.peers.rounds_began or 0.0),
                shown(hello.node_id),
            )
        return self.peers.admit(hello, **how)

    def candidates(self) -> list[str]:
        """Addresses discovery offers: unnamed ones, and the chosen named ones."""
        if self.discovery is None:
            return []
        found = self.discovery.peers()
        named = [p for p in found if p.node_id]
        s = self.settings
        chosen = select_neighbors(named, s.node_id, s.max_neighbors) if named else []
        addresses = [p.address for p in found if not p.node_id] + [p.address for p in chosen]
        return list(dict.fromkeys(addresses))

    async def connect_known(self, now: float | None = None) -> None:
        """Handshake with known peers due a re-dial (`PeerTable.due_for_dial`) and with
        every candidate not in the peer table, except one whose node refused the last
        dial and is not yet due again (`backoff`), and another name for a live
        neighbour's address: one that resolves to the same IP and port (`--peers
        localhost:7401` for 127.0.0.1:7401), or whose last answer came from an id that
        is live now (`answered_as`); dialled, it would be refused as "live at another
        address", and the Leave that follows would end the link. A candidate where
        nothing answers is dialled on every call. `now`: monotonic seconds (default:
        the clock)."""
        now = time.monotonic() if now is None else now
        candidates = self.candidates()
        for p in self.peers.all():  # one that introduced itself at a configured address
            p.configured = p.configured or p.address in candidates
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
            self._dial_candidate(a, now) for a in fresh if self.backoff.due(a, now)
        ]
        dials += [self.dial(p.address, configured=p.configured) for p in due]
        if dials:
            await asyncio.gather(*dials)

    async def _dial_candidate(self, address: str, now: float) -> None:
        """Dial candidate `address`: a refusal lengthens its backoff, a join forgets it."""
        peer, refused = await self._dial(address, configured=True)
        if peer is not None:
            self.backoff.succeeded(address)
        elif refused:
            wait = self.backoff.refused(address, now)
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
