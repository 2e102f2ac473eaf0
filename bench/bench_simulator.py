"""Share of a simulated Dec-LoRA round spent in gossip (codecs + mixing), per codec.

Runs a short simulation per codec and prints, over the training rounds, the mean
round time, the mean time of the gossip step (encode, apply neighbours' payloads,
mix: the simulator's `mix_seconds`) and their ratio (`final["mix_fraction"]`) next to
the goal (< 5% of the round). Evaluation is outside both figures. Nothing is asserted.

    python bench/bench_simulator.py                     # tiny-bert, synthetic data, seconds
    python bench/bench_simulator.py --model minilm      # MiniLM + BBC News, minutes
    python bench/bench_simulator.py --smoke             # tiny-bert, 3 nodes, 2 rounds x 1 step
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import load_average, parse_args

from declora.node.simulator import SimConfig, Simulation
from declora.node.trainer import LoraModel

GOAL = 0.05
SMOKE = {
    "model": "tiny-bert",
    "nodes": 3,
    "rounds": 2,
    "local_steps": 1,
    "batch_size": 8,
    "examples": 60,
    "max_eval": 20,
}

WORDS = (
    ("aaa", "abba", "baba", "aab"),
    ("ccc", "cdc", "dcd", "ddc"),
    ("eee", "efe", "fef", "ffe"),
    ("ggg", "ghg", "hgh", "hhg"),
    ("iii", "iji", "jij", "jji"),
)


def write_synthetic(path: Path, n: int, seed: int = 0) -> Path:
    """Short texts of class-specific words, 5 balanced classes, as JSONL."""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            c = i % len(WORDS)
            text = " ".join(str(w) for w in rng.choice(WORDS[c], size=5))
            fh.write(json.dumps({"text": text, "label": f"class{c}"}) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny-bert", "minilm"), default="tiny-bert")
    parser.add_argument("--codecs", nargs="+", default=["fp32", "q4"])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--topology", default="ring")
    parser.add_argument("--rounds", type=int, default=None, help="default: 4 tiny, 2 minilm")
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=None, help="default: 4 tiny, 8 minilm")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--examples", type=int, default=400, help="synthetic texts (tiny-bert)")
    parser.add_argument("--max-eval", type=int, default=50, help="test examples evaluated")
    args = parse_args(parser, SMOKE, argv)

    tiny = args.model == "tiny-bert"
    rounds = args.rounds or (4 if tiny else 2)
    rank = args.rank or (4 if tiny else 8)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = Path(tmp) / "synthetic.jsonl"
        data = str(write_synthetic(synthetic, args.examples)) if tiny else "bbcnews"
        base = SimConfig.model_validate(
            {
                "nodes": args.nodes,
                "topology": args.topology,
                "partition_scheme": "iid",
                "rounds": rounds,
                "local_steps": args.local_steps,
                "batch_size": args.batch_size,
                "lr": 3e-2 if tiny else 2e-3,
                "model": args.model,
                "data": data,
                "rank": rank,
                "alpha": 2 * rank,
                "max_length": 32 if tiny else 64,
                "max_eval": args.max_eval,
                "eval_every": rounds,
                "node_eval_every": max(rounds, 1),
                "consensus_rounds": 0,
                "centralized": False,
                "threads": args.threads,
                # Dec-LoRA as published: one exchange, no tracking, fixed lr
                "gradient_tracking": False,
                "gossip_steps": 1,
                "swarm_size": 1,
                "lr_schedule": "constant",
            }
        )
        lm: LoraModel | None = None
        rows = []
        for codec in args.codecs:
            cfg = base.model_copy(update={"codec": codec})
            sim = Simulation(cfg, lm=lm)
            lm = sim.lm
            t0 = time.perf_counter()
            res = sim.run()
            wall = time.perf_counter() - t0
            train = [r for r in res.rounds if r.phase == "train"]
            rows.append(
                (
                    codec,
                    float(np.mean([r.seconds for r in train])),
                    float(np.mean([r.mix_seconds for r in train])),
                    float(res.final["mix_fraction"]),
                    res.final["bytes_sent_per_node"] / max(len(res.rounds), 1),
                    wall,
                )
            )
        numel = lm.schema.numel if lm else 0

    load = load_average()
    print(
        f"simulator: {args.model}, {args.nodes} nodes {args.topology}, {rounds} rounds x "
        f"{args.local_steps} steps x batch {args.batch_size}, adapter {numel:,} values; "
        f"load average {load}"
    )
    header = (
        f"{'codec':<8} {'round s':>9} {'gossip ms':>10} {'mix fraction':>13} {'goal':>6}"
        f" {'bytes/node/round':>17} {'run s':>7}"
    )
    print(header)
    print("-" * len(header))
    for codec, sec, mix, frac, sent, wall in rows:
        verdict = "ok" if frac < GOAL else "MISSED"
        print(
            f"{codec:<8} {sec:>9.3f} {1e3 * mix:>10.2f} {100 * frac:>12.2f}% "
            f"{'<' + format(100 * GOAL, '.0f') + '%':>6} {sent:>17,.0f} {wall:>7.1f}  {verdict}"
        )


if __name__ == "__main__":
    main()
