"""Adapter push throughput: the daemon's real gRPC path against raw TCP loopback.

The payload is the LoRA r=16 adapter of q_proj and v_proj in a 7B Llama: 32 layers x
2 modules x (A: 16x4096, B: 4096x16) = 8,388,608 float32 values (33.6 MB as fp32).

- gRPC: a server subprocess serves a `Push` whose receiving path is the daemon's
  (`daemon.exchange.Exchange.receive`) without the round bookkeeping: the public
  `wire.read_stream` (reassembly, header checks, CRC32) and
  `GossipState.decode_checked` (decode, size and finite checks), on a grpc.aio server
  with the daemon's `transport.grpc_options`. The client sends the way
  `Exchange.push_one` does: a `wire.make_header` header (CRC32), then `wire.chunks`
  of `chunk_kib` over a `grpc.aio` channel, and waits for the `PushAck`: the time is
  from the call to the ack, so it includes the receiver's checks and decode. (A
  daemon's adapter comes from a real model, and no model here has an 8M-value
  adapter; the bookkeeping skipped is a few dict updates.)
- gRPC, receiver drains only: the same client against a minimal server with the same
  `grpc_options` whose `Push` only iterates the stream and acks; it separates the
  transport (plus the sender's header and CRC32) from the receiver's checks.
- raw TCP: a server subprocess `recv_into`s a preallocated buffer and answers one
  byte; the client `sendall`s an 8-byte length and the same bytes.

Both run in this one invocation, alternating, on 127.0.0.1. MB = 10**6 bytes. The
goal is gRPC/raw >= 0.5 for fp32. The q4 payload is timed the same way, plus its
encode (sender) and decode (receiver; inside the gRPC time, separately for raw).
Nothing is asserted.

    python bench/bench_transport.py               # ~30 s
    python bench/bench_transport.py --reps 20 --chunk-kib 4096
    python bench/bench_transport.py --smoke       # a few seconds: the paths still work
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import (
    free_ports,
    load_average,
    median,
    serve_until_sigterm,
    sigterm_as_exit,
    stop_processes,
)

from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.codecs import decode, make_codec
from declora.node.gossip import GossipState
from declora.node.settings import NodeSettings

GOAL = 0.5
LAYERS, RANK, HIDDEN = 32, 16, 4096
SWARM, FINGERPRINT = "bench-transport", "bench0000fingerp"
LEN = struct.Struct("<Q")


def llama7b_qv_schema(layers: int = LAYERS) -> AdapterSchema:
    """`layers` (32) x {q_proj, v_proj} x (lora_A 16x4096, lora_B 4096x16)."""
    specs = []
    for layer in range(layers):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            specs.append(TensorSpec(f"{prefix}.lora_A.default.weight", (RANK, HIDDEN)))
            specs.append(TensorSpec(f"{prefix}.lora_B.default.weight", (HIDDEN, RANK)))
    return AdapterSchema(tuple(specs))


def settings(node_id: str, listen: str, chunk_kib: int) -> NodeSettings:
    return NodeSettings(
        node_id=node_id, swarm_id=SWARM, listen=listen, chunk_kib=chunk_kib, round_deadline=120
    )


# ------------------------------------------------------------------- servers


async def serve(port: int, chunk_kib: int, checks: bool, layers: int) -> None:
    """`Push` with the daemon's receiving checks (`checks`), or one that only drains."""
    import grpc

    from declora.node.daemon.transport import grpc_options
    from declora.node.wire import WireError, read_stream
    from declora.proto import pb, pb_grpc

    schema = llama7b_qv_schema(layers)
    gossip = GossipState(np.zeros(schema.numel, np.float32), "fp32")

    class Receiver(pb_grpc.SwarmServicer):
        async def Push(self, request_iterator: Any, context: Any) -> Any:
            if not checks:
                received = 0
                async for chunk in request_iterator:
                    received += len(chunk.data)
                return pb.PushAck(accepted=received > 0)
            try:
                payload = await read_stream(
                    request_iterator,
                    swarm_id=SWARM,
                    fingerprint=FINGERPRINT,
                    schema=schema,
                    max_bytes=1 << 30,
                    auth=None,
                )
            except WireError as exc:
                await context.abort(exc.code, exc.reason)
            h = payload.header
            await asyncio.to_thread(gossip.decode_checked, h.sender_id, payload.adapter, h.codec)
            return pb.PushAck(accepted=True)

    options = grpc_options(settings("server", f"127.0.0.1:{port}", chunk_kib))
    server = grpc.aio.server(options=options)
    pb_grpc.add_SwarmServicer_to_server(Receiver(), server)
    await serve_until_sigterm(server, f"127.0.0.1:{port}")


def raw_server(port: int) -> None:
    with socket.socket() as lsock:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", port))
        lsock.listen(1)
        print("ready", flush=True)
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(64 * 1024 * 1024)
        view = memoryview(buf)
        head = bytearray(LEN.size)
        with conn:
            while True:
                if conn.recv_into(head, LEN.size, socket.MSG_WAITALL) < LEN.size:
                    return
                (size,) = LEN.unpack(head)
                if size > len(buf):
                    buf = bytearray(size)
                    view = memoryview(buf)
                got = 0
                while got < size:
                    n = conn.recv_into(view[got:size])
                    if n == 0:
                        return
                    got += n
                conn.sendall(b"\x01")


# ------------------------------------------------------------------- clients


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> float:
        t0 = time.perf_counter()
        self.sock.sendall(LEN.pack(len(data)))
        self.sock.sendall(data)
        if self.sock.recv(1) != b"\x01":
            raise RuntimeError("raw server closed the connection")
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()


class GrpcClient:
    """Pushes the way `Exchange.push_one` does: header with CRC32, chunks, one ack."""

    def __init__(self, port: int, chunk_kib: int, client_id: str, layers: int) -> None:
        import grpc

        from declora.node.daemon.transport import grpc_options
        from declora.proto import pb_grpc

        options = grpc_options(settings(client_id, "127.0.0.1:1", chunk_kib))
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
        self.stub = pb_grpc.SwarmStub(self.channel)
        self.client_id, self.chunk_bytes, self.seq = client_id, chunk_kib * 1024, 0
        self.schema = llama7b_qv_schema(layers)

    async def send(self, data: bytes, codec: str) -> float:
        from declora.node.wire import chunks, make_header
        from declora.proto import pb

        self.seq += 1
        t0 = time.perf_counter()
        header = make_header(
            sender_id=self.client_id,
            swarm_id=SWARM,
            fingerprint=FINGERPRINT,
            round=1,
            sender_degree=1,
            kind=pb.PAYLOAD_KIND_DELTA,
            codec=codec,
            seq=self.seq,
            data=data,
            schema=self.schema,
        )
        ack = await self.stub.Push(chunks(header, data, self.chunk_bytes), timeout=120)
        elapsed = time.perf_counter() - t0
        if not ack.accepted:
            raise RuntimeError(f"push refused: {ack.reason}")
        return elapsed

    async def close(self) -> None:
        await self.channel.close()


def spawn_server(args: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"server {args} did not start: {line!r}")
    return proc


def timed(fn: Callable[[], object], reps: int) -> float:
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t0)
    return median(xs)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def measure(args: argparse.Namespace) -> None:
    schema = llama7b_qv_schema(args.layers)
    n = schema.numel
    rng = np.random.default_rng(0)
    vec = (rng.standard_normal(n) * 0.01).astype(np.float32)
    fp32 = make_codec("fp32").encode(vec, rng)
    q4_codec = make_codec("q4")
    q4 = q4_codec.encode(vec, rng)
    print(
        f"payload: {len(schema.tensors)} tensors, {n:,} values (LoRA r={RANK} q,v of a "
        f"{args.layers}-layer, {HIDDEN}-wide Llama); fp32 {len(fp32):,} B, q4 {len(q4):,} B "
        f"({len(q4) / len(fp32):.3f} of fp32); chunks of {args.chunk_kib} KiB"
    )
    print(f"load average at start: {load_average()}")

    grpc_port, drain_port, raw_port = free_ports(3)
    client_id = "bench-client"
    procs: list[subprocess.Popen[bytes]] = []
    raw: RawClient | None = None
    gc: GrpcClient | None = None
    dc: GrpcClient | None = None
    server_args = ["--chunk-kib", str(args.chunk_kib), "--layers", str(args.layers)]
    try:
        procs.append(spawn_server(["--serve", "grpc", "--port", str(grpc_port), *server_args]))
        procs.append(spawn_server(["--serve", "drain", "--port", str(drain_port), *server_args]))
        procs.append(spawn_server(["--serve", "raw", "--port", str(raw_port)]))
        raw = RawClient(raw_port)
        gc = GrpcClient(grpc_port, args.chunk_kib, client_id, args.layers)
        dc = GrpcClient(drain_port, args.chunk_kib, client_id, args.layers)
        times: dict[str, list[float]] = {
            k: [] for k in ("raw32", "drain32", "grpc32", "raw4", "grpc4")
        }
        for rep in range(args.warmup + args.reps):
            # alternate, so a change in the machine's load hits both paths alike
            sample = {
                "raw32": raw.send(fp32),
                "drain32": await dc.send(fp32, "fp32"),
                "grpc32": await gc.send(fp32, "fp32"),
                "raw4": raw.send(q4),
                "grpc4": await gc.send(q4, "q4"),
            }
            if rep >= args.warmup:
                for k, v in sample.items():
                    times[k].append(v)
    finally:
        for client in (gc, dc):
            if client is not None:
                await client.close()
        if raw is not None:
            raw.close()
        stop_processes(procs, grace=10.0)

    t = {k: median(v) for k, v in times.items()}
    enc = timed(lambda: q4_codec.encode(vec, np.random.default_rng(1)), max(args.reps // 2, 3))
    dec = timed(lambda: decode(q4), max(args.reps // 2, 3))
    dec32 = timed(lambda: decode(fp32), max(args.reps // 2, 3))
    crc = timed(lambda: zlib.crc32(fp32), max(args.reps // 2, 3))

    print(f"medians of {args.reps} pushes each (after {args.warmup} warm-up), alternating:")
    print("fp32 payload:")
    print(f"  raw TCP    {t['raw32']:.4f}s  {mbps(len(fp32), t['raw32']):8.1f} MB/s")
    print(
        f"  gRPC Push, receiver only drains  {t['drain32']:.4f}s  "
        f"{mbps(len(fp32), t['drain32']):8.1f} MB/s  (ratio to raw {t['raw32'] / t['drain32']:.3f})"
    )
    print(
        f"  gRPC Push  {t['grpc32']:.4f}s  {mbps(len(fp32), t['grpc32']):8.1f} MB/s"
        "  (the daemon's checks: read_stream + CRC32 + decode_checked before the ack)"
    )
    ratio32 = t["raw32"] / t["grpc32"]
    print(
        f"  ratio gRPC/raw (MB/s): {ratio32:.3f}  goal >= {GOAL}: "
        f"{'meets' if ratio32 >= GOAL else 'misses'}"
    )
    print("q4 payload:")
    print(f"  encode (sender)  {enc:.4f}s   decode (receiver) {dec:.4f}s")
    print(f"  raw TCP    {t['raw4']:.4f}s  {mbps(len(q4), t['raw4']):8.1f} MB/s (bytes only)")
    print(
        f"  gRPC Push  {t['grpc4']:.4f}s  {mbps(len(q4), t['grpc4']):8.1f} MB/s "
        "(includes the receiver's decode)"
    )
    ratio4 = t["raw4"] / t["grpc4"]
    print(f"  ratio gRPC/raw (MB/s): {ratio4:.3f}")
    raw_e2e = enc + t["raw4"] + dec
    grpc_e2e = enc + t["grpc4"]
    print(
        f"  end to end (encode + transfer + decode): raw {raw_e2e:.4f}s, gRPC {grpc_e2e:.4f}s "
        f"(ratio {raw_e2e / grpc_e2e:.3f}); vs fp32 gRPC push: {t['grpc32'] / grpc_e2e:.2f}x "
        "faster"
    )
    print(
        f"  fp32-equivalent throughput over gRPC incl. encode/decode: "
        f"{mbps(len(fp32), grpc_e2e):.1f} MB/s"
    )
    print(
        f"CPU work on the fp32 path, timed here: CRC32 of the payload {crc:.4f}s (done once "
        f"by each side), fp32 decode + finite check {dec32:.4f}s"
    )
    print(f"load average at end: {load_average()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10, help="timed pushes per path and payload")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--chunk-kib", type=int, default=1024, help="the daemon's --chunk-kib")
    ap.add_argument("--layers", type=int, default=LAYERS, help="Llama layers of the adapter")
    ap.add_argument(
        "--smoke", action="store_true", help="2 layers, 2 pushes: checks the paths, not speed"
    )
    ap.add_argument("--serve", choices=("grpc", "drain", "raw"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.layers, args.reps, args.warmup = 2, 2, 1
    if args.serve == "raw":
        raw_server(args.port)
        return 0
    run: Callable[[Any], Any]
    try:
        import uvloop  # the daemon runs on uvloop where it is installed

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.serve in ("grpc", "drain"):
        run(serve(args.port, args.chunk_kib, args.serve == "grpc", args.layers))
        return 0
    with sigterm_as_exit():
        run(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
