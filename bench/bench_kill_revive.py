"""Local-step time of Kill-and-Revive's active sets against every module (Dec-LoRA).

Killing a LoRA module turns its parameters' gradients off, but a step still runs the
whole forward pass and the backward through every layer above the lowest active
module. This benchmark bounds the training time any active set can save. One node of
the methods study's setting (`experiment --task methods`: MiniLM, LoRA r=8 on q and
v, batch 16, max_length 32, its BBC share, one torch thread) times a local step with:

- `dec-lora`: every module, a plain `DecLoraNode`'s step (what Dec-LoRA runs);
- `revive`: Kill-and-Revive's revive round (every module, then the re-scoring);
- `budget-top`: the budget (1/8 of the modules) on the topmost modules: the backward
  stops at the lowest of them, the best case of any score;
- `budget-bottom`: the budget on the bottommost modules: the backward goes through
  every layer, the worst case;
- `head-only`: no LoRA module (only the classification head trains): the floor no
  active set can go below.

Each row is a `KillReviveNode.train` of one step with its active set forced (its
module scores set so the budget lands where the row says), except `dec-lora`. The
rows are interleaved (one step of each per repeat) and the median is printed with its
ratio to `dec-lora`, all measured in the same run. Nothing is asserted; the figures
depend on the machine and its load.

    python bench/bench_kill_revive.py --repeat 20
    python bench/bench_kill_revive.py --smoke      # tiny-bert, 2 repeats
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from benchlib import load_average, parse_args

from declora.cli.methods_study import SETTING
from declora.node.kill_revive import KillReviveNode
from declora.node.lora_names import A_MARK, lora_module
from declora.node.simulator import SimConfig
from declora.node.workload import load_workload

LAYER = re.compile(r"\.(\d+)\.")
SMOKE = {"model": "tiny-bert", "repeat": 2, "max_train": 400}


def module_layers(node: KillReviveNode[int]) -> np.ndarray:
    """The layer number of each of the node's modules, in its scores' order."""
    names = [lora_module(n) for n in node.trainer.lm.schema.names if A_MARK in n]
    return np.array([int(LAYER.findall(n)[-1]) for n in names])


def forced_step(node: KillReviveNode[int], scores: np.ndarray, keep: int, rnd: int) -> None:
    """One local step of round `rnd` with the budget `keep` on the top `scores`."""
    node.scores = scores.copy()
    node.keep = keep
    node.train(1, round_number=rnd)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed steps per row (median)")
    parser.add_argument("--model", default=None, help="a model other than the study's")
    parser.add_argument("--max-train", type=int, default=0, help="cap the training rows (0: all)")
    args = parse_args(parser, SMOKE, argv)
    torch.set_num_threads(1)

    over = {"model": args.model} if args.model else {}
    # any lr: a step's time does not depend on it (1.6e-2: the study's earlier pick)
    base = {**SETTING, **over, "seed": 0, "lr": 1.6e-2, "max_train": args.max_train}
    cfg = SimConfig(**base, method="kill-revive")
    work = load_workload(cfg, cfg.nodes, max_train=cfg.max_train)
    node = work.node(0)
    assert isinstance(node, KillReviveNode)
    plain_cfg = SimConfig(**base, method="dec-lora", gradient_tracking=False)
    plain = load_workload(plain_cfg, plain_cfg.nodes, max_train=plain_cfg.max_train).node(0)

    layers = module_layers(node)
    keep = node.keep
    top = layers.astype(float)  # the highest layers score highest
    bottom = -top
    rows: dict[str, Callable[[], object]] = {
        "dec-lora": lambda: plain.train(1),
        "revive": lambda: forced_step(node, top, keep, 1),
        "budget-top": lambda: forced_step(node, top, keep, 2),
        "budget-bottom": lambda: forced_step(node, bottom, keep, 2),
        "head-only": lambda: forced_step(node, top, 0, 2),
    }
    for fn in rows.values():  # warm-up: allocations, first kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    print(
        f"Kill-and-Revive local-step time, model {cfg.model}, batch {cfg.batch_size}, "
        f"max_length {cfg.max_length}, {len(layers)} modules in {len(set(layers))} layers, "
        f"budget {keep}, median of {args.repeat}, one thread, load average {load_average()}"
    )
    header = f"{'row':<14} {'ms/step':>9} {'vs dec-lora':>12} {'time saved':>11}"
    print(header)
    print("-" * len(header))
    ref = statistics.median(times["dec-lora"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<14} {1e3 * med:>9.1f} {med / ref:>11.2f}x {1 - med / ref:>10.0%}")


if __name__ == "__main__":
    main()
