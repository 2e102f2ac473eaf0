"""Diagnostics of the parity study (README "What holds the swarm back"), run once.

Not part of the product: the record of how those figures were made. Each run writes
one JSON here and is skipped when it exists; the summary is printed at the end.

1. `large-batch`: centralized LoRA with the swarm's number of optimizer steps. On
   ring-8 the swarm makes 30 steps a node of batch 16, so its average moves like 30
   steps of batch 128; this trains one adapter on the union of the 8 shares for 30
   steps of batch 128 (the schedule a node uses). Its lr is chosen on validation on
   seed 0 (the references' grid, doubled while the top wins), then seeds 0-2.
2. `g12`: the recipe as the study chose it (lr 8e-3, K 2, tracking) with 12 gossip
   steps a round instead of the 4 (`mixing.gossip_steps_for`) the ring and the star
   get, seeds 0-2, on both. Made before 150120b, when tracking mixed z in the first
   exchange of a round only; deleting the g12 JSONs re-runs it with today's tracking
   (every node weighed the same, as then: `--weighting nodes`).

3. `complete`: what held seed 1 back after that change. The recipe as the study then
   chose it (lr 4e-3, K 1, tracking in every exchange) on ring-8's seed-1 partition,
   on a complete graph (exact averaging every exchange), with `--weighting nodes`
   (every node the same, as that study ran) and `examples` (today's default); prints
   the worst node, the business class's test accuracy, and the share each class has
   in the objective each weighting minimises (from the partition alone).

4. `g8`: is the ring still short of mixing? The recipe as the study chooses it now
   (lr 4e-3, K 1, tracking, `--weighting examples`) with 8 exchanges a round instead
   of the 4 `mixing.gossip_steps_for` gives the ring of 8, on its tuning seeds 0-2;
   validation figures only (the worst node after the consensus finish), beside the
   study's own (`results/swarm/selection.json`, G = 4).

5. `conlora`: is factor-wise mixing (consensus interference) what the recipe lacks?
   The recipe (tracking, K 1, G from the topology, `--weighting examples`) with
   `--method conlora` (A frozen and shared, so averaging B averages B.A exactly; half
   the bytes). Its lr is chosen as the study chooses: seed 0's validation over 8e-3 ...
   6.4e-2 (the methods study's ConLoRA pick, 3.2e-2, bracketed; K stays 1), the best
   two re-run with seeds 1 and 2, the pick by mean validation. Then the pick on the four
   settings with seeds 0-2 (`conlora/runs/`), each seed's test figures paired with the
   study's centralized reference and its Dec-LoRA recipe of the same seed.

6. `complete-validation`: how much of the ring's shortfall is the ring? The recipe as
   chosen (lr 4e-3, K 1) on a complete graph of the ring's 8 nodes (one exchange a
   round averages exactly), on the tuning seeds 0-2; validation figures only, beside
   the ring's (`selection.json`) and those of one centralized adapter with the swarm's
   optimizer steps (`large-batch`, the same validation rows). On a complete graph the
   mean of the nodes' corrected gradients is the union's gradient, so what separates it
   from `large-batch` is that each node takes its own AdamW step on its own corrected
   gradient.

7. `mixing`: are the star and G(12, 0.3) short of mixing under today's recipe? The
   recipe as chosen (lr 4e-3, K 1, tracking, `--weighting examples`) with 12 exchanges
   a round instead of the 4 `mixing.gossip_steps_for` gives both (`mixing/runs/`), on
   seeds 0-2; validation figures only (the worst node after the consensus finish),
   beside the study's own runs of the recipe at G = 4 (`../runs/`). Twelve plain
   exchanges shrink the disagreement about as much as four Chebyshev-accelerated ones
   (worst case a round; star: 0.11 against 0.16; G(12, 0.3): 0.26-0.30 against
   0.28-0.31, seeds 0-2), so this asks what stronger mixing alone could buy;
   `chebyshev/run.py` prototypes the acceleration itself (on the star it got more than
   this: at this size the two differ by a few articles).

8. `torus-lr`: why does `accelerated` gain nothing on the torus? Two candidate causes
   are mixing (G = 2 exchanges leave 0.22 of the disagreement a round) and the lr scaled
   by sqrt(16), the largest of the four settings; G(12, 0.3)'s graphs leave 0.15-0.42
   and gain, also where they mix less. So this asks the lr: `accelerated` on the torus
   at lr 2e-3 (each node 8e-3) instead of 4e-3, seeds 0-2 (`torus-lr/runs/`);
   validation figures, beside the study's own runs at 4e-3 (`../runs/`). It found the
   same validation mean (95.6); the runs' test figures (README) are not a selection.

9. `lab-ring-4`: the lab's defaults on its own swarm (`make run`: MiniLM, 4 nodes on a
   ring, Dirichlet(0.5), 60 rounds of K = 1, lr 4e-3, 64 tokens, a finish of at most 50
   rounds), where one exchange a round leaves Chebyshev nothing to extrapolate and the
   step after mixing acts alone: the defaults against `UNACCELERATED` on seeds 0-2
   (`lab-ring-4/runs/`), the worst node's validation accuracy, and its test accuracy
   beside it (which chose nothing).

10. `validation-gaps`: is the torus's test gap to centralized its own? The study's
   phase-2 runs (`../runs/`, no new run) also score the validation rows, and so does
   each centralized reference (the union of the same rows). This prints, per setting and
   row, the worst node's gap to the reference of its seed on validation beside the same
   gap on test, seeds 0-4. Validation chose only the ring's lr, so on the other three
   settings it is a second, smaller held-out set (164-166 articles against 414).

11. `steps`: how far is the swarm from one adapter taking its steps? `accelerated`'s
   nodes end identical (worst node = the averaged model), and each node takes 30 steps,
   so the average moves like 30 steps on n x 16 examples, while the centralized
   reference takes 30 n steps of 16. This is `large-batch` on each of the
   four settings (one adapter on the union of the shares, 30 steps of batch 16 n, the
   recipe's schedule). Its lr is chosen as the study chooses (seed 0 over the
   references' grid, doubled while its top wins; the two best over seeds 0-2; the best
   mean validation), then seeds 0-4 on test (`steps/`), each paired with the study's
   centralized reference and its `accelerated` row of the same seed.

12. `torus-g4`: is the torus short of mixing? `accelerated` on the torus with 4
   exchanges a round instead of the 2 `mixing.gossip_steps_for` gives it (Chebyshev
   over 4 exchanges leaves about 0.02 of the disagreement a round instead of 0.22),
   seeds 0-4 (`torus-g4/runs/`): validation on the tuning seeds 0-2, and the test
   difference to the study's `accelerated` runs of the same seeds (which chose nothing).

    python results/swarm/diagnostics/diagnostics.py   # from the repo root, declora installed
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from declora.cli.generalization import (
    SWARM_STUDY,
    Job,
    best_first,
    final_jobs,
    mean_pick,
    node_outcomes,
    outcomes,
    run_jobs,
    worst_node_outcomes,
)
from declora.node.acceleration import UNACCELERATED
from declora.node.simulator import SimConfig, Simulation
from declora.node.stats import format_interval, summarize, t95
from declora.node.trainer import LocalTrainer
from declora.node.workload import load_workload

OUT = Path(__file__).parent
SEEDS = (0, 1, 2)


def cached(name: str, make: Any, *args: Any) -> dict[str, Any]:
    """`make(*args)`, written to `name`.json the first time, read from it after."""
    path = OUT / f"{name}.json"
    if not path.is_file():
        path.write_text(json.dumps(make(*args), indent=1))
    return json.loads(path.read_text())


def large_batch(lr: float, seed: int, setting: str = "ring-8") -> dict[str, Any]:
    cfg = SimConfig(
        **SWARM_STUDY.common, **SWARM_STUDY.settings[setting], rounds=SWARM_STUDY.steps,
        local_steps=1, seed=seed, lr=lr, gradient_tracking=False, gossip_steps=1,
    )  # fmt: skip
    work = load_workload(cfg, cfg.nodes, max_train=cfg.max_train)
    union = np.unique(np.concatenate(work.parts))
    batch = cfg.batch_size * cfg.nodes
    trainer = LocalTrainer(
        work.lm, work._encoded_rows(union), lr, batch, seed, cfg.weight_decay,
        grad_accumulation=cfg.grad_accumulation, max_grad_norm=cfg.max_grad_norm,
        schedule=cfg.schedule(1),
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer.train_steps(cfg.rounds)
    validation, test = work.encoded_validation(), work.encoded_test()
    assert validation is not None and test is not None
    return {
        "lr": lr, "seed": seed, "steps": trainer.step, "batch": batch,
        "seconds": time.perf_counter() - t0,
        "validation": work.lm.evaluate(trainer.vector(), validation),
        "test": work.lm.evaluate(trainer.vector(), test),
    }  # fmt: skip


def g12(setting: str, seed: int) -> dict[str, Any]:
    cfg = SWARM_STUDY.config(setting, "recipe", 8e-3, 2, seed)
    cfg = SimConfig(**{**cfg.model_dump(), "gossip_steps": 12, "weighting": "nodes"})
    fin = Simulation(cfg).run().final
    keep = ("after_consensus", "validation", "bytes_sent_per_node", "consensus_rounds")
    return {"setting": setting, "gossip_steps": 12, "seed": seed, **{k: fin[k] for k in keep}}


def validation_run(cfg: SimConfig, **labels: Any) -> dict[str, Any]:
    """`labels` and the run's final validation figures, bytes and finish rounds."""
    fin = Simulation(cfg).run(validate=True).final
    keep = ("validation", "bytes_sent_per_node", "consensus_rounds")
    return {**labels, **{k: fin[k] for k in keep}}


def g8(seed: int) -> dict[str, Any]:
    cfg = SWARM_STUDY.config("ring-8", "recipe", 4e-3, 1, seed)
    cfg = SimConfig(**{**cfg.model_dump(), "gossip_steps": 8})
    return validation_run(cfg, setting="ring-8", gossip_steps=8, seed=seed)


def conlora_config(setting: str, lr: float, seed: int) -> SimConfig:
    cfg = SWARM_STUDY.config(setting, "recipe", lr, 1, seed)
    return SimConfig(**{**cfg.model_dump(), "method": "conlora"})


def conlora_validation(lr: float, seed: int) -> dict[str, Any]:
    cfg = conlora_config("ring-8", lr, seed)
    return validation_run(cfg, setting="ring-8", method="conlora", lr=lr, seed=seed)


def conlora_jobs(lr: float) -> dict[tuple[str, int], Job]:
    """The pick on every setting with seeds 0-2 (seed-major, slow settings first)."""
    settings = ("torus-16", "er-12", "ring-8", "star-6")
    return {
        (g, s): Job(f"conlora-{g}-lr{lr:g}-k1-seed{s}", conlora_config(g, lr, s), False, False)
        for s in SEEDS
        for g in settings
    }


def conlora(workers: int = 2) -> None:
    def val(lr: float, seed: int) -> float:
        run = cached(f"conlora-ring-8-lr{lr:g}-seed{seed}", conlora_validation, lr, seed)
        return 100 * float(run["validation"]["honest_worst_accuracy"])

    grid = [8e-3, 1.6e-2, 3.2e-2, 6.4e-2]
    seed0 = {lr: val(lr, 0) for lr in grid}
    finalists = sorted(grid, key=lambda lr: (-seed0[lr], lr))[:2]
    means = {lr: [val(lr, s) for s in SEEDS] for lr in finalists}
    pick = max(finalists, key=lambda lr: (np.mean(means[lr]), -lr))
    chosen = json.loads((OUT.parent / "selection.json").read_text())
    dec_lora = chosen["rows"]["recipe"]
    print(
        "conlora ring-8 validation (worst node): seed 0",
        {f"{lr:g}": round(v, 1) for lr, v in seed0.items()},
        "finalists", {f"{lr:g}": [round(v, 1) for v in vs] for lr, vs in means.items()},
        f"pick {pick:g} (mean {np.mean(means[pick]):.1f}; the Dec-LoRA recipe's "
        f"{100 * dec_lora['mean_validation']:.1f})",
    )  # fmt: skip
    out = OUT / "conlora"
    jobs = conlora_jobs(pick)
    run_jobs(jobs.values(), out, workers)
    study = final_jobs(SWARM_STUDY, chosen)
    for setting in SWARM_STUDY.settings:
        mine = [json.loads(jobs[(setting, s)].path(out).read_text()) for s in SEEDS]
        ref, rec = ([
            json.loads(study[(setting, row, s)].path(OUT.parent).read_text())
            for s in SEEDS
        ] for row in ("central", "recipe"))  # fmt: skip
        nodes = [node_outcomes(r) for r in mine]
        vs_central = summarize(nodes, [outcomes(r["correct"]) for r in ref], shared_examples=True)
        worst = summarize(nodes, shared_examples=True)
        dec = summarize(nodes, [worst_node_outcomes(r) for r in rec], shared_examples=True)
        kib = np.mean([r["final"]["bytes_sent_per_node"] for r in mine]) / 1024
        dec_kib = np.mean([r["final"]["bytes_sent_per_node"] for r in rec]) / 1024
        print(
            f"conlora {setting} (lr {pick:g}): worst node {format_interval(worst)}; vs "
            f"centralized {format_interval(vs_central)}; vs the Dec-LoRA recipe "
            f"{format_interval(dec)}; {kib:,.0f} KiB/node against its {dec_kib:,.0f}"
        )


def mixing(workers: int = 2) -> None:
    settings = ("er-12", "star-6")
    jobs = {}
    for setting in settings:
        for s in SEEDS:
            cfg = SWARM_STUDY.config(setting, "recipe", 4e-3, 1, s)
            cfg = SimConfig(**{**cfg.model_dump(), "gossip_steps": 12})
            jobs[(setting, s)] = Job(f"g12-recipe-{setting}-seed{s}", cfg, False)
    run_jobs(jobs.values(), OUT / "mixing", workers)
    for setting in settings:
        mine = [json.loads(jobs[(setting, s)].path(OUT / "mixing").read_text()) for s in SEEDS]
        study = [
            json.loads((OUT.parent / "runs" / f"recipe-{setting}-lr0.004-k1-seed{s}.json")
                       .read_text()) for s in SEEDS
        ]  # fmt: skip
        for label, runs in (("G 12", mine), ("G 4", study)):
            val = [100 * r["final"]["validation"]["honest_worst_accuracy"] for r in runs]
            kib = np.mean([r["final"]["bytes_sent_per_node"] for r in runs]) / 1024
            print(
                f"mixing {setting} (validation, worst node) {label}: "
                f"{[round(v, 1) for v in val]} mean {np.mean(val):.1f}, {kib:,.0f} KiB/node"
            )


def torus_lr(workers: int = 2) -> None:
    jobs = {s: _torus_job(2e-3, s) for s in SEEDS}
    run_jobs(jobs.values(), OUT / "torus-lr", workers)
    study = OUT.parent
    for lr, out in ((2e-3, OUT / "torus-lr"), (4e-3, study)):
        runs = [json.loads(_torus_job(lr, s).path(out).read_text()) for s in SEEDS]
        val = [100 * r["final"]["validation"]["honest_worst_accuracy"] for r in runs]
        print(
            f"torus-lr accelerated torus-16 (validation, worst node) lr {lr:g}: "
            f"{[round(v, 1) for v in val]} mean {np.mean(val):.1f}"
        )


LAB_RING_4 = {
    "nodes": 4,
    "topology": "ring",
    "partition_scheme": "dirichlet:0.5",
    "rounds": 60,
    "eval_every": 60,
    "node_eval_every": 1000,
    "consensus_rounds": 50,
    "eval_before_consensus": False,
    "centralized": False,
    "threads": 1,
}


def lab_ring_4(workers: int = 2) -> None:
    rows = {"defaults": {}, "unaccelerated": UNACCELERATED}
    jobs = {
        (row, s): Job(f"{row}-ring-4-seed{s}", SimConfig(**LAB_RING_4, **over, seed=s), False)
        for row, over in rows.items()
        for s in SEEDS
    }
    run_jobs(jobs.values(), OUT / "lab-ring-4", workers)
    for row in rows:
        runs = [json.loads(jobs[(row, s)].path(OUT / "lab-ring-4").read_text()) for s in SEEDS]
        cfg = runs[0]["config"]
        val = [100 * r["final"]["validation"]["honest_worst_accuracy"] for r in runs]
        test = [float(100 * node_outcomes(r).mean(axis=1).min()) for r in runs]
        print(
            f"lab-ring-4 {row} ({cfg['gossip_acceleration']}, step after mixing "
            f"{cfg['step_after_mixing']}): validation {[round(v, 1) for v in val]} mean "
            f"{np.mean(val):.1f}; test {[round(v, 1) for v in test]} mean {np.mean(test):.1f}"
        )


def validation_gaps() -> None:
    study = OUT.parent
    chosen = json.loads((study / "selection.json").read_text())
    jobs = final_jobs(SWARM_STUDY, chosen)
    for setting in SWARM_STUDY.settings:
        for row in ("recipe", "accelerated", "accelerated-q4"):
            val, test = [], []
            for s in SWARM_STUDY.seeds:
                run = json.loads(jobs[(setting, row, s)].path(study).read_text())
                ref = json.loads(jobs[(setting, "central", s)].path(study).read_text())
                worst = run["final"]["validation"]["honest_worst_accuracy"]
                val.append(100 * (worst - ref["validation"]["accuracy"]))
                node = node_outcomes(run).mean(axis=1).min()
                test.append(100 * float(node - outcomes(ref["correct"]).mean()))
            print(
                f"validation-gaps {setting} {row} (worst node minus centralized, seeds 0-4): "
                f"validation {[round(v, 1) for v in val]} mean {np.mean(val):.1f}; "
                f"test {[round(t, 1) for t in test]} mean {np.mean(test):.1f}"
            )


def _steps_run(setting: str, lr: float, seed: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    path = OUT / "steps" / f"large-batch-{setting}-lr{lr:g}-seed{seed}.json"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(large_batch(lr, seed, setting), indent=1))
    return dict(json.loads(path.read_text()))


def _steps_runs(todo: list[tuple[str, float, int]], workers: int) -> None:
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for fut in [pool.submit(_steps_run, *t) for t in todo]:
            fut.result()


def steps(workers: int = 2) -> None:
    study = OUT.parent
    chosen = json.loads((study / "selection.json").read_text())
    jobs = final_jobs(SWARM_STUDY, chosen)
    tuning, seeds = SWARM_STUDY.tuning_seeds, SWARM_STUDY.seeds
    grid = list(SWARM_STUDY.central_lrs)
    settings = list(SWARM_STUDY.settings)[::-1]  # the torus first
    _steps_runs([(st, lr, tuning[0]) for st in settings for lr in grid], workers)
    picks = {}
    for setting in settings:
        lrs = list(grid)
        while True:
            val = {lr: _steps_run(setting, lr, tuning[0])["validation"]["accuracy"] for lr in lrs}
            if best_first(val)[0] != lrs[-1]:
                break
            _steps_runs([(setting, 2 * lrs[-1], tuning[0])], 1)
            lrs.append(2 * lrs[-1])
        finalists = best_first(val)[:2]
        _steps_runs([(setting, lr, s) for lr in finalists for s in tuning[1:]], workers)
        picks[setting], found = mean_pick(
            finalists,
            lambda lr, s: _steps_run(setting, lr, s)["validation"]["accuracy"],  # noqa: B023
            tuning,
        )
        means = {lr: m for lr, (m, _) in found.items()}
        print(
            f"steps {setting} (large-batch, batch {16 * SWARM_STUDY.settings[setting]['nodes']}): "
            f"seed 0 validation { ({f'{k:g}': round(100 * v, 1) for k, v in val.items()}) }, "
            f"finalists' means { ({f'{k:g}': round(100 * v, 1) for k, v in means.items()}) }, "
            f"pick {picks[setting]:g}"
        )
    _steps_runs([(st, picks[st], s) for st in settings for s in seeds], workers)
    for setting in settings:
        big, central, swarm = [], [], []
        for s in seeds:
            run = _steps_run(setting, picks[setting], s)
            big.append(100 * run["test"]["accuracy"])
            ref = json.loads(jobs[(setting, "central", s)].path(study).read_text())
            central.append(100 * float(outcomes(ref["correct"]).mean()))
            acc = json.loads(jobs[(setting, "accelerated", s)].path(study).read_text())
            swarm.append(100 * float(node_outcomes(acc).mean(axis=1).min()))
        print(
            f"steps {setting} (test, seeds 0-4): large-batch {[round(b, 1) for b in big]} mean "
            f"{np.mean(big):.1f}; centralized {np.mean(central):.1f}; accelerated's worst node "
            f"{np.mean(swarm):.1f}; large-batch minus centralized "
            f"{_seed_interval(np.subtract(big, central))}, accelerated minus large-batch "
            f"{_seed_interval(np.subtract(swarm, big))}"
        )


def _seed_interval(diff: np.ndarray) -> str:
    """'mean [low, high]': a Student-t 95% interval over the seeds (the test articles'
    own noise, shared by every seed, is not in it)."""
    half = t95(len(diff) - 1) * float(np.std(diff, ddof=1)) / np.sqrt(len(diff))
    mean = float(np.mean(diff))
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def _g4_job(seed: int) -> Job:
    cfg = SWARM_STUDY.config("torus-16", "accelerated", 4e-3, 1, seed)
    cfg = SimConfig(**{**cfg.model_dump(), "gossip_steps": 4})
    return Job(f"accelerated-g4-torus-16-lr0.004-k1-seed{seed}", cfg, False)


def torus_g4(workers: int = 2) -> None:
    seeds = SWARM_STUDY.seeds
    run_jobs([_g4_job(s) for s in seeds], OUT / "torus-g4", workers)
    g4 = [json.loads(_g4_job(s).path(OUT / "torus-g4").read_text()) for s in seeds]
    g2 = [json.loads(_torus_job(4e-3, s).path(OUT.parent).read_text()) for s in seeds]
    for label, runs in (("G 2 (the study's)", g2), ("G 4", g4)):
        val = [100 * r["final"]["validation"]["honest_worst_accuracy"] for r in runs[:3]]
        kib = np.mean([r["final"]["bytes_sent_per_node"] for r in runs]) / 1024
        print(
            f"torus-g4 accelerated torus-16 {label}: validation (seeds 0-2) "
            f"{[round(v, 1) for v in val]} mean {np.mean(val):.1f}; {kib:,.0f} KiB/node"
        )
    diff = summarize([node_outcomes(r) for r in g4], [worst_node_outcomes(r) for r in g2],
                     shared_examples=True)  # fmt: skip
    print(f"torus-g4 test, G 4 minus G 2 (worst node, seeds 0-4): {format_interval(diff)}")
    chosen = json.loads((OUT.parent / "selection.json").read_text())
    jobs = final_jobs(SWARM_STUDY, chosen)
    ref = [json.loads(jobs[("torus-16", "central", s)].path(OUT.parent).read_text()) for s in seeds]
    gap = summarize([node_outcomes(r) for r in g4], [outcomes(r["correct"]) for r in ref],
                    shared_examples=True)  # fmt: skip
    print(f"torus-g4 test, G 4 minus centralized (worst node, seeds 0-4): {format_interval(gap)}")


def _torus_job(lr: float, seed: int) -> Job:
    cfg = SWARM_STUDY.config("torus-16", "accelerated", lr, 1, seed)
    return Job(f"accelerated-torus-16-lr{lr:g}-k1-seed{seed}", cfg, False)


def complete_validation(seed: int) -> dict[str, Any]:
    cfg = SWARM_STUDY.config("ring-8", "recipe", 4e-3, 1, seed)
    cfg = SimConfig(**{**cfg.model_dump(), "topology": "complete", "gossip_steps": 1})
    return validation_run(cfg, topology="complete", seed=seed)


def complete(weighting: str) -> dict[str, Any]:
    cfg = SWARM_STUDY.config("ring-8", "recipe", 4e-3, 1, 1)
    cfg = SimConfig(
        **{**cfg.model_dump(), "topology": "complete", "gossip_steps": 1, "weighting": weighting}
    )
    sim = Simulation(cfg)
    fin = sim.run().final
    labels = sim.test_enc.labels.numpy()
    right = np.array([c == "1" for c in fin["correct"]["average"]])
    per_class = {n: float(right[labels == k].mean()) for k, n in enumerate(sim.lm.label_names)}
    train = sim.workload.train.labels
    counts = np.array([np.bincount(train[p], minlength=len(per_class)) for p in sim.parts])
    shares = {
        "nodes": (counts / counts.sum(1, keepdims=True)).mean(0).tolist(),
        "examples": (counts.sum(0) / counts.sum()).tolist(),
    }
    keep = ("after_consensus", "validation", "bytes_sent_per_node")
    return {"weighting": weighting, "seed": 1, "test_per_class": per_class,
            "objective_class_shares": shares, **{k: fin[k] for k in keep}}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    grid = [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    val = {lr: cached(f"large-batch-lr{lr:g}-seed0", large_batch, lr, 0) for lr in grid}
    while max(grid, key=lambda x: (val[x]["validation"]["accuracy"], -x)) == grid[-1]:
        grid.append(2 * grid[-1])
        top = grid[-1]
        val[top] = cached(f"large-batch-lr{top:g}-seed0", large_batch, top, 0)
    best = max(grid, key=lambda x: (val[x]["validation"]["accuracy"], -x))
    tests = [
        cached(f"large-batch-lr{best:g}-seed{s}", large_batch, best, s)["test"]["accuracy"]
        for s in SEEDS
    ]
    print(
        "large-batch validation:",
        {f"{k:g}": round(v["validation"]["accuracy"], 4) for k, v in val.items()},
    )
    print(f"large-batch lr {best:g}, test per seed", [round(100 * t, 1) for t in tests],
          f"mean {100 * np.mean(tests):.1f} std {100 * np.std(tests, ddof=1):.1f}")  # fmt: skip
    for setting in ("ring-8", "star-6"):
        runs = [cached(f"g12-{setting}-seed{s}", g12, setting, s) for s in SEEDS]
        worst = [100 * r["after_consensus"]["worst_accuracy"] for r in runs]
        kib = np.mean([r["bytes_sent_per_node"] for r in runs]) / 1024
        print(
            f"g12 {setting}: worst node per seed {[round(w, 1) for w in worst]}, "
            f"mean {np.mean(worst):.1f} std {np.std(worst, ddof=1):.1f}, {kib:,.0f} KiB/node"
        )
    g4 = json.loads((OUT.parent / "selection.json").read_text())["rows"]["recipe"]
    runs = [cached(f"g8-ring-8-seed{s}", g8, s) for s in SEEDS]
    val = [100 * r["validation"]["honest_worst_accuracy"] for r in runs]
    print(
        f"g8 ring-8 (validation, worst node): G 8 {[round(v, 1) for v in val]} mean "
        f"{np.mean(val):.1f}; G 4 {[round(100 * v, 1) for v in g4['per_seed']]} mean "
        f"{100 * g4['mean_validation']:.1f}; "
        f"{np.mean([r['bytes_sent_per_node'] for r in runs]) / 1024:,.0f} KiB/node"
    )
    conlora()
    runs = [cached(f"complete-validation-seed{s}", complete_validation, s) for s in SEEDS]
    full = [100 * r["validation"]["honest_worst_accuracy"] for r in runs]
    big = [100 * cached(f"large-batch-lr{best:g}-seed{s}", large_batch, best, s)["validation"]
           ["accuracy"] for s in SEEDS]  # fmt: skip
    print(
        f"complete graph (validation, worst node): {[round(v, 1) for v in full]} mean "
        f"{np.mean(full):.1f}; the ring (G 4) mean {100 * g4['mean_validation']:.1f}; "
        f"large-batch {[round(v, 1) for v in big]} mean {np.mean(big):.1f}"
    )
    mixing()
    torus_lr()
    lab_ring_4()
    validation_gaps()
    steps()
    torus_g4()
    for weighting in ("nodes", "examples"):
        run = cached(f"complete-ring-8-seed1-{weighting}", complete, weighting)
        names = list(run["test_per_class"])
        share = dict(zip(names, run["objective_class_shares"][weighting], strict=True))
        print(
            f"complete graph, seed 1, --weighting {weighting}: worst node "
            f"{100 * run['after_consensus']['worst_accuracy']:.1f}, business test accuracy "
            f"{100 * run['test_per_class']['business']:.0f}%, class shares of the objective "
            + ", ".join(f"{n} {100 * v:.0f}%" for n, v in share.items())
        )


if __name__ == "__main__":
    main()
