"""Load: 16 real daemons on one machine run 50 rounds; does any round stall?

The swarm is started the way `declora-node lab` starts one (its `node_command`):
`declora-node start` subprocesses on 127.0.0.1 with static peers, tiny-bert, one
torch thread, K = 1 local step, iid partitions of the default data, eval only at
the end, checkpoints at the daemon's default interval, a consensus finish of up to 5
rounds and a generous `--round-deadline` (30 s), so that a stall shows up as a round
near the deadline rather than as a dropped neighbour. The topology is a ring of 16
with chords from every node i to i+4 (mod 16): degree 4 everywhere, diameter 3.

When every node has exited (bounded by `--timeout`), it reads every node's
`rounds.jsonl` and log and prints the distribution of round seconds over all nodes
and training rounds (round 1 includes the start-up skew and is also shown alone),
the rounds slower than half the deadline ("stalls"), neighbours that left a live
set other than by the normal goodbye after the last round, bytes sent and received
per node, the final accuracy range and the largest disagreement at the end, the
wall time and the load average. Timings are not asserted: the exit code is 1 only
when a node exited non-zero, was still running at the timeout, or has no final
record; then the failed nodes' last log lines are printed and the node folders
kept. On a machine with fewer cores than nodes the figures include waiting for a
CPU (16 processes importing torch make start-up the slowest part).

    python bench/bench_load.py                        # 16 nodes, 50 rounds, a few minutes
    python bench/bench_load.py --nodes 8 --rounds 10 --chord 0   # a smaller plain ring
    python bench/bench_load.py --smoke                # 4 nodes, chords i -- i+2, 3 rounds
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Swarm,
    load_average,
    median,
    parse_args,
    quantile,
    round_problems,
    sigterm_as_exit,
)

from declora.cli.lab import LabConfig
from declora.node.acceleration import UNACCELERATED
from declora.node.topology import from_spec

MIB = 1024 * 1024
NAN = float("nan")
GOODBYE = re.compile(r"left the live set: it left after round (\d+)")
SMOKE = {
    "nodes": 4,
    "chord": 2,
    "rounds": 3,
    "consensus_rounds": 2,
    "startup_timeout": 60.0,
    "max_eval": 16,
    "timeout": 120.0,
}


def write_chorded_ring(n: int, chord: int, path: Path) -> str:
    """Write a ring of `n` plus edges i -- i+chord (mod n) to `path`; its topology spec.

    `chord` 0 or 1 gives the plain ring.
    """
    edges = {tuple(sorted((i, (i + 1) % n))) for i in range(n)}
    if chord > 1:
        edges |= {tuple(sorted((i, (i + chord) % n))) for i in range(n)}
    path.write_text("".join(f"{i} {j}\n" for i, j in sorted(edges)))
    return f"edges:{path}"


def spread(values: list[float], fmt: str) -> str:
    """`min / median / max` of `values`, each formatted with `fmt`."""
    if not values:
        return "n/a"
    return " / ".join(format(v, fmt) for v in (min(values), median(values), max(values)))


def neighbour_drops(swarm: Swarm, rounds: int) -> tuple[list[str], int]:
    """(drops, goodbyes) from the logs' "left the live set" lines.

    A goodbye is a neighbour that left after finishing its `rounds` training rounds
    (it is done; its last payload was still used); every other leaving is a drop.
    """
    drops: list[str] = []
    goodbyes = 0
    for node_id, line in swarm.log_lines():
        if "left the live set" not in line:
            continue
        m = GOODBYE.search(line)
        if m and int(m.group(1)) >= rounds:
            goodbyes += 1
        else:
            drops.append(f"{node_id}: {line}")
    return drops, goodbyes


def run(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], bool]:
    """Run the swarm to the end; (figures, every node finished cleanly)."""
    out.mkdir(parents=True, exist_ok=True)
    topology = write_chorded_ring(args.nodes, args.chord, out / "topology.txt")
    cfg = LabConfig(
        nodes=args.nodes,
        topology=topology,
        partition_scheme="iid",
        rounds=args.rounds,
        local_steps=args.local_steps,
        model=args.model,
        data=args.data,
        seed=0,
        max_eval=args.max_eval,
        eval_every=0,
        round_deadline=args.round_deadline,
        consensus_rounds=args.consensus_rounds,
        output=out,
        gossip_steps=1,  # one exchange a round: round latency, not mixing strength
        **UNACCELERATED,  # ...as measured before the lab accelerated
        extra={"device": "cpu", "startup_timeout": args.startup_timeout},
    )
    topo = from_spec(topology, args.nodes, seed=cfg.seed)
    t0 = time.time()
    with Swarm(cfg, out) as swarm:
        swarm.start()
        finished = swarm.wait(args.timeout)
        wall = time.time() - t0
        swarm.stop()
        codes = swarm.exit_codes()
        histories = swarm.histories()
        drops, goodbyes = neighbour_drops(swarm, args.rounds)
        log_problems = swarm.log_problems(expected="left the live set")
        logs = {n.node_id: n.log_path for n in swarm.nodes}
    finals = {
        k: next((r for r in h if r.get("phase") == "final"), None) for k, h in histories.items()
    }
    rows = [r for h in histories.values() for r in h if r.get("phase") in ("train", "consensus")]
    train = [r for r in rows if r["phase"] == "train"]
    first_done = [float(r["time"]) for r in train if int(r["round"]) == 1]
    problems, notes = round_problems(histories, topo, args.rounds, args.round_deadline)
    problems += log_problems
    if not finished:
        problems.insert(0, f"still running after {args.timeout:.0f}s; stopped")
    bad_codes = {k: c for k, c in codes.items() if c != 0}
    if bad_codes:
        problems.insert(0, f"non-zero exit codes {bad_codes}")
    unfinished = sorted(k for k, f in finals.items() if f is None)
    if unfinished:
        problems.insert(0, f"no final record: {', '.join(unfinished)}")
    failed = sorted(set(bad_codes) | set(unfinished))
    last = [h[-1] for h in histories.values() if h]
    figures = {
        "topology": topo,
        "wall": wall,
        "first_round": (min(first_done) - t0) if first_done else NAN,
        "train_seconds": [float(r["seconds"]) for r in train],
        "round1_seconds": [float(r["seconds"]) for r in train if int(r["round"]) == 1],
        "consensus_seconds": [float(r["seconds"]) for r in rows if r["phase"] == "consensus"],
        "stalls": [
            f"{r['phase']} round {r['round']}: {float(r['seconds']):.1f}s"
            for r in rows
            if float(r["seconds"]) > args.round_deadline / 2
        ],
        "drops": drops,
        "goodbyes": goodbyes,
        "sent": [r["bytes_sent"] / MIB for r in last],
        "received": [r["bytes_received"] / MIB for r in last],
        "accuracy": [
            float(f["eval"]["accuracy"])
            for f in finals.values()
            if f and f.get("eval") and "accuracy" in f["eval"]
        ],
        "disagreement": [  # null: not yet measured (DECA)
            float(f["disagreement"]) for f in finals.values() if f and f["disagreement"] is not None
        ],
        "problems": problems,
        "notes": notes,
        "failed_logs": {k: logs[k].read_text(errors="replace").splitlines()[-15:] for k in failed},
    }
    return figures, finished and not failed


def report(args: argparse.Namespace, f: dict[str, Any]) -> None:
    topo = f["topology"]
    degrees = "/".join(map(str, sorted({topo.degree(i) for i in range(topo.n)})))
    xs, r1, cs = f["train_seconds"], f["round1_seconds"], f["consensus_seconds"]
    acc = f["accuracy"]
    print(f"  topology: {len(topo.edges)} edges, degree {degrees}")
    print(
        f"  round seconds over {len(xs)} training node-rounds: min {min(xs, default=NAN):.3f}  "
        f"median {median(xs):.3f}  p90 {quantile(xs, 0.9):.3f}  p99 {quantile(xs, 0.99):.3f}  "
        f"max {max(xs, default=NAN):.3f}"
    )
    print(
        f"  round 1 alone (includes start-up skew): median {median(r1):.3f}  "
        f"max {max(r1, default=NAN):.3f}"
    )
    print(f"  consensus finish: {len(cs)} node-rounds, max {max(cs, default=NAN):.3f}s")
    half = args.round_deadline / 2
    print(f"  stalls (rounds over {half:g}s, half the deadline): {len(f['stalls'])}")
    for s in f["stalls"][:10]:
        print(f"    {s}")
    print(
        f"  neighbour drops: {len(f['drops'])} (besides {f['goodbyes']} goodbyes of neighbours "
        "that finished their last round)"
    )
    for d in f["drops"][:10]:
        print(f"    {d}")
    print(f"  MiB sent per node (min / median / max): {spread(f['sent'], '.2f')}")
    print(f"  MiB received per node (min / median / max): {spread(f['received'], '.2f')}")
    print(
        f"  final accuracy ({len(acc)} nodes, {args.max_eval} test examples): "
        f"{min(acc, default=NAN):.4f} .. {max(acc, default=NAN):.4f}"
    )
    print(f"  max disagreement at the end: {max(f['disagreement'], default=NAN):.2e}")
    print(
        f"  wall: start to first round done {f['first_round']:.1f}s, "
        f"start to all exited {f['wall']:.1f}s"
    )
    if f["problems"]:
        print("  problems:")
        for p in f["problems"]:
            print(f"    {p}")
    else:
        print("  problems: none (every round mixed with every neighbour, all exited 0)")
    for note in f["notes"]:
        print(f"  note: {note}")
    for node_id, tail in f["failed_logs"].items():
        print(f"  last lines of {node_id}'s log:")
        for line in tail:
            print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--chord", type=int, default=4, help="edges i -- i+CHORD; 0: plain ring")
    ap.add_argument("--model", default="tiny-bert")
    ap.add_argument("--data", default="bbcnews")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--local-steps", type=int, default=1)
    ap.add_argument("--consensus-rounds", type=int, default=5)
    ap.add_argument("--round-deadline", type=float, default=30.0)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--max-eval", type=int, default=64, help="test examples per node")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for the whole swarm")
    ap.add_argument("--output", type=Path, default=None, help="keep node folders here")
    args = parse_args(ap, SMOKE, argv)
    if args.nodes < 3:
        ap.error("--nodes must be >= 3")
    if not 0 <= args.chord < args.nodes:
        ap.error(f"--chord must be in 0..{args.nodes - 1}")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    shape = "ring" if args.chord <= 1 else f"ring + chords i -- i+{args.chord}"
    print(
        f"load: {args.nodes} daemons, {shape}, {args.model}, iid {args.data}, "
        f"K={args.local_steps}, {args.rounds} rounds + up to {args.consensus_rounds} "
        f"consensus rounds, --round-deadline {args.round_deadline:g}s, --threads 1 each, fp32"
    )
    print(f"  load average at start: {load_average()}")
    work = args.output or Path(tempfile.mkdtemp(prefix="declora-bench-load-"))
    ok = keep = False
    try:
        with sigterm_as_exit():
            figures, ok = run(args, work)
        report(args, figures)
        keep = not ok
    finally:
        if keep or args.output is not None:
            print(f"  node folders and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"  load average at end: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
