"""Round latency of real swarms: 4 and then 8 daemons in a ring on 127.0.0.1.

Each swarm is started the way `declora-node lab` starts one (its `node_command`):
`declora-node start` subprocesses with static ring peers, tiny-bert, one torch
thread, K = 1 local step, eval off, 8 rounds, iid partitions of the default data.
The per-round wall seconds come from every node's `rounds.jsonl` (phase "train");
round 1 (start-up skew) is skipped. Prints, per swarm size, the
distribution over all nodes and rounds (median, p90, max), how far apart the nodes
finish the same round, and any problem seen: a neighbour missing from a round's live
set, a round near the deadline, a non-zero exit, warnings in the logs. No time is
asserted: the exit code is 1 only when a node exited non-zero, was still running at
the timeout or recorded no training round. On a machine with fewer cores than nodes
the figures include waiting for a CPU; the load average is printed with them.

    python bench/bench_round_latency.py                 # 4 then 8 nodes, ~2 min
    python bench/bench_round_latency.py --sizes 4 --rounds 12
    python bench/bench_round_latency.py --smoke         # 3 nodes, 3 rounds, ~15 s
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
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
    train_rounds,
)

from declora.cli.lab import LabConfig
from declora.node.acceleration import UNACCELERATED
from declora.node.topology import from_spec

SMOKE = {"sizes": "3", "rounds": 3, "round_deadline": 30.0, "timeout": 90.0}


def run_swarm(args: argparse.Namespace, n: int, out: Path) -> dict[str, Any]:
    cfg = LabConfig(
        nodes=n,
        topology=args.topology,
        partition_scheme="iid",
        rounds=args.rounds,
        local_steps=args.local_steps,
        model=args.model,
        data=args.data,
        seed=0,
        max_eval=16,
        eval_every=0,
        round_deadline=args.round_deadline,
        consensus_rounds=0,
        output=out,
        gossip_steps=1,  # one exchange a round: round latency, not mixing strength
        **UNACCELERATED,  # ...as measured before the lab accelerated
        extra={"device": "cpu", "checkpoint_every": args.rounds + 1},
    )
    topo = from_spec(args.topology, n, seed=cfg.seed)
    problems: list[str] = []
    t0 = time.perf_counter()
    with Swarm(cfg, out) as swarm:
        swarm.start()
        finished = swarm.wait(args.timeout)
        wall = time.perf_counter() - t0
        if not finished:
            problems.append(f"still running after {args.timeout:.0f}s; stopped")
        swarm.stop()
        codes = swarm.exit_codes()
        failed = not finished or any(c != 0 for c in codes.values())
        if any(c != 0 for c in codes.values()):
            problems.append(f"exit codes {codes}")
        histories = swarm.histories()
        problems += swarm.log_problems(expected=f"it left after round {args.rounds}")
    rows = train_rounds(histories, skip_first=1)
    seconds = [float(r["seconds"]) for r in rows]
    found, notes = round_problems(histories, topo, args.rounds, args.round_deadline)
    problems += found
    done_at: dict[int, list[float]] = defaultdict(list)
    for hist in histories.values():
        for r in hist:
            if r.get("phase") == "train":
                done_at[int(r["round"])].append(float(r["time"]))
    first = [min(v) for k, v in done_at.items() if k == 1]
    skew = [max(v) - min(v) for k, v in done_at.items() if k > 1 and len(v) == n]
    return {
        "seconds": seconds,
        "skew": skew,
        "wall": wall,
        "first_round_done": (min(first) if first else float("nan")),
        "problems": problems,
        "notes": notes,
        "failed": failed or not seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4,8", help="swarm sizes, run one after the other")
    ap.add_argument("--topology", default="ring")
    ap.add_argument("--model", default="tiny-bert")
    ap.add_argument("--data", default="bbcnews")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--local-steps", type=int, default=1)
    ap.add_argument("--round-deadline", type=float, default=60.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per swarm")
    ap.add_argument("--output", type=Path, default=None, help="keep node folders here")
    args = parse_args(ap, SMOKE, argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if args.rounds < 2:
        ap.error("--rounds must be >= 2 (round 1 is skipped)")
    work = args.output or Path(tempfile.mkdtemp(prefix="declora-bench-latency-"))
    failed = False
    print(
        f"round latency: {args.model}, {args.topology}, K={args.local_steps}, {args.rounds} "
        f"rounds (round 1 skipped), --threads 1 each, fp32, eval off"
    )
    try:
        with sigterm_as_exit():
            for n in sizes:
                before = load_average()
                t_start = time.time()
                res = run_swarm(args, n, work / f"n{n}")
                failed = failed or res["failed"]
                xs = res["seconds"]
                print(f"{n} nodes (load average before: {before})")
                print(
                    f"  round seconds over {len(xs)} node-rounds: median {median(xs):.3f}  "
                    f"p90 {quantile(xs, 0.9):.3f}  max {max(xs, default=float('nan')):.3f}"
                )
                print(
                    f"  spread of the same round's finish across nodes: median "
                    f"{median(res['skew']):.3f}s  max {max(res['skew'], default=float('nan')):.3f}s"
                )
                print(
                    f"  start to first round done {res['first_round_done'] - t_start:.1f}s, "
                    f"whole swarm {res['wall']:.1f}s"
                )
                if res["problems"]:
                    print("  problems:")
                    for p in res["problems"]:
                        print(f"    {p}")
                else:
                    print(
                        "  problems: none (every round mixed with every neighbour, "
                        "no deadline wait, all exited 0)"
                    )
                for note in res["notes"]:
                    print(f"  note: {note}")
    finally:
        if args.output is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end: {load_average()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
