"""Two prototypes of what separates the swarm from one adapter trained on the union with
the swarm's optimizer steps (README, parity study: "What the swarm lacks"). Not part of
the product: `prototype.patch` changes a copy of `node/` and each variant is switched on
by an environment variable, so the product's own code path is unchanged.

- `c` (control): the patch's hand-written AdamW step (PROTO_V with PROTO_NOMIX); it
  must give the recipe's own validation figure (it does: 88.6 on ring-8's seed 0).
- `v`: AdamW's second moment from tracking's mixed z of the previous round (the node's
  estimate of the swarm's corrected gradient after that round's exchanges) instead of
  its own gradient.
- `d` (step after mixing): a round's one local step computes its gradient (weighed,
  corrected, sent as z) but applies it only after the round's exchanges, with the
  correction c_i those exchanges produced: the step's direction is g_i + c_i(new),
  which on a complete graph is the union's gradient exactly (so every node keeps the
  same adapter and AdamW state: one adapter with the swarm's steps, `large-batch`).
  K = 1 only. A known limit: the simulator's consensus finish measures the nodes'
  distance before `begin_finish` applies the last deferred step, so where it runs no
  finish round (the ring) that step (at 0.3% of the peak lr) is not mixed.

Each run is the parity study's recipe (`SWARM_STUDY.config(setting, "recipe", lr, 1,
seed)`: tracking, `--weighting examples`, warmup + cosine, lr x sqrt(nodes), G from the
topology), ring-8's nodes on a complete graph with one exchange for `complete`, and
records the worst node's validation accuracy after the consensus finish (the test
figure is stored too and was not read).

    rm -rf /tmp/proto && mkdir -p /tmp/proto/declora && cp -r node cli proto /tmp/proto/declora/
    patch -d /tmp/proto/declora -p1 < results/swarm/diagnostics/prototype/prototype.patch
    PYTHONPATH=/tmp/proto python results/swarm/diagnostics/prototype/run.py ring-8:0.004:0:d ...

An argument is `setting-or-complete:lr:seed:variant`; two runs at a time.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent


def run(args: tuple[str, float, int, str]) -> dict[str, Any]:
    topo, lr, seed, tag = args
    os.environ["PROTO_V"] = "1" if tag in ("v", "c") else ""
    os.environ["PROTO_NOMIX"] = "1" if tag == "c" else ""
    os.environ["PROTO_D"] = "1" if tag == "d" else ""
    import torch

    from declora.cli.generalization import SWARM_STUDY
    from declora.node.simulator import SimConfig, Simulation

    path = OUT / f"{tag}-{topo}-lr{lr:g}-seed{seed}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    torch.set_num_threads(1)
    setting = topo if topo in SWARM_STUDY.settings else "ring-8"
    cfg = SWARM_STUDY.config(setting, "recipe", lr, 1, seed)
    extra = {"topology": "complete", "gossip_steps": 1} if topo == "complete" else {}
    cfg = SimConfig(**{**cfg.model_dump(), **extra})
    fin = Simulation(cfg).run(validate=True).final
    res = {
        "topo": topo, "lr": lr, "seed": seed, "tag": tag,
        "val": fin["validation"]["honest_worst_accuracy"],
        "test": fin["after_consensus"]["honest_worst_accuracy"],
    }  # fmt: skip
    path.write_text(json.dumps(res))
    return res


if __name__ == "__main__":
    jobs = []
    for arg in sys.argv[1:]:
        topo, lr, seed, tag = arg.split(":")
        jobs.append((topo, float(lr), int(seed), tag))
    with ProcessPoolExecutor(2) as pool:
        for r in pool.map(run, jobs):
            print(r["tag"], r["topo"], f"lr {r['lr']:g}", f"seed {r['seed']}",
                  f"validation {100 * r['val']:.1f}", flush=True)  # fmt: skip
