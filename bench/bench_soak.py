"""Soak: what one real node holds (memory, threads, descriptors, disk, peer tables)
over many fast rounds while its neighbours come and go.

Three `declora-node start` subprocesses on 127.0.0.1: the node measured (`t`) and two
neighbours, all tiny-bert, one torch thread, K = 1 local step of batch 4, eval only at
the end, `--rounds 0` (until stopped). Every `--churn-every` of t's rounds one event of
the cycle happens, in turn:

- `restart`: neighbour `a` is stopped (SIGTERM) and started again (`--resume auto`);
- `replace`: neighbour `b` is stopped and a new id takes its address (b1, b2, ...);
- `stranger`: a Handshake from a fresh id with a wrong fingerprint (refused), then one
  with the right fingerprint and an address where nothing listens (a peer that never
  answers), both from this process.

Every `--sample-every` rounds the node's RSS, threads and open descriptors (/proc),
the size of its state folder, and from its Status the neighbours and pending peers it
lists and its refusal counters are sampled. The table is printed as it goes; at the
end the growth per 1,000 rounds of each column (a least-squares slope over the
samples after `--warmup` rounds: the first ~3,000 held a one-time step of about 4 MiB
in every run, with or without churn). Nothing is asserted; a non-zero exit only when the
node exited or recorded no round (its folder is kept then, as with `--keep`). The nodes
are stopped and the folder removed on any other end, Ctrl-C and SIGTERM too.

    python bench/bench_soak.py                      # 10 min, prints the table
    python bench/bench_soak.py --rounds 3000
    python bench/bench_soak.py --events 3            # one of each churn event
    python bench/bench_soak.py --smoke               # seconds: every path once
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from benchlib import HOST, free_ports, load_average, parse_args, sigterm_as_exit, stop_processes

from declora.cli.client import StatusError, fetch_status
from declora.node import PROTOCOL_VERSION
from declora.proto import pb, pb_grpc

# one event of each kind on consecutive rounds, not waiting for the new processes to
# start: every code path once, in the time three nodes take to start
SMOKE = {"events": 3, "minutes": 1.0, "sample_every": 1, "churn_every": 1, "warmup": 0}
CYCLE = ("restart", "replace", "stranger")
COLUMNS = ("rss_mib", "threads", "fds", "state_kib", "neighbors", "pending", "refused")
WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "field"]


def write_data(path: Path, rows: int = 200) -> Path:
    """A small two-label JSONL text set (label 1: the text names a river)."""
    rng = random.Random(0)
    with path.open("w") as fh:
        for _ in range(rows):
            words = rng.choices(WORDS, k=8)
            fh.write(json.dumps({"text": " ".join(words), "label": int("river" in words)}) + "\n")
    return path


@dataclass
class Proc:
    """One daemon subprocess (`start` begins it again under `node_id`)."""

    node_id: str
    port: int
    folder: Path
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / f"{self.node_id}.log").open("ab")
        self.logs.append(log)
        cmd = [sys.executable, "-m", "declora.cli", "start", "--node-id", self.node_id]
        cmd += ["--listen", self.address, "--checkpoint-dir", str(self.folder / self.node_id)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*cmd, *self.args], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip

    def stop(self) -> None:
        stop_all([self])


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM the processes of `procs` at once (`stop_processes`), close their logs."""
    stop_processes([p.proc for p in procs if p.proc is not None])
    for p in procs:
        for log in p.logs:
            log.close()
        p.logs.clear()


def node_args(data: Path, swarm: str, peers: list[str], deadline: float) -> list[str]:
    flags = (
        "--model tiny-bert --rank 4 --alpha 8 --max-length 16 --batch-size 4 --local-steps 1 "
        "--lr 0.05 --seed 0 --threads 1 --device cpu --no-gradient-tracking "
        "--validation-fraction 0 --lr-schedule constant --eval-every 0 --max-eval 8 --rounds 0 "
        f"--round-deadline {deadline:g} --min-peers 0 --resume auto --log-level WARNING"
    )
    return ["--data", str(data), "--swarm-id", swarm, "--peers", ",".join(peers), *flags.split()]


def proc_sample(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open descriptors of process `pid`, from /proc (KeyError,
    OSError: it has exited)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {
        "rss_mib": int(fields["VmRSS"][0]) / 1024,
        "threads": int(fields["Threads"][0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def folder_kib(folder: Path) -> float:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a checkpoint renamed away while walking
                total += os.lstat(os.path.join(root, name)).st_size
    return total / 1024


def status(address: str) -> pb.StatusReply | None:
    try:
        return fetch_status(address, 5.0)
    except StatusError:
        return None


def stranger(target: str, swarm: str, fingerprint: str, dead_port: int) -> str:
    """Two Handshakes from fresh ids: a wrong fingerprint, then a right one from an
    address where nothing listens. Their outcomes, for the log."""
    outcomes = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SwarmStub(channel)
        for fp in ("0" * len(fingerprint), fingerprint):
            hello = pb.Hello(
                protocol_version=PROTOCOL_VERSION, node_id=f"s-{uuid.uuid4().hex[:8]}",
                swarm_id=swarm, fingerprint=fp, listen_address=f"{HOST}:{dead_port}", seq=1,
            )  # fmt: skip
            try:
                welcome = stub.Handshake(hello, timeout=10)
                outcomes.append("accepted" if welcome.accepted else welcome.reason[:40])
            except grpc.RpcError as exc:
                outcomes.append(str(exc.code()))
    return "; ".join(outcomes)


def slope_per_1000(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs, per 1,000 of x (0 with under two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


class Soak:
    """The three nodes, the churn cycle and the samples of one run."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.swarm = f"soak-{uuid.uuid4().hex[:8]}"
        data = write_data(out / "data.jsonl")
        tp, ap, bp, self.dead_port = free_ports(4)
        t, a, b = (f"{HOST}:{p}" for p in (tp, ap, bp))
        dl = args.round_deadline
        self.t = Proc("t", tp, out, node_args(data, self.swarm, [a, b], dl))
        self.a = Proc("a", ap, out, node_args(data, self.swarm, [t], dl))
        self.b = Proc("b", bp, out, node_args(data, self.swarm, [t], dl))
        self.replaced = 0
        self.samples: list[dict[str, float]] = []

    def churn(self, event: str) -> str:
        if event == "restart":
            self.a.stop()
            self.a.start()
            return "a restarted"
        if event == "replace":
            self.b.stop()
            self.replaced += 1
            self.b = Proc(f"b{self.replaced}", self.b.port, self.out, self.b.args)
            self.b.start()
            return f"b replaced by {self.b.node_id}"
        reply = status(self.t.address)
        fp = reply.fingerprint if reply is not None else "0" * 16
        return "stranger: " + stranger(self.t.address, self.swarm, fp, self.dead_port)

    def sample(self, reply: pb.StatusReply) -> dict[str, float]:
        assert self.t.proc is not None
        row: dict[str, float] = {"round": reply.round, **proc_sample(self.t.proc.pid)}
        row["state_kib"] = folder_kib(self.t.folder / "t")
        row["neighbors"] = len(reply.neighbors)
        row["pending"] = len(reply.pending)
        row["refused"] = sum(reply.rejected.values())
        self.samples.append(row)
        return row

    def run(self) -> int:
        args = self.args
        for p in (self.t, self.a, self.b):
            p.start()
        header = f"{'round':>7} " + " ".join(f"{c:>10}" for c in COLUMNS) + "  event"
        print(header)
        print("-" * len(header), flush=True)
        end = time.monotonic() + 60 * args.minutes
        next_sample, next_churn, turn = 0, args.churn_every, 0
        last = 0
        while time.monotonic() < end and (args.rounds == 0 or last < args.rounds):
            if args.events and turn >= args.events:
                break
            assert self.t.proc is not None
            if self.t.proc.poll() is not None:
                print(f"t exited with {self.t.proc.returncode}; see {self.out}/t.log")
                return 1
            reply = status(self.t.address)
            if reply is None or reply.round < next_sample:
                time.sleep(0.2)
                continue
            last = reply.round
            event = ""
            if reply.round >= next_churn:
                event = self.churn(CYCLE[turn % len(CYCLE)])
                turn += 1
                next_churn = reply.round + args.churn_every
            try:
                row = self.sample(reply)
            except (KeyError, OSError):  # t exited since its Status: said at the top
                continue
            cells = " ".join(f"{row[c]:>10.1f}" for c in COLUMNS)
            print(f"{int(row['round']):>7} {cells}  {event}", flush=True)
            next_sample = reply.round + args.sample_every
        self.summary()
        return 0 if self.samples and self.samples[-1]["round"] > 0 else 1

    def summary(self) -> None:
        kept = [s for s in self.samples if s["round"] >= self.args.warmup]
        xs = [s["round"] for s in kept]
        print(
            f"\ngrowth per 1,000 rounds (least squares over {len(kept)} samples from round "
            f"{self.args.warmup}; {self.replaced} replacements; load average {load_average()}):"
        )
        for c in COLUMNS:
            ys = [s[c] for s in kept]
            first = f"{ys[0]:.1f}" if ys else "-"
            lastv = f"{ys[-1]:.1f}" if ys else "-"
            print(f"  {c:<10} {slope_per_1000(xs, ys):>+10.2f}   ({first} -> {lastv})")

    def stop(self) -> None:
        stop_all([self.t, self.a, self.b])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=0, help="stop at this round of t (0: time)")
    ap.add_argument("--minutes", type=float, default=10.0, help="stop after this long")
    ap.add_argument("--sample-every", type=int, default=50, help="rounds between samples")
    ap.add_argument("--events", type=int, default=0, help="stop after this many (0: time)")
    ap.add_argument("--churn-every", type=int, default=100, help="rounds between churn events")
    ap.add_argument("--warmup", type=int, default=3000, help="rounds left out of the slopes")
    ap.add_argument("--round-deadline", type=float, default=5.0, help="the nodes' deadline")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' folder")
    args = parse_args(ap, SMOKE, argv)
    out = Path(tempfile.mkdtemp(prefix="declora-soak-"))
    soak: Soak | None = None
    rc = 1
    try:
        with sigterm_as_exit():
            soak = Soak(args, out)
            rc = soak.run()
    except KeyboardInterrupt:
        if soak is not None:
            soak.summary()
        rc = 130
    finally:
        if soak is not None:
            soak.stop()
        if args.keep or rc == 1:  # a failed run keeps the logs it names
            print(f"nodes' folder: {out}")
        else:
            shutil.rmtree(out, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
