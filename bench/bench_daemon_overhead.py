"""What a daemon round costs beyond its K local steps.

Measures, in one run and under the same process settings (one torch thread per
process, two processes at once so both CPU cores are busy in both phases):

- plain: two subprocesses each run the same K-step `LocalTrainer.train_steps` loop,
  the trainer built by the daemon's own builder from the lab's recipe
  (`load_workload(cfg.recipe(), 2).trainer(i)`: same model, share of the data, LoRA
  shape, batch size, max_length, lr and seed as daemon node i), timed per K steps,
  started together behind a file barrier;
- daemon: a real 2-node lab, two `declora-node start` subprocesses on 127.0.0.1 with
  static peers, eval off (`eval_every` 0), one torch thread; the round seconds come
  from each node's `<checkpoint-dir>/rounds.jsonl` (phase "train").

Round 1 (and the first plain chunk) is warm-up and skipped. The default runs the
phases plain, daemon, plain, so that a drift in the machine's load hits both sides
alike. Prints the medians and their ratio; the goal is a ratio <= 1.10. No time is
asserted: the exit code is 1 only when a daemon exited non-zero, was still running at
the timeout or recorded no training round.

    python bench/bench_daemon_overhead.py                 # tiny-bert, K=5, ~1-2 min
    python bench/bench_daemon_overhead.py --model minilm --rounds 4 --local-steps 2
    python bench/bench_daemon_overhead.py --smoke         # plain then daemon, 3 rounds, K=1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import (
    CpuSampler,
    Swarm,
    load_average,
    median,
    parse_args,
    quantile,
    read_rounds,
    round_problems,
    sigterm_as_exit,
    stop_processes,
    train_rounds,
)

from declora.cli.lab import LabConfig
from declora.node.topology import from_spec

GOAL = 1.10
NODES = 2
SMOKE = {
    "rounds": 3,
    "local_steps": 1,
    "rank": 4,
    "batch_size": 8,
    "max_length": 32,
    "phases": "plain,daemon",
    "round_deadline": 30.0,
    "timeout": 90.0,
}


def lab_config(args: argparse.Namespace, output: Path) -> LabConfig:
    """The 2-node lab of the daemon phase; the plain phase trains from its recipe."""
    return LabConfig(
        nodes=NODES,
        topology="complete",
        partition_scheme="iid",
        rounds=args.rounds,
        local_steps=args.local_steps,
        model=args.model,
        data=args.data,
        rank=args.rank,
        max_length=args.max_length,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        max_eval=16,
        eval_every=0,
        round_deadline=args.round_deadline,
        consensus_rounds=0,
        gradient_tracking=False,  # the plain loop has no tracking: compare like with like
        output=output,
        extra={"device": "cpu", "checkpoint_every": args.rounds + 1},
    )


def plain_worker(args: argparse.Namespace) -> None:
    """One plain training process: daemon node i's trainer, then R x K timed steps."""
    import torch

    torch.set_num_threads(1)
    from declora.node.workload import load_workload

    index = args.worker
    recipe = lab_config(args, Path(args.barrier)).recipe()
    trainer = load_workload(recipe, NODES, device="cpu").trainer(index)
    barrier = Path(args.barrier)
    (barrier / f"ready-{index}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.train_steps(args.local_steps)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"worker": index, "wall": wall, "cpu": cpu}))


@dataclass
class Phase:
    """Per-round wall seconds, and CPU seconds per round (process, all threads)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False  # a process failed (exit code, timeout, no round): not a timing

    def extend(self, other: Phase) -> None:
        self.wall += other.wall
        self.cpu += other.cpu
        self.problems += other.problems
        self.notes += other.notes
        self.failed = self.failed or other.failed


def run_plain(args: argparse.Namespace, work: Path) -> Phase:
    """Two plain loops at once; per-K-step wall and CPU seconds, first chunk skipped."""
    barrier = Path(tempfile.mkdtemp(prefix="barrier-", dir=work))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(NODES):
            cmd = [
                sys.executable, str(Path(__file__).resolve()),
                "--worker", str(i),
                "--barrier", str(barrier),
                "--model", args.model,
                "--data", args.data,
                "--rounds", str(args.rounds),
                "--local-steps", str(args.local_steps),
                "--rank", str(args.rank),
                "--batch-size", str(args.batch_size),
                "--max-length", str(args.max_length),
                "--lr", str(args.lr),
                "--seed", str(args.seed),
            ]  # fmt: skip
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, start_new_session=True))
        deadline = time.monotonic() + args.timeout
        while not all((barrier / f"ready-{i}").exists() for i in range(NODES)):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError("a plain training worker failed to start")
            time.sleep(0.05)
        (barrier / "go").touch()
        out = Phase()
        for p in procs:
            stdout, _ = p.communicate(timeout=max(deadline - time.monotonic(), 1.0))
            if p.returncode != 0:
                raise RuntimeError(f"plain worker exited with {p.returncode}")
            result = json.loads(stdout.decode().strip().splitlines()[-1])
            out.wall += result["wall"][1:]
            out.cpu += result["cpu"][1:]
        return out
    finally:
        stop_processes(procs)


def run_daemons(args: argparse.Namespace, work: Path, tag: str) -> Phase:
    """A real 2-node lab; per-round wall and CPU seconds (round 1 skipped), problems."""
    cfg = lab_config(args, work / tag)
    out = Phase()
    with Swarm(cfg, cfg.output) as swarm:
        swarm.start()
        with CpuSampler([n.process.pid for n in swarm.nodes]) as sampler:
            if not swarm.wait(args.timeout):
                out.problems.append(f"daemons still running after {args.timeout:.0f}s; stopped")
                out.failed = True
        swarm.stop()
        codes = swarm.exit_codes()
        if any(c != 0 for c in codes.values()):
            out.problems.append(f"exit codes {codes}")
            out.failed = True
        histories = {n.node_id: read_rounds(n.folder) for n in swarm.nodes}
        for n in swarm.nodes:
            rows = train_rounds({n.node_id: histories[n.node_id]}, skip_first=0)
            times = {int(r["round"]): float(r["time"]) for r in rows}
            for r in rows:
                rnd = int(r["round"])
                if rnd == 1:
                    continue
                out.wall.append(float(r["seconds"]))
                cpu = sampler.cpu_at(n.process.pid, times[rnd]) - sampler.cpu_at(
                    n.process.pid, times[rnd - 1]
                )
                if not math.isnan(cpu):
                    out.cpu.append(cpu)
        if not out.wall:
            out.failed = True
        topo = from_spec(cfg.topology, NODES, seed=cfg.seed)
        found, notes = round_problems(histories, topo, args.rounds, args.round_deadline)
        out.problems += found + swarm.log_problems(expected=f"it left after round {args.rounds}")
        out.notes += notes
    return out


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def describe(name: str, xs: list[float]) -> str:
    return (
        f"{name}: median {median(xs):.4f}s  p10 {quantile(xs, 0.1):.4f}s  "
        f"p90 {quantile(xs, 0.9):.4f}s  (n={len(xs)})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-bert", help="tiny-bert (default) or minilm")
    ap.add_argument("--data", default="bbcnews")
    ap.add_argument("--rounds", type=int, default=20, help="rounds per phase (first skipped)")
    ap.add_argument("--local-steps", type=int, default=5, help="K steps a round")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--round-deadline", type=float, default=60.0)
    ap.add_argument("--phases", default="plain,daemon,plain", help="comma-separated order")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    ap.add_argument("--output", type=Path, default=None, help="keep node folders here")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", default="", help=argparse.SUPPRESS)
    args = parse_args(ap, SMOKE, argv)
    if args.worker is not None:
        plain_worker(args)
        return 0
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (round 1 is skipped)")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not {"plain", "daemon"} <= set(phases) or not set(phases) <= {"plain", "daemon"}:
        ap.error("--phases needs at least one 'plain' and one 'daemon'")

    work = args.output or Path(tempfile.mkdtemp(prefix="declora-bench-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"daemon overhead: model {args.model}, data {args.data}, K={args.local_steps}, "
        f"{args.rounds} rounds/phase, batch {args.batch_size}, max_length {args.max_length}, "
        f"rank {args.rank}, fp32 codec, 2 processes x 1 torch thread"
    )
    print(f"load average at start: {load_average()}")
    plain, daemon = Phase(), Phase()
    t0 = time.perf_counter()
    try:
        with sigterm_as_exit():
            for n, phase in enumerate(phases):
                ts = time.perf_counter()
                if phase == "plain":
                    got = run_plain(args, work)
                    plain.extend(got)
                else:
                    got = run_daemons(args, work, f"daemon-{n}")
                    daemon.extend(got)
                unit = "per round" if phase == "daemon" else f"per {args.local_steps} steps"
                wall = time.perf_counter() - ts
                print(
                    f"  phase {n + 1} {phase:6s} {wall:5.1f}s wall, {describe(unit, got.wall)}, "
                    f"CPU mean {mean(got.cpu):.4f}s"
                )
    finally:
        if args.output is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {load_average()}  (total {time.perf_counter() - t0:.0f}s)")
    print(describe("daemon round wall (rounds.jsonl `seconds`)", daemon.wall))
    print(describe(f"plain {args.local_steps}-step wall (LocalTrainer.train_steps)", plain.wall))
    ratio = median(daemon.wall) / median(plain.wall)
    verdict = "meets" if ratio <= GOAL else "misses"
    print(f"ratio daemon/plain, median wall: {ratio:.3f}  (goal <= {GOAL:.2f}: {verdict})")
    print(f"per-round wall overhead: {median(daemon.wall) - median(plain.wall):+.4f}s")
    cpu_ratio = mean(daemon.cpu) / mean(plain.cpu)
    print(
        f"CPU seconds per round (process, all threads): daemon {mean(daemon.cpu):.4f}s, "
        f"plain {mean(plain.cpu):.4f}s, ratio {cpu_ratio:.3f}"
    )
    print(
        f"CPU share while timed (CPU / wall): daemon {mean(daemon.cpu) / mean(daemon.wall):.2f}, "
        f"plain {mean(plain.cpu) / mean(plain.wall):.2f}  (1.00 = a whole core; lower = "
        "the machine is oversubscribed and the wall ratio mostly measures the scheduler)"
    )
    if daemon.problems:
        print("problems seen in the daemons:")
        for p in daemon.problems:
            print(f"  {p}")
    else:
        print(
            "problems seen in the daemons: none (every round mixed with the neighbour, "
            "no deadline wait, both exited 0)"
        )
    for note in daemon.notes:
        print(f"note: {note}")
    return 1 if daemon.failed else 0


if __name__ == "__main__":
    sys.exit(main())
