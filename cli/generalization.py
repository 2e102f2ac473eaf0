"""Does parity with centralized LoRA hold where nobody tuned for it? (`experiment --task swarm`)

Four swarms under Dirichlet(0.1) label skew: a ring of 8, a star of 6, G(12, 0.3)
(resampled until connected) and a 4 x 4 torus. Rows, each on the same samples:

- `plain`: Dec-LoRA as published (constant lr, no tracking, one exchange a round);
- `recipe`: the defaults of `start` (`Recipe`), and of `simulate` and `lab` before
  they accelerated: gradient tracking with each node's gradient weighed by its
  training examples (`--weighting examples`), warmup + cosine decay over the planned
  rounds, lr x sqrt(nodes), and as many exchanges a round as the topology's spectral
  gap asks (`mixing.gossip_steps_for`);
- `recipe-q4`: the recipe with 4-bit messages;
- `accelerated`: the recipe with Chebyshev-accelerated gossip and the step after
  mixing (`node/acceleration.py`; K = 1 only, which the step after mixing needs): the
  defaults of `simulate` and `lab` since this row's results;
- `accelerated-q4`: `accelerated` with 4-bit messages;
- `central`: one adapter on the union of the nodes' shares, the swarm's total steps.

Selection reads validation figures only (10% of every node's share, held out from
training; `Workload.validation_rows`): `plain`, `recipe` and `accelerated` pick lr
and K on the ring
of 8 (the other settings are not tuned on); every setting's centralized reference
picks its lr. Phase 1 runs every grid value with seed 0; its `finalists` best values
then run with the other tuning seeds (1, 2) too, and the pick is the best mean
validation over the tuning seeds (one seed's 166-200 validation articles cannot
separate neighbouring values). Rounds follow from K: every node takes `steps` local
steps. Phase 2 runs every row on every setting with seeds 0-4 at the chosen values
(seeds 3 and 4 chose nothing, on any setting); the table reports the
final round after the consensus finish, mean ± std over seeds and a 95% bootstrap
interval over seeds and test examples (`node/stats.py`).
Finished runs are not repeated (a run is one JSON file), except one stored without the
validation figures its job asks for (`Job.done`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from declora.cli.job_pool import run_in_pool
from declora.node.acceleration import UNACCELERATED
from declora.node.report import to_jsonable, write_json
from declora.node.simulator import CENTRAL_EVALS, SimConfig, Simulation
from declora.node.stats import format_interval, summarize, verdict

PLAIN: dict[str, Any] = {  # Dec-LoRA as published: none of the recipe's parts
    **UNACCELERATED,
    "gradient_tracking": False,
    "gossip_steps": 1,
    "swarm_size": 1,
    "lr_schedule": "constant",
    "warmup_steps": 0,
}
ACCELERATED: dict[str, Any] = {"gossip_acceleration": "chebyshev", "step_after_mixing": True}
ROWS: dict[str, dict[str, Any]] = {
    "plain": PLAIN,
    "recipe": UNACCELERATED,
    "recipe-q4": {**UNACCELERATED, "codec": "q4"},
    "accelerated": ACCELERATED,
    "accelerated-q4": {**ACCELERATED, "codec": "q4"},
}
# rows with their own selection; each q4 row takes its fp32 row's values
SELECTED_ROWS = ("plain", "recipe", "accelerated")
FP32_OF = {"recipe-q4": "recipe", "accelerated-q4": "accelerated"}
# the accelerated rows, each paired with the recipe's row of its codec
UNACCELERATED_OF = {"accelerated": "recipe", "accelerated-q4": "recipe-q4"}
C = TypeVar("C", float, tuple[float, int])  # a selection's candidate: lr, or (lr, K)
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
    seeds: tuple[int, ...]  # the reported seeds (phase 2)
    tune_on: str  # the setting the swarm rows select lr and K on
    finalists: int = 2  # seed 0's best values, re-run with every tuning seed before the pick
    tuning_seeds: tuple[int, ...] = (0, 1, 2)  # the selection's seeds (phases 1 and 1b)
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
    seeds=(0, 1, 2, 3, 4),
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

    def result(self, output: Path) -> dict[str, Any]:
        """Its stored run (a JSON object)."""
        return dict(json.loads(self.path(output).read_text()))

    def done(self, output: Path) -> bool:
        """Whether its JSON exists and was run as the job asks: a job that wants the
        validation figures is not done by a run stored without them (it is run again;
        its other figures are reproduced, the runs being deterministic). A run records
        whether it was asked (`validated`), so one whose shares held no validation rows
        is not run again."""
        path = self.path(output)
        if not path.is_file():
            return False
        if not self.validate:
            return True
        res = json.loads(path.read_text())
        asked = res.get("validated", False)
        return asked or "validation" in res or "validation" in res.get("final", {})


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
    res["validated"] = job.validate
    write_json(job.path(output), res)
    return job.name


def run_jobs(
    jobs: Iterable[Job],
    output: Path,
    workers: int,
    say: Callable[[str], None] = print,
    run: Callable[[Job, Path], str] = run_job,
) -> None:
    """Run the jobs not `done`, `workers` at a time (spawned processes), each with `run`
    (a module-level function: it is pickled to the workers)."""
    todo = [j for j in jobs if not j.done(output)]
    if not todo:
        return
    say(f"{len(todo)} runs to do ({workers} at a time)")
    if workers <= 1:
        for job in todo:
            say(f"done {run(job, output)}")
        return
    run_in_pool(run, todo, output, workers, say)


def row_lrs(study: Study, row: str) -> tuple[float, ...]:
    """The lr grid a swarm row selects from."""
    return study.lrs + (study.plain_extra_lrs if row == "plain" else ())


def _candidates(study: Study, row: str, setting: str) -> list[tuple[float, int]]:
    """The (lr, K) values a row selects from on `setting` (references: K = 1)."""
    if row == "central":
        return [(lr, 1) for lr in study.central_lrs]
    ks = (1,) if ROWS.get(row, {}).get("step_after_mixing") else study.ks
    return [(lr, k) for lr in row_lrs(study, row) for k in ks]


def _selections(study: Study) -> list[tuple[str, str]]:
    """Every selection the study makes: (row, setting)."""
    return [(row, study.tune_on) for row in SELECTED_ROWS] + [
        ("central", s) for s in study.settings
    ]


def _validation(
    study: Study, output: Path, row: str, setting: str, lr: float, k: int, seed: int
) -> float:
    """A selection run's validation accuracy: the swarm rows' worst node after the
    consensus finish, the reference's model."""
    res = _job(study, setting, row, lr, k, seed).result(output)
    if row == "central":
        return float(res["validation"]["accuracy"])
    return float(res["final"]["validation"]["honest_worst_accuracy"])


def best_first(scores: Mapping[C, float]) -> list[C]:
    """The candidates (an lr, or an (lr, K) pair) by score, best first; ties go to the
    smaller candidate (the smaller lr, then the smaller K)."""
    return sorted(scores, key=lambda c: (-scores[c], c))


def mean_pick(
    finalists: Iterable[C], score: Callable[[C, int], float], seeds: Iterable[int]
) -> tuple[C, dict[C, tuple[float, list[float]]]]:
    """(the finalist with the best mean of `score(candidate, seed)` over `seeds`, ties to
    the smaller; every finalist's (mean, per-seed scores))."""
    means = {}
    for c in finalists:
        per_seed = [score(c, s) for s in seeds]
        means[c] = (float(np.mean(per_seed)), per_seed)
    return best_first({c: m for c, (m, _) in means.items()})[0], means


def _ranked(study: Study, output: Path, row: str, setting: str) -> list[tuple[float, int]]:
    """The candidates by seed 0's validation, best first; ties go to the smaller lr and K."""
    seed = study.tuning_seeds[0]
    candidates = _candidates(study, row, setting)
    return best_first({c: _validation(study, output, row, setting, *c, seed) for c in candidates})


def selection_jobs(study: Study) -> list[Job]:
    """Phase 1 (seed 0): the swarm rows' lr x K grid on `tune_on`; every setting's
    centralized lr grid."""
    seed = study.tuning_seeds[0]
    return [
        _job(study, setting, row, lr, k, seed)
        for row, setting in _selections(study)
        for lr, k in _candidates(study, row, setting)
    ]


def finalist_jobs(study: Study, output: Path) -> list[Job]:
    """Phase 1b (after phase 1): each selection's `finalists` best values by seed 0's
    validation, with the other tuning seeds."""
    return [
        _job(study, setting, row, lr, k, seed)
        for row, setting in _selections(study)
        for lr, k in _ranked(study, output, row, setting)[: study.finalists]
        for seed in study.tuning_seeds[1:]
    ]


def select(study: Study, output: Path) -> dict[str, Any]:
    """The chosen values, from validation figures only (phases 1 and 1b done): among
    each selection's finalists, the best mean validation accuracy over the seeds; ties
    go to the smaller lr and K. Writes selection.json and selection.md."""
    chosen: dict[str, Any] = {"rows": {}, "central": {}, "grid": []}
    for row, setting in _selections(study):
        ranked = _ranked(study, output, row, setting)
        (lr, k), means = mean_pick(
            ranked[: study.finalists],
            lambda c, s: _validation(study, output, row, setting, *c, s),  # noqa: B023
            study.tuning_seeds,
        )
        mean, per_seed = means[(lr, k)]
        for c in _candidates(study, row, setting):
            seed0 = _validation(study, output, row, setting, *c, study.tuning_seeds[0])
            entry = {"row": row, "setting": setting, "lr": c[0], "k": c[1], "seed0": seed0}
            if c in means:
                entry["per_seed"], entry["mean"] = means[c][1], means[c][0]
            chosen["grid"].append(entry)
        pick = {"lr": lr, "k": k, "mean_validation": mean, "per_seed": per_seed}
        if row == "central":
            chosen["central"][setting] = pick
        else:
            chosen["rows"][row] = pick
    for q4, fp32 in FP32_OF.items():
        chosen["rows"][q4] = chosen["rows"][fp32]
    write_json(output / "selection.json", chosen)
    (output / "selection.md").write_text(selection_table(chosen))
    return chosen


def selection_table(chosen: dict[str, Any]) -> str:
    """The grid's validation figures (markdown): the swarm rows' worst node, each
    reference's model; seed 0 for every value, each seed and the mean for the
    finalists; the pick's mean in bold."""
    lines = [
        "| row | setting | lr | K | validation, seed 0 (%) | finalists: per seed (%) | mean (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in chosen["grid"]:
        central = g["row"] == "central"
        c = chosen["central"][g["setting"]] if central else chosen["rows"][g["row"]]
        pick = (c["lr"], c["k"]) == (g["lr"], g["k"])
        per_seed = " / ".join(f"{100 * v:.1f}" for v in g.get("per_seed", []))
        mean = f"{100 * g['mean']:.1f}" if "mean" in g else ""
        mean = f"**{mean}**" if pick else mean
        setting = g["setting"] if central else f"{g['setting']} (tuned on)"
        k = "" if central else str(g["k"])
        lines.append(
            f"| {g['row']} | {setting} | {g['lr']:g} | {k} | {100 * g['seed0']:.1f} | "
            f"{per_seed} | {mean} |"
        )
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
    A q4 row is also compared with its fp32 row's worst node of the same seed
    (`FP32_OF`), and an accelerated row with the recipe's of its codec
    (`UNACCELERATED_OF`). A setting with unfinished seeds shows the finished ones (and
    says how many)."""
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
        central = [jobs[(setting, "central", s)].result(output) for s in seeds]
        ref = [outcomes(c["correct"]) for c in central]
        lr = chosen["central"][setting]["lr"]
        iv = summarize(ref, shared_examples=True)
        lines.append(f"| {name} | centralized (lr {lr:g}) | {format_interval(iv)} | | | |")
        worst: dict[str, tuple[list[np.ndarray], float]] = {}  # row: worst nodes, KiB
        for row in ROWS:
            runs = [jobs[(setting, row, s)].result(output) for s in seeds]
            nodes = [node_outcomes(r) for r in runs]
            diff = summarize(nodes, ref, shared_examples=True)
            note = f"{verdict(diff, PARITY_MARGIN)} at {PARITY_MARGIN:g}"
            kib = float(np.mean([r["final"]["bytes_sent_per_node"] for r in runs])) / 1024
            worst[row] = [worst_node_outcomes(r) for r in runs], kib
            if row in FP32_OF:
                fp32, fp32_kib = worst[FP32_OF[row]]
                q4 = summarize(nodes, fp32, shared_examples=True)
                note += (
                    f"; vs fp32 {format_interval(q4)}: {verdict(q4, Q4_MARGIN)} at "
                    f"{Q4_MARGIN:g}, {fp32_kib / kib:.1f}x fewer bytes"
                )
            if row in UNACCELERATED_OF:
                base = UNACCELERATED_OF[row]
                gain = summarize(nodes, worst[base][0], shared_examples=True)
                note += f"; vs {base} {format_interval(gain)}"
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
    """Phase 1, its finalists, selection, phase 2, table (each resumes where it
    stopped)."""
    out = output or study.output
    run_jobs(selection_jobs(study), out, workers, say)
    run_jobs(finalist_jobs(study, out), out, workers, say)
    chosen = select(study, out)
    say(f"chosen on validation: {json.dumps(chosen['rows'])} {json.dumps(chosen['central'])}")
    run_jobs(final_jobs(study, chosen).values(), out, workers, say)
    return table(study, out, chosen)
