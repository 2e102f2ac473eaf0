"""The gRPC face of a daemon: each RPC handed to the part that owns it.

Every refusal carries a status code and a reason and is counted. Before the owning
part sees a call, this servicer checks what is the same for every RPC:
- concurrency: each RPC kind has its own pool (`POOLS`; pushes: `--max-concurrent-
  streams`, at least every live neighbour's kept places: `push_places`), so a flood
  of one kind never starves Status or Handshake. A push's first message (its
  header, which `inbox` checks names a live neighbour) must come within
  `header_seconds`: 3 s, or twice the time the largest correct header for this node's
  adapter takes at `PUSH_PACE` when longer, at most `--stream-idle-seconds`. A push
  from a live neighbour's IP takes a kept place while that IP has one free
  (`STREAMS_PER_PEER` per neighbour there): it is never cut for a newer push. Any
  other push counts towards its remote network's share (`limits.host_key`) and, until
  its header came, may be cut for a newer push (`Pools.push` has the rule). Anyone
  sharing a neighbour's IP shares its kept places. The Pull pool has a place for
  every live neighbour (`--max-neighbors`, at least `POOLS`' 8), and a Pull leaves a
  place free for each other live neighbour id that holds none (`Pools.pull`),
  counted once the caller is known to be the live neighbour it names: a member's ids,
  at one IP or at many (8 ids at 8 loopback IPs, one Pull each, held all 8 places),
  leave every other live neighbour its catch-up; the place of an id that left the
  live set is cut for a live one that needs it (ids minted one after another, each
  live for one Pull, held every place for the Pulls' time limit);
- rate limits (`limits`), keyed by the remote address for handshakes, Leaves (a
  bucket of their own at the handshakes' rate), pulls and Status
  (`limits.STATUS_PER_MINUTE`: a Status flood from one address, the swarm open or
  not, is refused before it costs a reply; the state
  digest is hashed off the event loop, once per state: `digests.StateDigests`); each
  before a swarm secret's mac is checked, so one address's signed calls cannot fill
  the replay cache (`security.SwarmAuth`);
- identity: under mTLS the caller's certificate name must be the node id it claims
  (the CLI's certificate may only read Status); a Pull or a Leave must come from a
  live neighbour and carry the session token this node gave it and this node's id;
  with a swarm secret, Status requests must be signed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from declora.node.daemon.admission import CLI_CERT, address_ip
from declora.node.daemon.auth import caller_refusal
from declora.node.daemon.first_message import ANSWERS_PER_NEIGHBOUR, STREAMS_PER_NEIGHBOUR
from declora.node.daemon.inbox import PUSH_PACE, STREAMS_PER_PEER, header_bytes
from declora.node.daemon.revocation_spread import list_chunks
from declora.node.identity import MAX_ROUND, shown
from declora.node.limits import address_key, group_key, host_key, limited, peer_host
from declora.node.wire import WireError
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from declora.node.daemon.daemon import Parts

log = logging.getLogger(__name__)

# a pull serves the full adapter only: keyframes travel by Push, built with the exchange
# they belong to (a Kill-and-Revive keyframe names that exchange's modules)
PULL_KINDS = (pb.PAYLOAD_KIND_UNSPECIFIED, pb.PAYLOAD_KIND_STATE)
# Push: settings
POOLS = {"Handshake": 32, "Pull": 8, "Leave": 16, "Status": 16, "Revocations": 8}
HEADER_SECONDS = 3.0  # a push's header must come within this at least (`header_seconds`)
PULL_SECONDS = 30.0  # a state must be read within max(this, --round-deadline)


def header_seconds(expected_bytes: int, idle_seconds: float) -> float:
    """How long a push's header (its first message) may take to come: `HEADER_SECONDS`,
    or twice `expected_bytes` (the largest correct header for this node's adapter,
    `inbox.header_bytes`: 89 KB for a 70B model's all-linear LoRA) at `PUSH_PACE`, the
    slowest link a push may use, when longer; never more than `idle_seconds`
    (--stream-idle-seconds)."""
    at_pace = 2 * expected_bytes / PUSH_PACE.bytes_per_second
    return min(max(HEADER_SECONDS, at_pace), idle_seconds)


def pull_places(max_neighbors: int) -> int:
    """The Pull pool's size: a place for every live neighbour, at least `POOLS`'."""
    return max(POOLS["Pull"], max_neighbors)


def push_places(max_push_streams: int, max_neighbors: int) -> int:
    """The Push pool's size: `--max-concurrent-streams`, but at least the kept places of
    `max_neighbors` live neighbours (`STREAMS_PER_PEER` each, `Pools.push`): kept
    pushes cut nothing that is not waiting, so a smaller pool refused a live
    neighbour's push (busy) while the others' held it full."""
    return max(max_push_streams, STREAMS_PER_PEER * max_neighbors)


def pool_total(max_push_streams: int, max_neighbors: int = 0) -> int:
    """RPCs the server may run at once (gRPC's own cap): every pool full (`push_places`,
    `pull_places`), and the answers kept for `max_neighbors` live neighbours not yet
    taken (`first_message`: beside its `UNREAD` and `STREAMS`)."""
    pushes = push_places(max_push_streams, max_neighbors)
    pools = pushes + sum(POOLS.values()) - POOLS["Pull"] + pull_places(max_neighbors)
    return pools + (ANSWERS_PER_NEIGHBOUR + STREAMS_PER_NEIGHBOUR) * max_neighbors


@dataclass(eq=False)
class PushSlot:
    """One push stream's place in the pool: `waiting` for its header until it comes,
    `cut` once the pool took the place back (it then ends at its next read); `kept`:
    a place of a live neighbour's IP (`Pools.push`), never cut."""

    host: str  # its remote network (`limits.host_key`)
    ip: str  # its remote IP (`limits.address_key`)
    group: str  # its network as `Pools._make_room` counts it (`limits.group_key`)
    order: int  # admission order: the oldest waiting stream gives way first
    kept: bool = False
    waiting: bool = True
    cut: bool = False
    timer: asyncio.Timeout | None = None  # its wait for the header, while it waits


@dataclass(eq=False)
class PullHold:
    """One Pull's place (`Pools.pull`): its caller's id; `cut` once the pool gave the
    place to a live neighbour (its caller left the live set), which ends its writes
    (`timer`, while it writes: `write_within`)."""

    node_id: str
    cut: bool = False
    timer: asyncio.Timeout | None = None


class Pools:
    """RPCs in flight by kind, and pushes by remote network; refuses beyond.

    Pushes: at most the pool's size hold a place. A push from an IP that `allowance`
    says is a live neighbour's takes a `kept` place while that IP holds fewer kept
    places than its allowance: it is never cut and needs no room in its network's
    `per_host`. Any other push is waiting until its first message (its header) came
    in full (`HeaderFirst`), and a waiting push may be cut (RESOURCE_EXHAUSTED
    `rate_limited`) for a newer one: when its network holds `per_host` places, the
    newcomer from that network cuts the network's oldest waiting push; when the pool
    is full, a newcomer cuts the oldest waiting push of the network with the most
    waiting (the /64s of an IPv6 /48 counted as one: `limits.group_key`), a kept
    newcomer always, another only if that network has more waiting than the
    newcomer's own. With nothing to cut, the newcomer is refused."""

    def __init__(self, push_streams: int, per_host: int, pulls: int = POOLS["Pull"]) -> None:
        self.limits = {**POOLS, "Push": push_streams, "Pull": pulls}
        self.per_host = per_host
        self.in_use: dict[str, int] = {}
        self.push_hosts: dict[str, int] = {}  # places held, not kept, by network
        self.kept: dict[str, int] = {}  # kept places held, by IP
        self.waiting: dict[str, list[PushSlot]] = {}  # not kept, by network, oldest first
        self.pull_ids: Counter[str] = Counter()  # Pull places held, by caller's node id
        self.pull_holds: list[PullHold] = []  # ...oldest first
        self.admitted = 0

    @contextmanager
    def hold(self, kind: str) -> Iterator[None]:
        """A place for one call of `kind` (not Push), held until the block ends."""
        if self.in_use.get(kind, 0) >= self.limits[kind]:
            raise limited(f"{self.limits[kind]} {kind} calls already in flight")
        self.in_use[kind] = self.in_use.get(kind, 0) + 1
        try:
            yield
        finally:
            self.in_use[kind] -= 1

    @contextmanager
    def pull(self, node_id: str, live_ids: Iterable[str]) -> Iterator[PullHold]:
        """A Pull place for live neighbour `node_id`, held until the block ends, while
        more places are free than the other ids of `live_ids` (the live neighbours')
        that hold none: whatever ids or IPs a member holds, every other live
        neighbour keeps a place (the pool has one for each, `SwarmService`); the nodes
        of a lab (one IP) take a place each. An id that left the live set keeps its
        place until a live id needs it: the oldest such place is then `cut` (a member
        minting ids, each live for one Pull then leaving, held every place for the
        Pulls' time limit). Failing that, a live id holding none takes the oldest place
        of the id holding the most, if that id holds more than one (a member's 2 ids
        that took 7 places before another neighbour joined kept it out); an id holding
        one place is never cut for another."""
        live = set(live_ids)
        others = sum(1 for n in live if n != node_id and not self.pull_ids[n])
        while self.limits["Pull"] - self.in_use.get("Pull", 0) <= others:
            stale = next((h for h in self.pull_holds if h.node_id not in live), None)
            if stale is None and not self.pull_ids[node_id]:
                most = max(self.pull_ids, key=self.pull_ids.__getitem__, default="")
                if self.pull_ids[most] > 1:
                    stale = next(h for h in self.pull_holds if h.node_id == most)
            if stale is None:
                raise limited(
                    f"{self.in_use.get('Pull', 0)} Pull calls in flight, {others} place(s) "
                    "kept for other neighbours"
                )
            self._release(stale)
            stale.cut = True
            if stale.timer is not None:  # it ends at once; else at its first write
                stale.timer.reschedule(asyncio.get_running_loop().time())
        hold = PullHold(node_id)
        self.pull_holds.append(hold)
        self.pull_ids[node_id] += 1
        self.in_use["Pull"] = self.in_use.get("Pull", 0) + 1
        try:
            yield hold
        finally:
            if not hold.cut:
                self._release(hold)

    def _release(self, hold: PullHold) -> None:
        self.pull_holds.remove(hold)
        self.in_use["Pull"] -= 1
        self.pull_ids[hold.node_id] -= 1
        if not self.pull_ids[hold.node_id]:
            del self.pull_ids[hold.node_id]

    @contextmanager
    def push(self, host: str, ip: str = "", allowance: int = 0) -> Iterator[PushSlot]:
        """A place for one push from IP `ip` of network `host`, held until the block
        ends or the slot is `cut`; the caller reports its header with `header_came`.
        `allowance`: the kept places `ip` may hold (0: none)."""
        kept = self.kept.get(ip, 0) < allowance
        group = group_key(ip) if ip else host
        if not kept and self.push_hosts.get(host, 0) >= self.per_host:
            own = self.waiting.get(host)
            if not own:
                raise limited(f"{self.per_host} pushes from {host} already in flight")
            self._cut(own[0])
        elif self.in_use.get("Push", 0) >= self.limits["Push"]:
            self._make_room(group, kept)
        self.admitted += 1
        slot = PushSlot(host, ip, group, self.admitted, kept)
        if not kept:
            self.waiting.setdefault(host, []).append(slot)
        self._count(slot, 1)
        try:
            yield slot
        finally:
            self.header_came(slot)
            if not slot.cut:
                self._count(slot, -1)

    def header_came(self, slot: PushSlot) -> None:
        """`slot`'s stream is no longer waiting for its header (idempotent)."""
        if slot.waiting:
            slot.waiting = False
            if not slot.kept:
                queue = self.waiting[slot.host]
                queue.remove(slot)
                if not queue:
                    del self.waiting[slot.host]

    def _make_room(self, group: str, kept: bool) -> None:
        """Cut a waiting stream for a newcomer of `group` (`PushSlot.group`; `kept`: it
        takes a kept place), or refuse it: the oldest of the group with the most
        waiting (an IPv6 /48: one site's /64s count as one network)."""
        groups: dict[str, list[PushSlot]] = {}  # waiting, by `group`, oldest first
        for slot in sorted((s for q in self.waiting.values() for s in q), key=lambda s: s.order):
            groups.setdefault(slot.group, []).append(slot)
        own = 0 if kept else len(groups.get(group, ()))
        most = max(groups.values(), key=lambda q: (len(q), -q[0].order), default=[])
        if len(most) <= own:
            raise limited(f"{self.limits['Push']} Push calls already in flight")
        self._cut(most[0])

    def _cut(self, slot: PushSlot) -> None:
        self.header_came(slot)
        slot.cut = True
        self._count(slot, -1)
        if slot.timer is not None and not slot.timer.expired():  # else it ends at once
            slot.timer.reschedule(asyncio.get_running_loop().time())

    def _count(self, slot: PushSlot, n: int) -> None:
        self.in_use["Push"] = self.in_use.get("Push", 0) + n
        counts, key = (self.kept, slot.ip) if slot.kept else (self.push_hosts, slot.host)
        left = counts.get(key, 0) + n
        if left:
            counts[key] = left
        else:
            del counts[key]


class HeaderFirst:
    """A push's messages, the first (its header) within `seconds` and before its
    `slot` is cut (else WireError: DEADLINE_EXCEEDED `idle_stream`, or
    RESOURCE_EXHAUSTED `rate_limited`); `pools` is told when it came."""

    def __init__(
        self, stream: AsyncIterator[pb.Chunk], slot: PushSlot, pools: Pools, seconds: float
    ) -> None:
        self.it = aiter(stream)
        self.slot = slot
        self.pools = pools
        self.seconds = seconds

    def __aiter__(self) -> HeaderFirst:
        return self

    async def __anext__(self) -> pb.Chunk:
        slot = self.slot
        if not slot.waiting and not slot.cut:
            return await anext(self.it)
        try:
            if slot.cut:
                raise TimeoutError
            async with asyncio.timeout(self.seconds) as slot.timer:
                return await anext(self.it)
        except TimeoutError:
            if slot.cut:
                raise limited(
                    f"{self.pools.limits['Push']} Push calls in flight: this one, without a "
                    "header yet, gave way to a newer one"
                ) from None
            raise WireError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"stream idle for more than {self.seconds:g}s before its header",
                "idle_stream",
            ) from None
        finally:
            slot.timer = None
            self.pools.header_came(slot)


def cert_name(context: grpc.aio.ServicerContext) -> str | None:
    """The common name of the caller's TLS certificate; None without TLS."""
    try:
        auth = context.auth_context()
    except Exception:  # not every context (in-memory tests) has one
        return None
    names = auth.get("x509_common_name") if auth else None
    if not names:
        return None
    return bytes(names[0]).decode("utf-8", "replace")


async def write_within(
    context: grpc.aio.ServicerContext,
    chunks: Iterable[pb.Chunk],
    limit: float,
    what: str,
    hold: PullHold | None = None,
) -> None:
    """Write `chunks` to the caller; WireError DEADLINE_EXCEEDED (`slow_stream`) when it
    has not read them all within `limit` seconds, RESOURCE_EXHAUSTED once its `hold`
    (a Pull's place) is cut."""
    try:
        async with asyncio.timeout(limit) as timer:
            if hold is not None:
                if hold.cut:
                    raise TimeoutError
                hold.timer = timer
            for chunk in chunks:
                await context.write(chunk)
    except TimeoutError:
        if hold is not None and hold.cut:
            raise limited(f"{what}: its Pull place went to a live neighbour") from None
        raise WireError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{what} was not read within {limit:g}s",
            "slow_stream",
        ) from None


class SwarmService(pb_grpc.SwarmServicer):
    """Thin servicer over a daemon's parts."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        s = parts.settings
        per_host = max(16, 2 * s.max_neighbors)
        pushes = push_places(s.max_concurrent_streams, s.max_neighbors)
        if pushes > s.max_concurrent_streams:
            log.warning(
                "--max-concurrent-streams %d is below the %d pushes --max-neighbors %d "
                "live neighbours keep open (%d each): serving %d at once; set "
                "--max-concurrent-streams %d or more to say so",
                *(s.max_concurrent_streams, pushes, s.max_neighbors, STREAMS_PER_PEER),
                *(pushes, pushes),
            )
        self.pools = Pools(pushes, per_host, pull_places(s.max_neighbors))
        self.header_seconds = header_seconds(header_bytes(parts.inbox.me), s.stream_idle_seconds)
        self._live: tuple[tuple[str, str], ...] = ()  # (host, address) of the live peers...
        self._neighbour_ips: Counter[str] = Counter()  # ...and how many live at each IP
        # streamed answers keep places for live neighbours' IPs (`first_message`), whose
        # refusals Status counts
        parts.handshaker.transport.neighbours = self.neighbours_at
        parts.handshaker.transport.refused = parts.counters.count

    def neighbours_at(self, ip: str) -> int:
        """Live neighbours whose IP is remote IP `ip` (`limits.address_key`): the host
        of its last accepted inbound Hello, else its address's IP; none for a neighbour
        dialled by DNS name that never called."""
        return self.neighbour_ips()[ip]

    def neighbour_ips(self) -> Counter[str]:
        """Live neighbours by remote IP (`neighbours_at`)."""
        live = self.parts.peers.live
        seen = tuple((p.host, p.address) for p in live)
        if seen != self._live:
            ips = (address_key(p.host) if p.host else address_ip(p.address) for p in live)
            self._live, self._neighbour_ips = seen, Counter(str(i) for i in ips if i)
        return self._neighbour_ips

    def allowance(self, ip: str) -> int:
        """Kept push places (`Pools.push`) for remote IP `ip`: `STREAMS_PER_PEER` for
        each live neighbour there (`neighbours_at`)."""
        return STREAMS_PER_PEER * self.neighbours_at(ip)

    def _certificate(self, context: grpc.aio.ServicerContext) -> None:
        """Raise WireError for a caller whose certificate may call nothing under mTLS
        (no common name, revoked by --tls-crl: `auth.caller_refusal`)."""
        bad = caller_refusal(context, self.parts.handshaker.transport.tls)
        if bad is not None:
            raise bad

    async def _refuse(self, context: grpc.aio.ServicerContext, exc: WireError) -> None:
        """Count `exc` and abort the call with its status. Its traceback goes first: its
        frames hold what the caller sent (a parsed 1 MB header is 5 MB) until a garbage
        collection breaks the cycle the abort makes, and refused headers held so took a
        node from 0.5 to 3.4 GB (60,000-tensor headers, 8 at a time for 15 s)."""
        self.parts.counters.refused(exc)
        exc.__traceback__ = None
        await context.abort(exc.code, exc.reason)

    async def _limit(
        self, context: grpc.aio.ServicerContext, check: Callable[[str], None], key: str
    ) -> None:
        """Abort with RESOURCE_EXHAUSTED (counted `rate_limited`) when `check(key)` refuses."""
        try:
            check(key)
        except WireError as exc:
            await self._refuse(context, exc)

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        try:
            self._certificate(context)
            with self.pools.hold("Handshake"):
                await self._limit(context, self.parts.limits.check_handshake, context.peer())
                return self.parts.handshaker.answer(request, cert_name(context), context.peer())
        except WireError as exc:
            await self._refuse(context, exc)
            raise  # unreachable: abort raises

    async def Push(
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.PushAck:
        try:
            self._certificate(context)
            host = peer_host(context.peer())
            ip = address_key(host)
            with self.pools.push(host_key(host), ip, self.allowance(ip)) as slot:
                stream = HeaderFirst(request_iterator, slot, self.pools, self.header_seconds)
                return await self.parts.inbox.receive(stream, cert_name(context), host)
        except WireError as exc:
            await self._refuse(context, exc)
            raise  # unreachable: abort raises

    async def _member_only(
        self,
        context: grpc.aio.ServicerContext,
        request: pb.PullRequest | pb.LeaveNotice,
        what: str,
    ) -> None:
        """Abort a Pull or Leave that is not authentic (swarm secret); raise WireError
        for one that is not from the live neighbour it names (`_caller_refusal`)."""
        host = peer_host(context.peer())
        refusal = self.parts.auth.refusal(request, f"{what} from {shown(request.node_id)}", host)
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        bad = self._caller_refusal(context, request)
        if bad is not None:
            raise bad

    def _caller_refusal(
        self, context: grpc.aio.ServicerContext, request: pb.PullRequest | pb.LeaveNotice
    ) -> WireError | None:
        """Why a Pull or Leave is not from the live neighbour it names (a Leave may come
        from a known one that is not live: a neighbour that dropped this node for
        lagging, finishing, says goodbye with the session it holds)."""
        parts = self.parts
        node_id, swarm_id = request.node_id, request.swarm_id
        session, receiver_id = request.session, request.receiver_id
        name = cert_name(context)
        if name is not None and (name != node_id or name == CLI_CERT):
            why = (
                "the CLI's certificate may only read Status"
                if name == CLI_CERT
                else (
                    f"a call in the name of {shown(node_id)} from the certificate of {shown(name)}"
                )
            )
            return WireError(grpc.StatusCode.PERMISSION_DENIED, why, "bad_identity")
        peer = parts.peers.get(node_id)
        known = peer is not None and (peer.live or isinstance(request, pb.LeaveNotice))
        if swarm_id != parts.settings.swarm_id or peer is None or not known:
            return WireError(
                grpc.StatusCode.PERMISSION_DENIED, "needs a handshake first", "no_handshake"
            )
        if not peer.token_ok(session) or receiver_id != parts.settings.node_id:
            return WireError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"a call in the name of {shown(node_id)} without its session: renew the handshake",
                "bad_session",
            )
        return None

    async def Pull(self, request: pb.PullRequest, context: grpc.aio.ServicerContext) -> None:
        """The full state, written chunk by chunk; the Pool slot is held until it is all
        written, at most `max(round_deadline, PULL_SECONDS)` s (a caller that stops
        reading is cut, DEADLINE_EXCEEDED `slow_stream`, and frees its slot; its call
        keeps a place among its network's `first_message.STREAMS_PER_NETWORK`), or until
        a live neighbour takes the place of a caller that left the live set
        (RESOURCE_EXHAUSTED `rate_limited`: `Pools.pull`)."""
        parts = self.parts
        limit = max(parts.settings.round_deadline, PULL_SECONDS)
        try:
            self._certificate(context)
            parts.limits.check_pull(peer_host(context.peer()))  # before the mac is checked
            await self._member_only(context, request, "pull")
            live = (p.node_id for p in parts.peers.live)
            with self.pools.pull(request.node_id, live) as hold:
                if request.kind not in PULL_KINDS:
                    raise WireError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"pull serves STATE only (keyframes go by Push), not kind {request.kind}",
                        "bad_kind",
                    )
                chunks = await parts.transfer.state_chunks()  # between training steps
                await write_within(context, chunks, limit, "the state", hold)
        except WireError as exc:
            await self._refuse(context, exc)

    async def Leave(
        self, request: pb.LeaveNotice, context: grpc.aio.ServicerContext
    ) -> pb.LeaveAck:
        parts = self.parts
        try:
            self._certificate(context)
            with self.pools.hold("Leave"):
                # at the handshakes' rate, before the mac is checked: signed Leaves
                # from one address fill no replay cache (attack 11 flooded them)
                await self._limit(context, parts.limits.check_leave, context.peer())
                await self._member_only(context, request, "leave")
                peer = parts.peers.get(request.node_id)
                assert peer is not None
                left = min(int(request.round), MAX_ROUND)  # a peer's number: bounded
                parts.exchange.on_leave(peer, f"it left after round {left}", left_after=left)
                return pb.LeaveAck()
        except WireError as exc:
            await self._refuse(context, exc)
            raise  # unreachable: abort raises

    async def Revocations(
        self, request: pb.RevocationsRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """This node's revocation list for a live neighbour whose own is older
        (`revocation_spread.list_chunks`: nothing otherwise), within the Status rate;
        a caller that stops reading is cut after `PULL_SECONDS` (`slow_stream`)."""
        try:
            self._certificate(context)
            with self.pools.hold("Revocations"):
                await self._limit(context, self.parts.limits.check_status, context.peer())
                tls, peers = self.parts.handshaker.transport.tls, self.parts.peers
                chunks = list_chunks(tls, peers, cert_name(context), request.crl_number)
                await write_within(context, chunks, PULL_SECONDS, "the revocation list")
        except WireError as exc:
            await self._refuse(context, exc)

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        try:
            self._certificate(context)
            with self.pools.hold("Status"):
                await self._limit(context, self.parts.limits.check_status, context.peer())
                host = peer_host(context.peer())
                refusal = self.parts.auth.refusal(request, "status request", host)
                if refusal:
                    await context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        f"{refusal} (this node answers Status only to holders of the swarm "
                        "secret: set DECLORA_SWARM_SECRET)",
                    )
                return await self.parts.status(request.include_digest)
        except WireError as exc:
            await self._refuse(context, exc)
            raise  # unreachable: abort raises
