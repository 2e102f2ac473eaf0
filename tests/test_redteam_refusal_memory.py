"""A refused call lets go of what its caller sent at once (`SwarmService._refuse`).

gRPC's abort keeps its exception on the call's state, which the handler's frame holds,
so the abort's traceback makes a cycle; the refusal (the abort's context) and the
frames of its traceback, holding the parsed message, then live until a garbage
collection. A parsed 1 MB header is 5 MB: 60,000-tensor headers, 8 at a time for
15 s, took a node from 0.5 to 3.4 GB before (`tests/test_attacks.py` 12)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace

import grpc

from declora.node.daemon.service import SwarmService
from declora.node.wire import WireError


class Sent:
    """Stands for a parsed message the caller sent."""


class Context:
    """What matters of gRPC's: `abort` raises an exception it keeps."""

    def __init__(self) -> None:
        self.aborted: Exception | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = Exception(details)
        raise self.aborted


def read(refs: list[weakref.ref[Sent]]) -> None:
    message = Sent()  # held by this frame, as `read_stream` holds its chunk
    refs.append(weakref.ref(message))
    raise WireError(grpc.StatusCode.INVALID_ARGUMENT, "tensor schema differs", "wrong_schema")


async def handler(service: object, context: Context, refs: list[weakref.ref[Sent]]) -> None:
    try:
        read(refs)
    except WireError as exc:
        await SwarmService._refuse(service, context, exc)  # type: ignore[arg-type]


def test_a_refused_message_is_freed_without_a_garbage_collection() -> None:
    counters = SimpleNamespace(refused=lambda exc: None)
    service = SimpleNamespace(parts=SimpleNamespace(counters=counters))
    refs: list[weakref.ref[Sent]] = []
    gc.disable()
    try:
        for _ in range(3):
            try:
                asyncio.run(handler(service, Context(), refs))
            except Exception as exc:  # the abort, as gRPC raises it
                assert "tensor schema differs" in str(exc)
        alive = sum(ref() is not None for ref in refs)
    finally:
        gc.enable()
    assert alive == 0, f"{alive} of {len(refs)} refused messages still held"
