"""A prototype of Chebyshev-accelerated gossip under the parity study's recipe (README,
parity study: "What holds the swarm back"). Not part of the product: `chebyshev.patch`
changes a copy of `node/`, switched on by the environment variable PROTO_CHEB (the
mixing matrix's second eigenvalue lambda), so the product's own code path is unchanged.

Within a training round's G exchanges, exchange k mixes the adapter x and tracking's
z by the Chebyshev semi-iteration

    x^k = omega_k W x^(k-1) + (1 - omega_k) x^(k-2),
    omega_1 = 1, omega_2 = 1 / (1 - lambda^2 / 2), omega_k = 1 / (1 - lambda^2 omega_(k-1) / 4)

(W x: today's mixing step; c_i moves by z^k - z^(k-1), so the mean of the corrections
stays 0), which leaves the average as it is and shrinks the disagreement by
1 / T_G(1 / lambda) instead of lambda^G: on the star of 6 (lambda = 5/6) four
exchanges give 0.16 instead of 0.48, for the same bytes. The consensus finish keeps
iterating (omega tends to its limit). fp32 only (the study's recipe). Known limits,
none reached by the stored runs: a node that skips `train` keeps its exchange count
(its omega then differs from its neighbours' and the average moves), and a node with
no neighbours is still extrapolated.

Variant `d` adds the step after mixing of `../prototype/` (apply its patch first, then
this one; PROTO_D): a round's gradient is sent as z but applied only after the round's
exchanges, along the mixed z, which Chebyshev mixing brings closer to the swarm's
mean gradient where G exchanges of plain gossip leave it far (the torus's G = 2).
With a consensus finish of one round or more, `begin_finish` applies the last deferred
step after the round's G exchanges, so the first finish exchange extrapolates against
x^(G-1), which lacks it, and scales the step by omega; every stored run of `d` ended
with no finish rounds.

Each run is the parity study's recipe (`SWARM_STUDY.config(setting, "recipe", lr, 1,
seed)`: tracking, `--weighting examples`, warmup + cosine, lr x sqrt(nodes), G from the
topology) at the recipe's lr (4e-3, chosen on ring-8's validation), and records the
worst node's validation accuracy after the consensus finish (the test figure is stored
too and was not read for any choice).

    rm -rf /tmp/cheb && mkdir -p /tmp/cheb/declora && cp -r node cli proto /tmp/cheb/declora/
    patch -d /tmp/cheb/declora -p1 < results/swarm/diagnostics/prototype/prototype.patch
    patch -d /tmp/cheb/declora -p1 < results/swarm/diagnostics/chebyshev/chebyshev.patch
    PYTHONPATH=/tmp/cheb python results/swarm/diagnostics/chebyshev/run.py star-6:0 torus-16:0:d ...

An argument is `setting:seed` or `setting:seed:d`; two runs at a time. `--table`
prints, per setting, the worst node's mean validation accuracy over seeds 0-2 of the
recipe (`../../runs/`), the step after mixing alone (`../prototype/`), Chebyshev alone
and both, from the stored runs. (The plain runs
were made with this patch alone; the prototype's patch changes nothing unless PROTO_D
or PROTO_V is set.)
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent
LR = 4e-3


def run(args: tuple[str, int, str]) -> dict[str, Any]:
    setting, seed, variant = args
    path = OUT / f"chebyshev{'-d' if variant else ''}-{setting}-seed{seed}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    import torch

    from declora.cli.generalization import SWARM_STUDY
    from declora.node.mixing import mixing_matrix, second_eigenvalue
    from declora.node.simulator import Simulation

    torch.set_num_threads(1)
    cfg = SWARM_STUDY.config(setting, "recipe", LR, 1, seed)
    sim = Simulation(cfg)
    lam = second_eigenvalue(mixing_matrix(cfg.mixing, sim.topology))
    os.environ["PROTO_CHEB"] = repr(lam)
    os.environ["PROTO_D"] = "1" if variant == "d" else ""
    fin = sim.run(validate=True).final
    res = {
        "setting": setting, "variant": variant or "chebyshev", "lr": LR, "seed": seed,
        "lambda": lam,
        "gossip_steps": cfg.exchanges_per_round,
        "val": fin["validation"]["honest_worst_accuracy"],
        "test": fin["after_consensus"]["honest_worst_accuracy"],
        "bytes_sent_per_node": fin["bytes_sent_per_node"],
        "consensus_rounds": fin["consensus_rounds"],
    }  # fmt: skip
    path.write_text(json.dumps(res))
    return res


def table() -> None:
    def val(path: Path) -> float | None:
        if not path.is_file():
            return None
        run = json.loads(path.read_text())
        fin = run.get("final")
        return float(fin["validation"]["honest_worst_accuracy"] if fin else run["val"])

    print("setting: recipe | step after mixing | chebyshev | both (validation, seeds 0-2)")
    for setting in ("ring-8", "star-6", "er-12", "torus-16"):
        cells = []
        for name in (
            "../../runs/recipe-{g}-lr0.004-k1-seed{s}",
            "../prototype/d-{g}-lr0.004-seed{s}",
            "chebyshev-{g}-seed{s}",
            "chebyshev-d-{g}-seed{s}",
        ):
            got = [val(OUT / (name.format(g=setting, s=s) + ".json")) for s in (0, 1, 2)]
            per = " / ".join("-" if v is None else f"{100 * v:.1f}" for v in got)
            done = [v for v in got if v is not None]
            mean = f"{100 * sum(done) / len(done):.1f}" if len(done) == 3 else "-"
            cells.append(f"{per} (mean {mean})")
        print(f"{setting}: " + " | ".join(cells))


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        table()
        sys.exit()
    parts = [[*a.split(":"), ""] for a in sys.argv[1:]]
    jobs = [(p[0], int(p[1]), p[2]) for p in parts]
    with ProcessPoolExecutor(2) as pool:
        for r in pool.map(run, jobs):
            print(
                f"{r.get('variant', 'chebyshev')} {r['setting']} seed {r['seed']} "
                f"(lambda {r['lambda']:.3f}, "
                f"G {r['gossip_steps']}): validation {100 * r['val']:.1f}",
                flush=True,
            )
