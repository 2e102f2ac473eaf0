"""The gRPC face of a daemon: each RPC handed to the part that owns it.

Every refusal carries a status code and a reason and is counted. Before the owning
part sees a call, this servicer checks what is the same for every RPC:
- concurrency: each RPC kind has its own pool (`POOLS`; pushes: `--max-concurrent-
  streams`, at most `per_host` of them from one remote network, `limits.host_key`), so
  a flood of one kind never starves Status or Handshake; a push's first message (its
  header, which `inbox` checks names a live neighbour) must come within
  `HEADER_SECONDS`, and while it has not, the stream may give its place to a newer
  one (`Pools.push`): streams that send nothing cannot keep a neighbour's push out;
- rate limits (`limits`), keyed by the remote address for handshakes, pulls and
  Status (`limits.STATUS_PER_MINUTE`: a Status flood from one address, the swarm open or
  not, is refused before it costs a reply; the state digest is hashed off the
  event loop, once per state: `digests.StateDigests`);
- identity: under mTLS the caller's certificate name must be the node id it claims
  (the CLI's certificate may only read Status); a Pull or a Leave must come from a
  live neighbour and carry the session token this node gave it and this node's id;
  with a swarm secret, Status requests must be signed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from declora.node.daemon.admission import CLI_CERT
from declora.node.identity import shown
from declora.node.limits import host_key, limited, peer_host
from declora.node.wire import WireError
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from declora.node.daemon.daemon import Parts

log = logging.getLogger(__name__)

# a pull serves the full adapter only: keyframes travel by Push, built with the exchange
# they belong to (a Kill-and-Revive keyframe names that exchange's modules)
PULL_KINDS = (pb.PAYLOAD_KIND_UNSPECIFIED, pb.PAYLOAD_KIND_STATE)
POOLS = {"Handshake": 32, "Pull": 8, "Leave": 16, "Status": 16}  # Push: settings
# a push's header must come within this (or --stream-idle-seconds, if shorter): it is
# its first message, well under 1 MiB, sent at once (a second at the slowest link assumed)
HEADER_SECONDS = 3.0
PULL_SECONDS = 30.0  # a state must be read within max(this, --round-deadline)


def pool_total(max_push_streams: int) -> int:
    """RPCs the server may run at once: every pool full (gRPC's own cap)."""
    return max_push_streams + sum(POOLS.values())


@dataclass(eq=False)
class PushSlot:
    """One push stream's place in the pool: `waiting` for its header until it comes,
    `cut` once the pool took the place back (it then ends at its next read)."""

    host: str
    order: int  # admission order: the oldest waiting stream gives way first
    waiting: bool = True
    cut: bool = False
    timer: asyncio.Timeout | None = None  # its wait for the header, while it waits


class Pools:
    """RPCs in flight by kind, and pushes by remote network; refuses beyond.

    Pushes: at most the pool's size in flight, `per_host` from one network. A push is
    waiting until its first message (its header) has come in full (`HeaderFirst`). When
    the pool is full, a new push takes the place of a waiting one (cut, RESOURCE_EXHAUSTED
    `rate_limited`): the oldest of the network with the most waiting, if that is more
    than the newcomer's own network has; else it is refused. So streams that send no
    header, or drip one, from any number of networks hold places only until a newer
    push wants them: a neighbour (which sends its header at once) is refused, or cut
    before its header came, only while its own network has as many waiting as any."""

    def __init__(self, push_streams: int, per_host: int) -> None:
        self.limits = {**POOLS, "Push": push_streams}
        self.per_host = per_host
        self.in_use: dict[str, int] = {}
        self.push_hosts: dict[str, int] = {}
        self.waiting: dict[str, list[PushSlot]] = {}  # by network, oldest first
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
    def push(self, host: str) -> Iterator[PushSlot]:
        """A place for one push from network `host`, held until the block ends or the
        slot is `cut`; the caller reports its header with `header_came`."""
        if self.push_hosts.get(host, 0) >= self.per_host:
            raise limited(f"{self.per_host} pushes from {host} already in flight")
        if self.in_use.get("Push", 0) >= self.limits["Push"]:
            self._make_room(host)
        self.admitted += 1
        slot = PushSlot(host, self.admitted)
        self.waiting.setdefault(host, []).append(slot)
        self._count(host, 1)
        try:
            yield slot
        finally:
            self.header_came(slot)
            if not slot.cut:
                self._count(host, -1)

    def header_came(self, slot: PushSlot) -> None:
        """`slot`'s stream is no longer waiting for its header (idempotent)."""
        if slot.waiting:
            slot.waiting = False
            queue = self.waiting[slot.host]
            queue.remove(slot)
            if not queue:
                del self.waiting[slot.host]

    def _make_room(self, host: str) -> None:
        """Cut a waiting stream for a newcomer from `host`, or refuse it."""
        own = len(self.waiting.get(host, ()))
        most = max(self.waiting.values(), key=lambda q: (len(q), -q[0].order), default=[])
        if len(most) <= own:
            raise limited(f"{self.limits['Push']} Push calls already in flight")
        slot = most[0]
        self.header_came(slot)
        slot.cut = True
        self._count(slot.host, -1)
        if slot.timer is not None and not slot.timer.expired():  # else it ends at once
            slot.timer.reschedule(asyncio.get_running_loop().time())

    def _count(self, host: str, n: int) -> None:
        self.in_use["Push"] = self.in_use.get("Push", 0) + n
        left = self.push_hosts.get(host, 0) + n
        if left:
            self.push_hosts[host] = left
        else:
            del self.push_hosts[host]


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


class SwarmService(pb_grpc.SwarmServicer):
    """Thin servicer over a daemon's parts."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        s = parts.settings
        self.pools = Pools(s.max_concurrent_streams, max(16, 2 * s.max_neighbors))
        self.header_seconds = min(HEADER_SECONDS, s.stream_idle_seconds)

    async def _refuse(self, context: grpc.aio.ServicerContext, exc: WireError) -> None:
        self.parts.counters.refused(exc)
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
            host = peer_host(context.peer())
            with self.pools.push(host_key(host)) as slot:
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
        refusal = self.parts.auth.refusal(request, f"{what} from {shown(request.node_id)}")
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        bad = self._caller_refusal(context, request)
        if bad is not None:
            raise bad

    def _caller_refusal(
        self, context: grpc.aio.ServicerContext, request: pb.PullRequest | pb.LeaveNotice
    ) -> WireError | None:
        """Why a Pull or Leave is not from the live neighbour it names."""
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
        if swarm_id != parts.settings.swarm_id or peer is None or not peer.live:
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
        reading is cut, DEADLINE_EXCEEDED `slow_stream`, and frees its slot)."""
        parts = self.parts
        limit = max(parts.settings.round_deadline, PULL_SECONDS)
        try:
            with self.pools.hold("Pull"):
                await self._member_only(context, request, "pull")
                parts.limits.check_pull(peer_host(context.peer()))
                if request.kind not in PULL_KINDS:
                    raise WireError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"pull serves STATE only (keyframes go by Push), not kind {request.kind}",
                        "bad_kind",
                    )
                chunks = await parts.transfer.state_chunks()  # between training steps
                try:
                    async with asyncio.timeout(limit):
                        for chunk in chunks:
                            await context.write(chunk)
                except TimeoutError:
                    raise WireError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the state was not read within {limit:g}s",
                        "slow_stream",
                    ) from None
        except WireError as exc:
            await self._refuse(context, exc)

    async def Leave(
        self, request: pb.LeaveNotice, context: grpc.aio.ServicerContext
    ) -> pb.LeaveAck:
        parts = self.parts
        try:
            with self.pools.hold("Leave"):
                await self._member_only(context, request, "leave")
                peer = parts.peers.get(request.node_id)
                assert peer is not None
                parts.exchange.on_leave(peer, f"it left after round {request.round}")
                return pb.LeaveAck()
        except WireError as exc:
            await self._refuse(context, exc)
            raise  # unreachable: abort raises

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        try:
            with self.pools.hold("Status"):
                await self._limit(context, self.parts.limits.check_status, context.peer())
                refusal = self.parts.auth.refusal(request, "status request")
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
