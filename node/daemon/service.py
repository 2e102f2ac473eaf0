"""The gRPC face of a daemon: each RPC handed to the part that owns it.

Every refusal carries a status code and a reason and is counted; rate limits
(`limits`) are checked here, before the owning part sees the call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import grpc

from declora.node.wire import WireError
from declora.proto import pb, pb_grpc

if TYPE_CHECKING:
    from declora.node.daemon.daemon import Parts

log = logging.getLogger(__name__)

PULL_KINDS = (pb.PAYLOAD_KIND_UNSPECIFIED, pb.PAYLOAD_KIND_STATE, pb.PAYLOAD_KIND_KEYFRAME)


class SwarmService(pb_grpc.SwarmServicer):
    """Thin servicer over a daemon's parts."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _limit(
        self, context: grpc.aio.ServicerContext, check: Callable[[str], None], key: str
    ) -> None:
        """Abort with RESOURCE_EXHAUSTED (counted `rate_limited`) when `check(key)` refuses."""
        try:
            check(key)
        except WireError as exc:
            self.parts.counters.refused(exc)
            await context.abort(exc.code, exc.reason)

    async def Handshake(self, request: pb.Hello, context: grpc.aio.ServicerContext) -> pb.Welcome:
        await self._limit(context, self.parts.limits.check_handshake, context.peer())
        return self.parts.handshaker.answer(request)

    async def Push(
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.PushAck:
        try:
            return await self.parts.exchange.receive(request_iterator)
        except WireError as exc:
            self.parts.counters.refused(exc)
            await context.abort(exc.code, exc.reason)
            raise  # unreachable: abort raises

    async def Pull(
        self, request: pb.PullRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Chunk]:
        parts = self.parts
        refusal = parts.auth.refusal(request, f"pull from {request.node_id or '?'}")
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        known = parts.peers.get(request.node_id) is not None
        if request.swarm_id != parts.settings.swarm_id or not known:
            parts.counters.count("no_handshake")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "pull needs a handshake first")
        await self._limit(context, parts.limits.check_pull, request.node_id)
        if request.kind not in PULL_KINDS:
            parts.counters.count("bad_kind")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"pull serves STATE or KEYFRAME, not kind {request.kind}",
            )
        for chunk in parts.exchange.state_chunks(request.kind or pb.PAYLOAD_KIND_STATE):
            yield chunk

    async def Leave(
        self, request: pb.LeaveNotice, context: grpc.aio.ServicerContext
    ) -> pb.LeaveAck:
        parts = self.parts
        refusal = parts.auth.refusal(request, f"leave notice from {request.node_id or '?'}")
        if refusal:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, refusal)
        peer = parts.peers.get(request.node_id)
        if peer is not None and request.swarm_id == parts.settings.swarm_id:
            parts.exchange.on_leave(peer, f"it left after round {request.round}")
        return pb.LeaveAck()

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusReply:
        return self.parts.status(request.include_digest)
