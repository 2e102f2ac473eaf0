"""The servicer a node binds with before its model has loaded.

A node binds its port first (a port in use fails at once), then loads data and model.
Meanwhile every RPC of the Swarm service answers UNAVAILABLE "still loading its
model"; `open(service)` then hands each call to the real servicer. Every method of
the service is forwarded (from the proto's descriptor), so a new RPC needs nothing
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from declora.node.rpc_failure import LOADING
from declora.proto import pb, pb_grpc

SWARM = pb.DESCRIPTOR.services_by_name["Swarm"]


class LoadingGate(pb_grpc.SwarmServicer):
    """UNAVAILABLE ("still loading its model") until `open`, then the real servicer."""

    def __init__(self) -> None:
        self.service: pb_grpc.SwarmServicer | None = None

    def open(self, service: pb_grpc.SwarmServicer) -> None:
        self.service = service

    async def ready(self, context: grpc.aio.ServicerContext) -> Any:
        """The real servicer, or abort the call while loading."""
        if self.service is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, LOADING)
        return self.service


def _forward(name: str) -> Callable[..., Any]:
    """A method that waits for the service, then hands the call over (a streaming
    reply too: the service writes it with `context.write`)."""

    async def forward(self: LoadingGate, request: Any, context: grpc.aio.ServicerContext) -> Any:
        service = await self.ready(context)
        return await getattr(service, name)(request, context)

    return forward


for _method in SWARM.methods:
    setattr(LoadingGate, _method.name, _forward(_method.name))
