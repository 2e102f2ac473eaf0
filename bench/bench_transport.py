"""Adapter push throughput: the daemon's real gRPC path against raw TCP loopback.

The payload is the LoRA r=16 adapter of q_proj and v_proj in a 7B Llama: 32 layers x
2 modules x (A: 16x4096, B: 4096x16) = 8,388,608 float32 values (33.6 MB as fp32).

- gRPC: a server subprocess runs a real `declora.node.daemon.Daemon`'s gRPC server
  (`Daemon._start_server`: the real `SwarmService`, health and reflection, the
  options of `daemon.grpc_options`). Its model and trainer are stand-ins that carry
  only the fingerprint, the tensor schema and the gossip state, so `Push` runs the
  real `Daemon.on_push`: `wire.read_stream` (reassembly, header checks, CRC32), then
  `GossipState.decode_checked` (decode, size and finite checks), then queues it. The
  client is a second `Daemon` whose `_push_one` builds the header (`wire.make_header`,
  CRC32), streams `wire.chunks` of `chunk_kib` over a `grpc.aio` channel and waits
  for the `PushAck`: the time is from the call to the ack, so it includes the
  receiver's checks and decode.
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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from benchlib import free_ports, load_average, median, sigterm_as_exit, stop_processes

from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.codecs import decode, make_codec
from declora.node.gossip import GossipState
from declora.node.settings import NodeSettings

GOAL = 0.5
LAYERS, RANK, HIDDEN = 32, 16, 4096
SWARM, FINGERPRINT = "bench-transport", "bench0000fingerp"
LEN = struct.Struct("<Q")


def llama7b_qv_schema() -> AdapterSchema:
    """32 layers x {q_proj, v_proj} x (lora_A 16x4096, lora_B 4096x16)."""
    specs = []
    for layer in range(LAYERS):
        for module in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            specs.append(TensorSpec(f"{prefix}.lora_A.default.weight", (RANK, HIDDEN)))
            specs.append(TensorSpec(f"{prefix}.lora_B.default.weight", (HIDDEN, RANK)))
    return AdapterSchema(tuple(specs))


def settings(node_id: str, listen: str, chunk_kib: int) -> NodeSettings:
    return NodeSettings(
        node_id=node_id, swarm_id=SWARM, listen=listen, chunk_kib=chunk_kib, round_deadline=120
    )


def stand_in_daemon(node_id: str, listen: str, chunk_kib: int) -> Any:
    """A real `Daemon` with stand-ins for the parts that need a model."""
    from declora.node.daemon import Daemon

    schema = llama7b_qv_schema()
    d = Daemon(settings(node_id, listen, chunk_kib))
    d.lm = SimpleNamespace(fingerprint=FINGERPRINT, schema=schema)
    d.node = SimpleNamespace(
        gossip=GossipState(np.zeros(schema.numel, np.float32), "fp32"),
        bytes_sent=0,
        bytes_received=0,
    )
    d.codec_spec = "fp32"
    return d


# ------------------------------------------------------------------- servers


async def grpc_server(port: int, chunk_kib: int, client_id: str) -> None:
    from declora.node.daemon import Peer

    d = stand_in_daemon("bench-server", f"127.0.0.1:{port}", chunk_kib)
    # the sender has shaken hands: live, and its public copy is known (next seq 1)
    d.peers[client_id] = Peer(node_id=client_id, address="", live=True, expected_seq=1)
    await d._start_server()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        d.inbox.clear()  # only the newest payload matters; keep memory flat
    assert d._server is not None
    await d._server.stop(grace=0.5)


async def drain_server(port: int, chunk_kib: int) -> None:
    """Same server options as the daemon; `Push` reads every chunk and acks, no checks."""
    import grpc

    from declora.node.daemon import grpc_options
    from declora.proto import pb, pb_grpc

    class Drain(pb_grpc.SwarmServicer):
        async def Push(self, request_iterator: Any, context: Any) -> Any:
            received = 0
            async for chunk in request_iterator:
                received += len(chunk.data)
            return pb.PushAck(accepted=received > 0)

    options = grpc_options(settings("drain", f"127.0.0.1:{port}", chunk_kib))
    server = grpc.aio.server(options=options)
    pb_grpc.add_SwarmServicer_to_server(Drain(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=0.5)


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
    """Pushes through `Daemon._push_one`, the daemon's own client path."""

    def __init__(self, port: int, chunk_kib: int, client_id: str) -> None:
        from declora.node.daemon import Peer

        self.d = stand_in_daemon(client_id, "127.0.0.1:1", chunk_kib)
        self.peer = Peer(node_id="bench-server", address=f"127.0.0.1:{port}", live=True)

    async def send(self, data: bytes, codec: str) -> float:
        from declora.proto import pb

        self.d.codec_spec = codec
        self.d.seq += 1
        t0 = time.perf_counter()
        ack = await self.d._push_one(self.peer, 1, pb.PAYLOAD_KIND_DELTA, data, 1)
        elapsed = time.perf_counter() - t0
        if not ack.accepted:
            raise RuntimeError(f"push refused: {ack.reason}")
        return elapsed

    async def close(self) -> None:
        if self.peer.channel is not None:
            await self.peer.channel.close()


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
    schema = llama7b_qv_schema()
    n = schema.numel
    rng = np.random.default_rng(0)
    vec = (rng.standard_normal(n) * 0.01).astype(np.float32)
    fp32 = make_codec("fp32").encode(vec, rng)
    q4_codec = make_codec("q4")
    q4 = q4_codec.encode(vec, rng)
    print(
        f"payload: {len(schema.tensors)} tensors, {n:,} values (LoRA r={RANK} q,v of a "
        f"{LAYERS}-layer, {HIDDEN}-wide Llama); fp32 {len(fp32):,} B, q4 {len(q4):,} B "
        f"({len(q4) / len(fp32):.3f} of fp32); chunks of {args.chunk_kib} KiB"
    )
    print(f"load average at start: {load_average()}")

    grpc_port, drain_port, raw_port = free_ports(3)
    client_id = "bench-client"
    procs: list[subprocess.Popen[bytes]] = []
    raw: RawClient | None = None
    gc: GrpcClient | None = None
    dc: GrpcClient | None = None
    try:
        procs.append(
            spawn_server(
                ["--serve", "grpc", "--port", str(grpc_port), "--chunk-kib", str(args.chunk_kib)]
            )
        )
        procs.append(
            spawn_server(
                ["--serve", "drain", "--port", str(drain_port), "--chunk-kib", str(args.chunk_kib)]
            )
        )
        procs.append(spawn_server(["--serve", "raw", "--port", str(raw_port)]))
        raw = RawClient(raw_port)
        gc = GrpcClient(grpc_port, args.chunk_kib, client_id)
        dc = GrpcClient(drain_port, args.chunk_kib, client_id)
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
        "  (real SwarmService: read_stream + CRC32 + decode_checked before the ack)"
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
    ap.add_argument("--serve", choices=("grpc", "drain", "raw"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve == "raw":
        raw_server(args.port)
        return 0
    run: Callable[[Any], Any]
    try:
        import uvloop  # the daemon runs on uvloop where it is installed

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.serve == "grpc":
        run(grpc_server(args.port, args.chunk_kib, "bench-client"))
        return 0
    if args.serve == "drain":
        run(drain_server(args.port, args.chunk_kib))
        return 0
    with sigterm_as_exit():
        run(measure(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
