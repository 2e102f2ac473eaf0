"""Adapter payloads on the wire: chunked streams, and every check before state.

A push is a stream of `Chunk`s: one `PayloadHeader`, then data chunks of at most
`chunk_bytes`. `read_stream` reassembles it and refuses (with `WireError`, whose
`code` is the gRPC status to answer with) anything malformed: no header first, a
second header, more bytes than announced or than the size limit, a checksum
mismatch, a tensor schema that is not ours, an unknown codec, a `tracker_bytes` that
does not fit, a stream idle too long or slower than its `Pace`, bytes beyond the
shared `ByteBudget`. With gradient tracking the payload is the adapter message followed
by `tracker_bytes` of the exchange's z message (`Payload.adapter`, `Payload.tracker`). The
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
from declora.node.identity import shown
from declora.node.security import AuthError, SwarmAuth
from declora.proto import pb

MAX_CODEC = 64  # characters of a codec spec; the longest real one is far shorter


class WireError(Exception):
    """A message refused; `code` is the gRPC status, `reason` the operator's text (any
    string the peer sent in it bounded and escaped, `shown`: it is logged and echoed)."""

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
            f"swarm {shown(header.swarm_id)} is not this node's swarm {shown(swarm_id)}",
            "wrong_swarm",
        )
    if header.fingerprint != fingerprint:
        raise WireError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"fingerprint {shown(header.fingerprint)} != {shown(fingerprint)}: "
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
    if len(header.codec) > MAX_CODEC:  # a codec error names the spec: bound it first
        raise WireError(
            invalid,
            f"codec {shown(header.codec)} of {len(header.codec)} characters is not a codec spec",
            "unknown_codec",
        )
    try:
        canonical = make_codec(header.codec).spec
    except CodecError as exc:
        raise WireError(invalid, f"codec: {exc}", "unknown_codec") from exc
    if header.codec != canonical:  # receivers derive the update scale from this string
        raise WireError(
            invalid,
            f"codec {shown(header.codec)} is not in canonical form {shown(canonical)}",
            "unknown_codec",
        )
    # Counts first: a header may list ~100k tensors within the message limit, and
    # listing them all took 0.3 s of the event loop a header, before any identity check.
    if len(header.tensors) != len(schema.tensors):
        diff = f"{len(header.tensors)} tensors, expected {len(schema.tensors)}"
        raise WireError(invalid, f"tensor schema differs: {diff}", "wrong_schema")
    for t, spec in zip(header.tensors, schema.tensors, strict=True):
        ours = (spec.name, spec.shape, spec.dtype)
        theirs = (t.name, tuple(t.shape[: len(spec.shape) + 1]), t.dtype)  # enough to differ
        if theirs != ours:
            diff = f"{shown(theirs, 200)} != {shown(ours, 200)}"
            raise WireError(invalid, f"tensor schema differs: {diff}", "wrong_schema")


class ByteBudget:
    """Bytes that all streams being read may buffer together; `take` refuses beyond.

    Streams take what has arrived, chunk by chunk, not what their header announces:
    a stream holds only bytes it has sent, so slow or stalled streams cannot starve
    the others (refused RESOURCE_EXHAUSTED, counted `busy`: the node's load, not the
    sender's fault)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise WireError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.used + n} bytes buffered across streams would exceed {self.limit}",
                "busy",
            )
        self.used += n

    def give(self, n: int) -> None:
        self.used = max(self.used - n, 0)


@dataclass(frozen=True)
class Pace:
    """The slowest transfer accepted: a stream must end within `seconds(total_bytes)`
    of its start, `min_seconds` or the announced size at `bytes_per_second`, whichever
    is longer. A sender that trickles (one byte now and then, never idle for long) is
    cut then (DEADLINE_EXCEEDED, `slow_stream`), so it holds a stream slot and its
    buffered bytes for a bounded time."""

    min_seconds: float
    bytes_per_second: float

    def seconds(self, total_bytes: int) -> float:
        return max(self.min_seconds, total_bytes / self.bytes_per_second)


async def _next_chunk(
    it: AsyncIterator[pb.Chunk], idle: float | None, left: float | None, slow: str
) -> pb.Chunk | None:
    """The next chunk (None at the end): cut after `idle` s of silence (`idle_stream`),
    or after `left` s, what remains of the stream's time (`slow_stream`, reason `slow`)."""
    waits = [w for w in (idle, left) if w is not None]
    try:
        if not waits:
            return await anext(it)
        return await asyncio.wait_for(anext(it), timeout=max(min(waits), 0.0))
    except StopAsyncIteration:
        return None
    except TimeoutError:
        if left is not None and (idle is None or left < idle):
            raise WireError(grpc.StatusCode.DEADLINE_EXCEEDED, slow, "slow_stream") from None
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
    pace: Pace | None = None,
) -> Payload:
    """Reassemble and verify one pushed payload; raises WireError, keeps nothing.

    With `auth`, the header's mac must cover the header and the data (UNAUTHENTICATED,
    counted `bad_auth`, otherwise). `on_header` may refuse the header (raising
    WireError) before any data is buffered; a stream silent for `idle_seconds` is cut
    (`idle_stream`), one that has not ended within `pace.seconds` of the announced size
    (never less than `idle_seconds`) too (`slow_stream`); each chunk's bytes are taken
    from `budget` as they arrive (refused when they do not fit, `busy`) and given back
    when the stream ends."""
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    header: pb.PayloadHeader | None = None
    parts: list[bytes] = []
    received = 0
    reserved = 0
    loop = asyncio.get_running_loop()
    start, deadline, slow = loop.time(), None, ""
    it = aiter(stream)
    try:
        while True:
            left = None if deadline is None else deadline - loop.time()
            if (chunk := await _next_chunk(it, idle_seconds, left, slow)) is None:
                break
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
                if pace is not None:
                    total = chunk.header.total_bytes
                    seconds = max(pace.seconds(total), idle_seconds or 0.0)
                    deadline = start + seconds
                    slow = (
                        f"stream too slow: {total} bytes not received within {seconds:g}s "
                        f"(at least {pace.bytes_per_second:g} bytes/s)"
                    )
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
                if budget is not None:
                    budget.take(len(chunk.data))
                    reserved += len(chunk.data)
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
