"""Does parity with centralized LoRA hold where nobody tuned for it? (`experiment --task swarm`)

Four swarms under Dirichlet(0.1) label skew: a ring of 8, a star of 6, G(12, 0.3)
(resampled until connected) and a 4 x 4 torus. Rows, each on the same samples:

- `plain`: Dec-LoRA as published (constant lr, no tracking, one exchange a round);
- `recipe`: the defaults of `simulate`, `lab` and `start` (`Recipe`): gradient tracking
  with each node's gradient weighed by its training examples (`--weighting examples`),
  warmup + cosine decay over the planned rounds, lr x sqrt(nodes), and as many
  exchanges a round as the topology's spectral gap asks (`mixing.gossip_steps_for`);
- `recipe-q4`: the recipe with 4-bit messages;
- `central`: one adapter on the union of the nodes' shares, the swarm's total steps.

Selection (phase 1, seed 0) reads validation figures only (10% of every node's
share, held out from training; `Workload.validation_rows`): `plain` and `recipe`
pick lr and K on the ring of 8 (the other settings are not tuned on); every
setting's centralized reference picks its lr. Rounds follow from K: every node takes
`STEPS` local steps. Phase 2 runs every row on every setting with seeds 0, 1, 2 at
the chosen values; the table reports the final round after the consensus finish,
mean ± std over seeds and a 95% bootstrap interval over seeds and test examples
(`node/stats.py`). Finished runs are not repeated (a run is one JSON file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from declora.node.report import to_jsonable, write_json
from declora.node.simulator import CENTRAL_EVALS, SimConfig, Simulation
from declora.node.stats import format_interval, summarize, verdict

PLAIN: dict[str, Any] = {  # Dec-LoRA as published: none of the recipe's parts
    "gradient_tracking": False,
    "gossip_steps": 1,
    "swarm_size": 1,
    "lr_schedule": "constant",
    "warmup_steps": 0,
}
ROWS: dict[str, dict[str, Any]] = {
    "plain": PLAIN,
    "recipe": {},
    "recipe-q4": {"codec": "q4"},
}
SELECTED_ROWS = ("plain", "recipe")  # rows with their own selection; q4 takes the recipe's
PARITY_MARGIN = 1.5  # points: the recipe's worst node vs centralized
Q4_MARGIN = 1.0  # points: q4 vs fp32


@dataclass(frozen=True)
class Study:
    """The settings, grids and seeds of one study; `SWARM_STUDY` is the README's."""

    settings: dict[str, dict[str, Any]]
    common: dict[str, Any]
    steps: int  # local steps every node takes (rounds = steps / K)
    lrs: tuple[float, ...]  # the swarm rows' grid
    plain_extra_lrs: tuple[float, ...]  # ...and plain's beyond it (its best was at the edge)
    central_lrs: tuple[float, ...]  # the references' grid
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    tune_on: str  # the setting the swarm rows select lr and K on
    output: Path = Path("results/swarm")
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, setting: str, row: str, lr: float, k: int, seed: int) -> SimConfig:
        """A row's run (validated afresh: the adaptive defaults see its own values)."""
        over = ROWS.get(row, {})
        return SimConfig(
            **{**self.common, **self.settings[setting], **over},
            lr=lr,
            local_steps=k,
            rounds=self.steps // k,
            eval_every=self.steps // k,
            seed=seed,
        )


SWARM_STUDY = Study(
    settings={
        "ring-8": {"nodes": 8, "topology": "ring"},
        "star-6": {"nodes": 6, "topology": "star"},
        "er-12": {"nodes": 12, "topology": "er:0.3"},
        "torus-16": {"nodes": 16, "topology": "torus"},
    },
    common={
        "partition_scheme": "dirichlet:0.1",
        "rank": 8,
        "max_length": 32,
        "batch_size": 16,
        "consensus_rounds": 300,
        "node_eval_every": 1000,
        "eval_before_consensus": False,
        "centralized": False,
        "threads": 1,
    },
    steps=30,
    lrs=(1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
    plain_extra_lrs=(3.2e-2,),
    central_lrs=(1e-3, 2e-3, 4e-3, 8e-3),
    ks=(1, 2),
    seeds=(0, 1, 2),
    tune_on="ring-8",
)


@dataclass(frozen=True)
class Job:
    """One run: a swarm row or a centralized reference, written to `path`."""

    name: str
    cfg: SimConfig
    central: bool
    validate: bool = True  # also score the validation rows (selection runs need them)

    def path(self, output: Path) -> Path:
        return output / "runs" / f"{self.name}.json"


def _job(study: Study, setting: str, row: str, lr: float, k: int, seed: int) -> Job:
    if row == "central":
        cfg = study.config(setting, "recipe", lr, 1, seed)
        return Job(f"central-{setting}-lr{lr:g}-seed{seed}", cfg, True)
    cfg = study.config(setting, row, lr, k, seed)
    return Job(f"{row}-{setting}-lr{lr:g}-k{k}-seed{seed}", cfg, False)


def run_job(job: Job, output: Path) -> str:
    """Run `job` (in a worker process) and write its JSON; returns the name."""
    t0 = time.perf_counter()
    sim = Simulation(job.cfg)
    if job.central:
        evals = CENTRAL_EVALS if job.validate else 0
        res: dict[str, Any] = {"config": job.cfg.model_dump(), **sim.run_centralized(evals=evals)}
    else:
        res = to_jsonable(sim.run(validate=job.validate))
    res["seconds"] = time.perf_counter() - t0
    write_json(job.path(output), res)
    return job.name


def run_jobs(
    jobs: Iterable[Job],
    output: Path,
    workers: int,
    say: Callable[[str], None] = print,
    run: Callable[[Job, Path], str] = run_job,
) -> None:
    """Run the jobs whose JSON is missing, `workers` at a time (spawned processes), each
    with `run` (a module-level function: it is pickled to the workers)."""
    todo = [j for j in jobs if not j.path(output).is_file()]
    if not todo:
        return
    say(f"{len(todo)} runs to do ({workers} at a time)")
    if workers <= 1:
        for job in todo:
            say(f"done {run(job, output)}")
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run, job, output) for job in todo]
        for fut in futures:
            say(f"done {fut.result()}")


def _load(job: Job, output: Path) -> dict[str, Any]:
    return dict(json.loads(job.path(output).read_text()))


def row_lrs(study: Study, row: str) -> tuple[float, ...]:
    """The lr grid a swarm row selects from."""
    return study.lrs + (study.plain_extra_lrs if row == "plain" else ())


def selection_jobs(study: Study) -> list[Job]:
    """Phase 1 (seed 0): the swarm rows' lr x K grid on `tune_on`; every setting's
    centralized lr grid."""
    seed = study.seeds[0]
    jobs = [
        _job(study, study.tune_on, row, lr, k, seed)
        for row in SELECTED_ROWS
        for lr in row_lrs(study, row)
        for k in study.ks
    ]
    jobs += [
        _job(study, s, "central", lr, 1, seed) for s in study.settings for lr in study.central_lrs
    ]
    return jobs


def select(study: Study, output: Path) -> dict[str, Any]:
    """The chosen values, from validation figures only: the swarm rows by their worst
    node's validation accuracy after the consensus finish, the references by their
    final validation accuracy; ties go to the smaller lr and K. Writes selection.json."""
    seed = study.seeds[0]
    chosen: dict[str, Any] = {"rows": {}, "central": {}, "grid": []}
    for row in SELECTED_ROWS:
        scored = []
        for lr in row_lrs(study, row):
            for k in study.ks:
                res = _load(_job(study, study.tune_on, row, lr, k, seed), output)
                val = res["final"]["validation"]["honest_worst_accuracy"]
                scored.append((val, -lr, -k))
                chosen["grid"].append({"row": row, "lr": lr, "k": k, "worst_validation": val})
        best = max(scored)
        chosen["rows"][row] = {"lr": -best[1], "k": -best[2], "worst_validation": best[0]}
    for setting in study.settings:
        by_lr = []
        for lr in study.central_lrs:
            res = _load(_job(study, setting, "central", lr, 1, seed), output)
            val = res["validation"]["accuracy"]
            by_lr.append((val, -lr))
            chosen["grid"].append(
                {"row": "central", "setting": setting, "lr": lr, "validation": val}
            )
        top = max(by_lr)
        chosen["central"][setting] = {"lr": -top[1], "validation": top[0]}
    chosen["rows"]["recipe-q4"] = chosen["rows"]["recipe"]
    write_json(output / "selection.json", chosen)
    (output / "selection.md").write_text(selection_table(chosen))
    return chosen


def selection_table(chosen: dict[str, Any]) -> str:
    """The grid's validation figures (markdown): worst node's for the swarm rows, the
    reference's for each setting; the chosen value in bold."""
    lines = ["| row | setting | lr | K | validation (%) |", "|---|---|---|---|---|"]
    for g in chosen["grid"]:
        if g["row"] == "central":
            pick = chosen["central"][g["setting"]]["lr"] == g["lr"]
            setting, k, val = g["setting"], "", g["validation"]
        else:
            c = chosen["rows"][g["row"]]
            pick = (c["lr"], c["k"]) == (g["lr"], g["k"])
            setting, k, val = "(tuned on)", str(g["k"]), g["worst_validation"]
        cell = f"**{100 * val:.1f}**" if pick else f"{100 * val:.1f}"
        lines.append(f"| {g['row']} | {setting} | {g['lr']:g} | {k} | {cell} |")
    return "\n".join(lines) + "\n"


def final_jobs(study: Study, chosen: dict[str, Any]) -> dict[tuple[str, str, int], Job]:
    """Phase 2: every row on every setting and seed at the chosen values."""
    jobs = {}
    for setting in study.settings:
        for seed in study.seeds:
            for row in ROWS:
                c = chosen["rows"][row]
                jobs[(setting, row, seed)] = _job(study, setting, row, c["lr"], c["k"], seed)
            lr = chosen["central"][setting]["lr"]
            jobs[(setting, "central", seed)] = _job(study, setting, "central", lr, 1, seed)
    return jobs


def outcomes(text: str) -> np.ndarray:
    """A run's 0/1 text of test outcomes as booleans (True = right)."""
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def node_outcomes(res: dict[str, Any]) -> np.ndarray:
    """Every node's test outcomes (nodes x examples, 1 = right)."""
    return np.stack([outcomes(t) for t in res["final"]["correct"]["nodes"]])


def worst_node_outcomes(res: dict[str, Any]) -> np.ndarray:
    """The test outcomes of the node with the lowest test accuracy."""
    nodes = node_outcomes(res)
    return nodes[int(nodes.mean(axis=1).argmin())]


def _done(
    study: Study, jobs: dict[tuple[str, str, int], Job], output: Path, setting: str
) -> list[int]:
    """The seeds of `setting` whose every row and reference has finished."""
    rows = [*ROWS, "central"]
    return [
        s for s in study.seeds if all(jobs[(setting, r, s)].path(output).is_file() for r in rows)
    ]


def table(study: Study, output: Path, chosen: dict[str, Any]) -> str:
    """The generalization table (markdown) from the finished phase-2 runs.

    A row's figure is its worst node after the consensus finish; its difference to
    the centralized reference of the same seed is paired by test example. Every seed
    scores the same test set, so the bootstrap draws one set of examples per replicate
    for all seeds, and takes the worst node inside each replicate (`stats.summarize`).
    q4 is compared with the fp32 recipe's worst node of the same seed. A setting with
    unfinished seeds shows the finished ones (and says how many)."""
    jobs = final_jobs(study, chosen)
    lines = [
        "| setting | row | worst node (%) | vs centralized (points) | verdict | KiB sent/node |",
        "|---|---|---|---|---|---|",
    ]
    for setting in study.settings:
        seeds = _done(study, jobs, output, setting)
        if not seeds:
            lines.append(f"| {setting} | not run yet | | | | |")
            continue
        name = setting if len(seeds) == len(study.seeds) else f"{setting} ({len(seeds)} seeds)"
        central = [_load(jobs[(setting, "central", s)], output) for s in seeds]
        ref = [outcomes(c["correct"]) for c in central]
        lr = chosen["central"][setting]["lr"]
        iv = summarize(ref, shared_examples=True)
        lines.append(f"| {name} | centralized (lr {lr:g}) | {format_interval(iv)} | | | |")
        fp32: list[np.ndarray] = []
        fp32_kib = 0.0
        for row in ROWS:
            runs = [_load(jobs[(setting, row, s)], output) for s in seeds]
            nodes = [node_outcomes(r) for r in runs]
            diff = summarize(nodes, ref, shared_examples=True)
            note = f"{verdict(diff, PARITY_MARGIN)} at {PARITY_MARGIN:g}"
            kib = float(np.mean([r["final"]["bytes_sent_per_node"] for r in runs])) / 1024
            if row == "recipe":
                fp32, fp32_kib = [worst_node_outcomes(r) for r in runs], kib
            if row == "recipe-q4":
                q4 = summarize(nodes, fp32, shared_examples=True)
                note += (
                    f"; vs fp32 {format_interval(q4)}: {verdict(q4, Q4_MARGIN)} at "
                    f"{Q4_MARGIN:g}, {fp32_kib / kib:.1f}x fewer bytes"
                )
            cfg = runs[0]["config"]
            label = f"{row} (lr {cfg['lr']:g}, K {cfg['local_steps']}, G {cfg['gossip_steps']})"
            alone = format_interval(summarize(nodes, shared_examples=True))
            lines.append(
                f"| {name} | {label} | {alone} | {format_interval(diff)} | {note} | {kib:,.0f} |"
            )
    text = "\n".join(lines) + "\n"
    (output / "table.md").write_text(text)
    return text


def run_study(
    study: Study = SWARM_STUDY,
    output: Path | None = None,
    workers: int = 2,
    say: Callable[[str], None] = print,
) -> str:
    """Phase 1, selection, phase 2, table (each resumes where it stopped)."""
    out = output or study.output
    run_jobs(selection_jobs(study), out, workers, say)
    chosen = select(study, out)
    say(f"chosen on validation: {json.dumps(chosen['rows'])} {json.dumps(chosen['central'])}")
    run_jobs(final_jobs(study, chosen).values(), out, workers, say)
    return table(study, out, chosen)
