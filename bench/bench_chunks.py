"""Push throughput on shaped links: the daemon's paced chunks against adaptive ones.

A push's data chunks are at most what arrives in a quarter of `--stream-idle-seconds`
at 32 KiB/s (80 KiB by default: `sending.push_chunk_bytes`). The candidate measured
here (`adaptive_chunk`, not in the daemon: it gained on loopback only) lets them grow,
to a neighbour whose last push was measured fast, to what that quarter carries at
1/`RATE_MARGIN` of the measured rate, at most `--chunk-kib`. This bench pushes one
payload over one gRPC channel (the daemon's `grpc_options`) from namespace 0 to a
receiver in namespace 1 that only drains (`bench_network.Network`: `netemu.py` shapes
each uplink), alternating a push in paced chunks and one in adaptive chunks (sized by
the previous adaptive push's rate, payload bytes over the time from the call to its
ack). The first push of each kind is a warm-up (the adaptive one is not measured yet);
the figure is the median of the others, both kinds from the same run; each row ends
with the 1-minute load average after it. MB = 10**6 bytes. Without root and network
namespaces (and with `--smoke`) it runs on 127.0.0.1 only.

    python bench/bench_chunks.py                      # a few minutes
    python bench/bench_chunks.py --profiles g1,m100 --pushes 6
    python bench/bench_chunks.py --smoke              # seconds: the paths still work
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import netemu
from bench_network import Network, Profile, namespaces_usable, sweep_leftovers
from benchlib import free_ports, load_average, median, serve_until_sigterm, stop_processes

from declora.node.settings import NodeSettings

PROFILES = {
    p.name: p
    for p in (
        Profile("loopback", 0, 0, 0, shaped=False),
        Profile("g1", 1e9, 0.0002, 0),
        Profile("m100", 100e6, 0.005, 0),
        Profile("m10", 10e6, 0.040, 0),
        Profile("m1", 1e6, 0.100, 0.01),
    )
}
SECONDS_A_PUSH = 2.0  # the payload is what the profile's rate moves in this long
MOST_BYTES = 32 * 10**6
PORT = 7450
RATE_MARGIN = 8  # adaptive: a chunk carries a quarter idle's worth at 1/8 the measured rate


def settings(node_id: str) -> NodeSettings:
    return NodeSettings(node_id=node_id, swarm_id="bench-chunks", listen="127.0.0.1:1")


def adaptive_chunk(s: NodeSettings, bytes_per_second: float) -> int:
    """The candidate: the paced size, or more (at most `--chunk-kib`) when the last
    push's rate carries more in a quarter of `--stream-idle-seconds` at 1/RATE_MARGIN."""
    from declora.node.daemon.sending import push_chunk_bytes

    grown = int(bytes_per_second / RATE_MARGIN * s.stream_idle_seconds / 4)
    return max(push_chunk_bytes(s), min(s.chunk_kib * 1024, grown))


async def serve(host: str, port: int) -> None:
    """A `Push` that drains the stream and acks."""
    import grpc

    from declora.node.daemon.transport import grpc_options
    from declora.proto import pb, pb_grpc

    class Receiver(pb_grpc.SwarmServicer):
        async def Push(self, request_iterator: Any, context: Any) -> Any:
            received = 0
            async for chunk in request_iterator:
                received += len(chunk.data)
            return pb.PushAck(accepted=received > 0)

    server = grpc.aio.server(options=grpc_options(settings("server")))
    pb_grpc.add_SwarmServicer_to_server(Receiver(), server)
    await serve_until_sigterm(server, f"{host}:{port}")


async def client(address: str, size: int, pushes: int) -> dict[str, Any]:
    """`pushes` of each kind, alternating: seconds of each and the chunk sizes used."""
    import grpc

    from declora.node.daemon.sending import push_chunk_bytes
    from declora.node.daemon.transport import grpc_options
    from declora.node.wire import chunks
    from declora.proto import pb, pb_grpc

    s = settings("client")
    channel = grpc.aio.insecure_channel(address, options=grpc_options(s))
    stub = pb_grpc.SwarmStub(channel)
    data = os.urandom(size)
    header = pb.PayloadHeader(sender_id="client", round=1)
    out: dict[str, Any] = {"paced": [], "adaptive": [], "chunks": []}
    rate = 0.0
    try:
        for _ in range(pushes):
            for kind in ("paced", "adaptive"):
                chunk = adaptive_chunk(s, rate) if kind == "adaptive" else push_chunk_bytes(s)
                t0 = time.monotonic()
                ack = await stub.Push(chunks(header, data, chunk), timeout=300)
                took = time.monotonic() - t0
                if not ack.accepted:
                    raise RuntimeError("push refused")
                out[kind].append(took)
                if kind == "adaptive":
                    rate = size / took
                    out["chunks"].append(chunk)
    finally:
        await channel.close()
    return out


def spawn(cmd: list[str], prefix: list[str]) -> subprocess.Popen[str]:
    full = [*prefix, sys.executable, str(Path(__file__).resolve()), *cmd]
    return subprocess.Popen(full, stdout=subprocess.PIPE, text=True, start_new_session=True)


def measure(profile: Profile, size: int, pushes: int) -> dict[str, Any]:
    """One profile: the receiver in namespace 1 (or 127.0.0.1), the pushes from 0."""
    with Network(2, profile) if profile.shaped else _Loopback() as net:
        names = getattr(net, "names", None)
        host = netemu.address(1) if names else "127.0.0.1"
        port = PORT if names else free_ports(1)[0]
        ns = (lambda i: ["ip", "netns", "exec", names[i]]) if names else (lambda i: [])
        server = spawn(["--serve", f"{host}:{port}"], ns(1))
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the receiver did not start")
            args = ["--client", f"{host}:{port}", "--size", str(size), "--pushes", str(pushes)]
            run = spawn(args, ns(0))
            out, _ = run.communicate(timeout=900)
            if run.returncode:
                raise RuntimeError(f"the client failed ({run.returncode})")
            return dict(json.loads(out.strip().splitlines()[-1]))
        finally:
            stop_processes([server], grace=5)  # type: ignore[list-item]


class _Loopback:
    def __enter__(self) -> _Loopback:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def row(profile: Profile, size: int, res: dict[str, Any]) -> str:
    paced, adaptive = median(res["paced"][1:]), median(res["adaptive"][1:])
    chunk = res["chunks"][-1] // 1024
    return (
        f"| {profile.name} ({profile.describe()}) | {size / 1e6:.1f} MB | "
        f"{size / paced / 1e6:.2f} | {size / adaptive / 1e6:.2f} | {paced / adaptive:.2f}x | "
        f"{chunk} KiB | {load_average().split()[0]} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="loopback,g1,m100,m10,m1")
    ap.add_argument("--pushes", type=int, default=5, help="pushes of each kind (1 warm-up)")
    ap.add_argument("--smoke", action="store_true", help="loopback, 1 MB, 2 pushes each")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        host, port = args.serve.rsplit(":", 1)
        asyncio.run(serve(host, int(port)))
        return 0
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.size, args.pushes))), flush=True)
        return 0
    names = ["loopback"] if args.smoke else args.profiles.split(",")
    unknown = [n for n in names if n not in PROFILES]
    if unknown or args.pushes < 2:
        print(f"error: unknown profile(s) {unknown} or --pushes below 2", file=sys.stderr)
        return 2
    why = namespaces_usable()
    if why and any(PROFILES[n].shaped for n in names):
        print(f"# no network namespaces ({why}): loopback only", flush=True)
        names = ["loopback"]
    pushes = 2 if args.smoke else args.pushes
    sweep_leftovers()
    print(f"# load average {load_average()}; pushes of each kind: {pushes} (1 warm-up)")
    print(
        "| profile | payload | paced MB/s | adaptive MB/s | adaptive/paced | last chunk "
        "| load (1 min) after |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        p = PROFILES[name]
        size = 10**6 if args.smoke else int(min(MOST_BYTES, (p.rate or 1e10) / 8 * SECONDS_A_PUSH))
        print(row(p, size, measure(p, size, pushes)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
