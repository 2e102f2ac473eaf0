"""Adapter payloads on the wire: chunked streams, and every check before state.

A push is a stream of `Chunk`s: one `PayloadHeader`, then data chunks of at most
`chunk_bytes`. `read_stream` reassembles it and refuses (with `WireError`, whose
`code` is the gRPC status to answer with) anything malformed: no header first, a
second header, more bytes than announced or than the size limit, a checksum
mismatch, a tensor schema that is not ours, an unknown codec, a `tracker_bytes` that
does not fit. With gradient tracking the payload is the adapter message followed by
`tracker_bytes` of the exchange's z message (`Payload.adapter`, `Payload.tracker`). The
decoded vectors are checked for size and finite values by the gossip and tracking
layers before they are applied.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import grpc

from declora.node.adapter import AdapterSchema
from declora.node.codecs import CodecError, make_codec
from declora.node.security import AuthError, SwarmAuth
from declora.proto import pb


class WireError(Exception):
    """A message refused; `code` is the gRPC status, `reason` the operator's text."""

    def __init__(self, code: grpc.StatusCode, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.counter = counter


@dataclass(frozen=True)
class Payload:
    header: pb.PayloadHeader
    data: bytes

    @property
    def adapter(self) -> bytes:
        """The adapter message (delta, keyframe or state)."""
        return self.data[: len(self.data) - self.header.tracker_bytes]

    @property
    def tracker(self) -> bytes:
        """The gradient-tracking message that follows it (b"" when there is none)."""
        return self.data[len(self.data) - self.header.tracker_bytes :]


def tensor_meta(schema: AdapterSchema) -> list[pb.TensorMeta]:
    return [pb.TensorMeta(name=t.name, shape=list(t.shape), dtype=t.dtype) for t in schema.tensors]


def chunks(header: pb.PayloadHeader, data: bytes, chunk_bytes: int) -> Iterator[pb.Chunk]:
    """The header chunk, then the data in slices of at most `chunk_bytes`."""
    yield pb.Chunk(header=header)
    view = memoryview(data)
    for start in range(0, len(data), chunk_bytes):
        yield pb.Chunk(data=bytes(view[start : start + chunk_bytes]))


def make_header(
    *,
    sender_id: str,
    swarm_id: str,
    fingerprint: str,
    round: int,
    sender_degree: int,
    kind: int,
    codec: str,
    seq: int,
    data: bytes,
    schema: AdapterSchema,
    crc32: int | None = None,
    tracker_bytes: int = 0,
    session: bytes = b"",
    receiver_id: str = "",
) -> pb.PayloadHeader:
    """The header for `data`; pass `crc32` when it is already known (one payload, many peers).

    `tracker_bytes`: how many of the last bytes of `data` are a gradient-tracking message;
    `session`, `receiver_id`: the receiver's token and id (see `PayloadHeader`)."""
    return pb.PayloadHeader(
        sender_id=sender_id,
        swarm_id=swarm_id,
        fingerprint=fingerprint,
        round=round,
        sender_degree=sender_degree,
        kind=kind,  # type: ignore[arg-type]
        codec=codec,
        seq=seq,
        total_bytes=len(data),
        crc32=zlib.crc32(data) if crc32 is None else crc32,
        tensors=tensor_meta(schema),
        tracker_bytes=tracker_bytes,
        session=session,
        receiver_id=receiver_id,
    )


def check_header(
    header: pb.PayloadHeader,
    *,
    swarm_id: str,
    fingerprint: str,
    schema: AdapterSchema,
    max_bytes: int,
) -> None:
    """Refuse a header that cannot belong to this swarm's adapter."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    if header.swarm_id != swarm_id:
        raise WireError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"swarm {header.swarm_id!r} is not this node's swarm {swarm_id!r}",
            "wrong_swarm",
        )
    if header.fingerprint != fingerprint:
        raise WireError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"fingerprint {header.fingerprint!r} != {fingerprint!r}: "
            "another base model or LoRA config",
            "wrong_fingerprint",
        )
    if header.kind not in (pb.PAYLOAD_KIND_DELTA, pb.PAYLOAD_KIND_KEYFRAME, pb.PAYLOAD_KIND_STATE):
        raise WireError(invalid, f"unknown payload kind {header.kind}", "bad_kind")
    if header.tracker_bytes > header.total_bytes or (
        header.tracker_bytes and header.kind == pb.PAYLOAD_KIND_STATE
    ):
        raise WireError(
            invalid,
            f"tracker_bytes {header.tracker_bytes} does not fit a "
            f"{header.total_bytes}-byte payload of kind {header.kind}",
            "malformed",
        )
    if header.total_bytes > max_bytes:
        raise WireError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"payload of {header.total_bytes} bytes exceeds the limit of {max_bytes}",
            "too_large",
        )
    try:
        canonical = make_codec(header.codec).spec
    except CodecError as exc:
        raise WireError(invalid, f"codec: {exc}", "unknown_codec") from exc
    if header.codec != canonical:  # receivers derive the update scale from this string
        raise WireError(
            invalid,
            f"codec {header.codec!r} is not in canonical form {canonical!r}",
            "unknown_codec",
        )
    theirs = [(t.name, tuple(t.shape), t.dtype) for t in header.tensors]
    ours = [(t.name, t.shape, t.dtype) for t in schema.tensors]
    if theirs != ours:
        diff = next(
            (f"{a} != {b}" for a, b in zip(theirs, ours, strict=False) if a != b),
            f"{len(theirs)} tensors, expected {len(ours)}",
        )
        raise WireError(invalid, f"tensor schema differs: {diff}", "wrong_schema")


class ByteBudget:
    """Bytes that all streams being read may buffer together; `take` refuses beyond."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise WireError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.used + n} bytes buffered across streams would exceed {self.limit}",
                "too_large",
            )
        self.used += n

    def give(self, n: int) -> None:
        self.used = max(self.used - n, 0)


async def _next_chunk(it: AsyncIterator[pb.Chunk], idle: float | None) -> pb.Chunk | None:
    try:
        if idle is None:
            return await anext(it)
        return await asyncio.wait_for(anext(it), timeout=idle)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise WireError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"stream idle for more than {idle:g}s",
            "idle_stream",
        ) from None


async def read_stream(
    stream: AsyncIterator[pb.Chunk],
    *,
    swarm_id: str,
    fingerprint: str,
    schema: AdapterSchema,
    max_bytes: int,
    auth: SwarmAuth | None = None,
    on_header: Callable[[pb.PayloadHeader], None] | None = None,
    idle_seconds: float | None = None,
    budget: ByteBudget | None = None,
) -> Payload:
    """Reassemble and verify one pushed payload; raises WireError, keeps nothing.

    With `auth`, the header's mac must cover the header and the data (UNAUTHENTICATED,
    counted `bad_auth`, otherwise). `on_header` may refuse the header (raising
    WireError) before any data is buffered; a stream silent for `idle_seconds` is cut
    (`idle_stream`); the announced size is reserved in `budget` while the stream is
    read and refused when it does not fit."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    header: pb.PayloadHeader | None = None
    parts: list[bytes] = []
    received = 0
    reserved = 0
    it = aiter(stream)
    try:
        while (chunk := await _next_chunk(it, idle_seconds)) is not None:
            which = chunk.WhichOneof("body")
            if which == "header":
                if header is not None:
                    raise WireError(invalid, "a second header in one stream", "malformed")
                check_header(
                    chunk.header,
                    swarm_id=swarm_id,
                    fingerprint=fingerprint,
                    schema=schema,
                    max_bytes=max_bytes,
                )
                if on_header is not None:
                    on_header(chunk.header)
                if budget is not None:
                    budget.take(chunk.header.total_bytes)
                    reserved = chunk.header.total_bytes
                header = chunk.header
            elif which == "data":
                if header is None:
                    raise WireError(invalid, "data before the header", "malformed")
                received += len(chunk.data)
                if received > header.total_bytes:
                    raise WireError(
                        invalid,
                        f"stream carries more than the announced {header.total_bytes} bytes",
                        "malformed",
                    )
                parts.append(chunk.data)
            else:
                raise WireError(invalid, "an empty chunk", "malformed")
    finally:
        if budget is not None:
            budget.give(reserved)
    if header is None:
        raise WireError(invalid, "an empty stream (no header)", "malformed")
    if received != header.total_bytes:
        raise WireError(
            invalid, f"truncated stream: {received} of {header.total_bytes} bytes", "truncated"
        )
    data = b"".join(parts)
    if zlib.crc32(data) != header.crc32:
        raise WireError(invalid, "checksum mismatch", "bad_checksum")
    if auth is not None:
        try:
            auth.verify_payload(header, data)
        except AuthError as exc:
            raise WireError(grpc.StatusCode.UNAUTHENTICATED, exc.reason, exc.counter) from exc
    return Payload(header, data)
