"""The decentralized methods side by side (`experiment --task methods`, issue 13).

The setting of the generalization study's ring (`SWARM_STUDY`: MiniLM, BBC News,
8 nodes, ring, Dirichlet(0.1), rank 8, max_length 32, batch 16, 30 local steps a
node, 10% of every share held out for validation, consensus finish), one local step
a round (K = 1: DECA's inner step, and every row the same bytes schedule), the same
samples for every row. Rows:

- one per `--method` (`ROWS`) with the recipe's defaults where the method allows
  them, as they were when it ran (no Chebyshev gossip or step after mixing, which
  `SETTING` pins: `UNACCELERATED`): the recipe resolves what a method refuses
  (tracking off for decaf and deca; one exchange a round for deca) and every run's
  JSON records the values it used; every row weighs the nodes the same (`--weighting
  nodes`: only the tracked methods could weigh by examples, and the rows share one
  objective); `kill-revive-untracked` is Kill-and-Revive without tracking (as it ran
  before it could track);
- `central-lora`: one adapter on the union of the shares, the swarm's 240 steps;
- `central-full`: the same with every parameter trained by AdamW
  (`full_finetune.FullModel`).

Selection reads validation figures only: each row's lr from its grid, by its worst
node's validation accuracy after the consensus finish (references: their own); ties
go to the smaller lr. LoRA rows take `LORA_LRS` (the generalization study's
grid); full fine-tuning rows (deca, central-full) take `FULL_LRS`, about 100x
smaller: full fine-tuning of BERT-size encoders is stable at 1e-5..1e-4 (BERT's own
grid is 2e-5..5e-5), whereas LoRA's few, zero-started parameters need 1e-3..1e-2.
A grid whose best validation figure is its top lr is extended by doubling the top
(`next_lr`, at most `EXTEND` times; `selection.md` shows a grid that hit the cap still
rising, or a pick by the mean at its top).
The grid runs with seed 0; its `FINALISTS` best lrs run with seeds 1 and 2 too, and the
pick is the best mean validation over the three seeds (one seed's 164-166 validation
articles cannot separate neighbouring lrs), as in the generalization study. The
pick's three runs are the row's results.

Measured per row (mean over the seeds):

- accuracy: the worst node after the consensus finish and the averaged model (mean ±
  std [95% interval] over seeds and test examples, `node/stats.py`);
- KiB sent per node: everything a node sent (training and finish), and training only;
- training seconds per node: the training part of every training round
  (`RoundRecord.seconds - mix_seconds`: the 8 nodes' local steps, one after another
  on one thread), summed and divided by 8; a reference's `train_seconds` (all 240
  steps, its curve's evaluations left out);
- peak memory (`node_memory`, once per row at its chosen lr): a fresh spawned process
  builds the workload and one node (references: their trainer) and runs a node's
  schedule of 30 steps (a reference's optimizer state is whole after its first); a
  node also gossips with its two ring neighbours (its own messages stand in for
  theirs: same sizes, same state kept). Its peak resident set
  (Linux VmHWM) includes Python, torch and the tokenized data set; "state" is the
  peak minus the resident set right after loading (VmRSS; the high-water mark is reset
  there, so loading's transient peak is not counted): what training adds.

Rows with gradient tracking are marked †. Below the table: Kill-and-Revive against
Dec-LoRA (`KR_BYTES`, `KR_TIME`, `KR_POINTS`) and DECA against Dec-LoRA, from the
runs. Finished runs are not repeated (a run is one JSON file), except one stored without
the validation figures its job asks for (`Job.done`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from declora.cli.generalization import (
    SWARM_STUDY,
    Job,
    best_first,
    mean_pick,
    node_outcomes,
    outcomes,
    run_job,
    run_jobs,
    worst_node_outcomes,
)
from declora.cli.job_pool import run_in_pool
from declora.node.acceleration import UNACCELERATED
from declora.node.full_finetune import FullModel
from declora.node.mixing import local_mh_weights
from declora.node.report import write_json
from declora.node.simulator import CENTRAL_EVALS, SimConfig, train_centralized
from declora.node.stats import format_interval, summarize, verdict
from declora.node.topology import from_spec
from declora.node.workload import Workload, load_workload

SETTING: dict[str, Any] = {
    **UNACCELERATED,  # as run: before simulate's default accelerated
    **SWARM_STUDY.common,
    **SWARM_STUDY.settings["ring-8"],
    "local_steps": 1,
    "rounds": SWARM_STUDY.steps,
    "eval_every": SWARM_STUDY.steps,
    # every node counts the same for every row: only the tracked methods could weigh
    # by examples (`--weighting`), and the table compares methods on one objective
    "weighting": "nodes",
}
ROWS: dict[str, dict[str, Any]] = {
    "dec-lora": {"method": "dec-lora"},
    "conlora": {"method": "conlora"},
    "decaf": {"method": "decaf"},
    "kill-revive": {"method": "kill-revive"},
    # Kill-and-Revive as it ran before it could track: what tracking adds, and costs
    "kill-revive-untracked": {"method": "kill-revive", "gradient_tracking": False},
    "deca": {"method": "deca"},
}
REFERENCES = ("central-lora", "central-full")
FULL_ROWS = ("deca", "central-full")  # every weight of a layer trains: `FULL_LRS`
LORA_LRS: tuple[float, ...] = SWARM_STUDY.lrs
FULL_LRS: tuple[float, ...] = (1.25e-5, 2.5e-5, 5e-5, 1e-4, 2e-4)
SEEDS: tuple[int, ...] = (0, 1, 2)  # the selection's seeds and the reported ones
FINALISTS = 2  # seed 0's best lrs of a row, re-run with the other seeds before the pick
EXTEND = 3  # a grid whose best lr is its top doubles the top, at most this often
KR_BYTES = 0.75  # Kill-and-Revive: at least this much fewer bytes than Dec-LoRA...
KR_TIME = 0.5  # ...this much less training time...
KR_POINTS = 1.0  # ...and its worst node within this many points
OUTPUT = Path("results/methods")


@dataclass(frozen=True)
class MethodJob(Job):
    """A run of this study: `full` trains every parameter (a reference); `memory`
    measures one node's peak memory instead (`node_memory`)."""

    full: bool = False
    memory: bool = False


def rows() -> tuple[str, ...]:
    return (*ROWS, *REFERENCES)


def lrs(row: str) -> tuple[float, ...]:
    return FULL_LRS if row in FULL_ROWS else LORA_LRS


def job(row: str, lr: float, seed: int, validate: bool = True, memory: bool = False) -> MethodJob:
    """A row's run at `lr` and `seed` (its memory measurement with `memory`)."""
    cfg = SimConfig(**{**SETTING, **ROWS.get(row, {})}, lr=lr, seed=seed)
    name = f"memory-{row}-lr{lr:g}" if memory else f"{row}-lr{lr:g}-seed{seed}"
    full = row == "central-full"
    return MethodJob(name, cfg, row in REFERENCES, validate and not memory, full, memory)


def run(j: Job, output: Path) -> str:
    """Run `j` (in a worker process) and write its JSON; returns the name."""
    if not isinstance(j, MethodJob) or not (j.full or j.memory):
        return run_job(j, output)
    t0 = time.perf_counter()
    if j.memory:
        res = node_memory(j)
    else:
        work = _workload(j)
        res = {"config": j.cfg.model_dump(), "full_finetune": True, **_central(work, j.validate)}
    res["seconds"] = time.perf_counter() - t0
    res["validated"] = j.validate
    write_json(j.path(output), res)
    return j.name


def _workload(j: MethodJob) -> Workload:
    torch.set_num_threads(j.cfg.threads or 1)
    kind = FullModel if j.full else None
    return load_workload(j.cfg, j.cfg.nodes, max_train=j.cfg.max_train, model_type=kind)


def _central(work: Workload, validate: bool) -> dict[str, Any]:
    return train_centralized(work, evals=CENTRAL_EVALS if validate else 0)


def _vm(key: str) -> int:
    """A /proc/self/status figure (VmRSS, VmHWM) in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def node_memory(j: MethodJob) -> dict[str, Any]:
    """One node's (a reference's: its trainer's) peak memory over its schedule; run it
    in a fresh process (the module docstring says what is counted)."""
    cfg = j.cfg
    work = _workload(j)
    work.encoded_train()
    gc.collect()
    loaded = _vm("VmRSS")
    reset = _reset_peak()
    steps = cfg.rounds * cfg.local_steps
    if j.central:
        work.centralized_trainer().train_steps(steps)
    else:
        topo = from_spec(cfg.topology, cfg.nodes, seed=cfg.seed)
        peers = {p: topo.degree(p) for p in topo.neighbors(0)}
        weights = local_mh_weights(topo.degree(0), peers)[1]
        node = work.node(0)
        for p in peers:
            node.add_peer(p)
        for r in range(1, cfg.rounds + 1):
            node.train(cfg.local_steps, round_number=r)
            for _ in range(cfg.exchanges_per_round):
                payload, tracker = node.outgoing(), node.tracker_outgoing()
                for p in peers:
                    node.receive(p, payload)
                    if tracker is not None:
                        node.receive_tracker(p, tracker)
                node.mix(weights)
    return {
        "config": cfg.model_dump(),
        "steps": steps,
        "rss_loaded": loaded,
        "peak": _vm("VmHWM"),
        "peak_reset_after_loading": reset,
    }


def _reset_peak() -> bool:
    """Set VmHWM to the current VmRSS (Linux `clear_refs` 5); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_memory(
    jobs: list[MethodJob], output: Path, workers: int, say: Callable[[str], None]
) -> None:
    """Run the missing memory jobs, each in a fresh spawned process."""
    todo = [j for j in jobs if not j.done(output)]
    if not todo:
        return
    say(f"{len(todo)} memory measurements ({workers} at a time, a fresh process each)")
    run_in_pool(run, todo, output, workers, say, fresh_process=True)


def selection_jobs() -> list[MethodJob]:
    """Seed 0: every row's lr grid, scored on validation."""
    return [job(row, lr, SEEDS[0]) for row in rows() for lr in lrs(row)]


def validation_of(res: dict[str, Any]) -> float:
    """A selection run's validation accuracy: a swarm's worst node after the
    consensus finish, a reference's own."""
    if "final" in res and "validation" in res["final"]:
        return float(res["final"]["validation"]["honest_worst_accuracy"])
    return float(res["validation"]["accuracy"])


def next_lr(row: str, output: Path) -> tuple[float | None, list[float]]:
    """(the lr `row` should try next, its grid so far): twice the grid's top while the
    top has the best validation accuracy (ties: the smaller lr) and fewer than `EXTEND`
    doublings were made, else None (the grid is settled). Reads finished runs only."""
    grid = list(lrs(row))
    while True:
        scores = {lr: validation_of(job(row, lr, SEEDS[0]).result(output)) for lr in grid}
        if best_first(scores)[0] != grid[-1] or len(grid) - len(lrs(row)) >= EXTEND:
            return None, grid
        nxt = 2 * grid[-1]
        if not job(row, nxt, SEEDS[0]).done(output):
            return nxt, grid
        grid.append(nxt)


def extension_jobs(output: Path) -> list[MethodJob]:
    """The next extension run of every row whose grid is not settled."""
    nexts = [(row, next_lr(row, output)[0]) for row in rows()]
    return [job(row, lr, SEEDS[0]) for row, lr in nexts if lr is not None]


def _seed0(row: str, output: Path) -> dict[float, float]:
    """A row's settled grid: seed 0's validation accuracy at every lr."""
    grid = next_lr(row, output)[1]
    return {lr: validation_of(job(row, lr, SEEDS[0]).result(output)) for lr in grid}


def finalists(row: str, output: Path) -> list[float]:
    """The `FINALISTS` lrs of `row` with the best seed-0 validation (ties: the smaller)."""
    return best_first(_seed0(row, output))[:FINALISTS]


def finalist_jobs(output: Path) -> list[MethodJob]:
    """Every row's finalists with the other seeds (grids settled)."""
    return [job(row, lr, s) for row in rows() for lr in finalists(row, output) for s in SEEDS[1:]]


def select(output: Path) -> dict[str, Any]:
    """Each row's finalist with the best mean validation accuracy over `SEEDS` (ties: the
    smaller lr); writes selection.json and selection.md and returns the choice."""
    chosen: dict[str, Any] = {"rows": {}, "grid": []}
    for row in rows():
        lr, means = mean_pick(
            finalists(row, output),
            lambda c, s: validation_of(job(row, c, s).result(output)),  # noqa: B023
            SEEDS,
        )
        chosen["rows"][row] = {"lr": lr, "mean_validation": means[lr][0], "per_seed": means[lr][1]}
        for c, seed0 in _seed0(row, output).items():
            entry: dict[str, Any] = {"row": row, "lr": c, "seed0": seed0}
            if c in means:
                entry["mean"], entry["per_seed"] = means[c]
            chosen["grid"].append(entry)
    write_json(output / "selection.json", chosen)
    (output / "selection.md").write_text(selection_table(chosen))
    return chosen


def selection_table(chosen: dict[str, Any]) -> str:
    """The grids' validation figures (markdown): seed 0 at every lr, each seed and the
    mean for the finalists; the pick's mean in bold."""
    lines = [
        "| row | lr | validation, seed 0 (%) | finalists: per seed (%) | mean (%) |",
        "|---|---|---|---|---|",
    ]
    for g in chosen["grid"]:
        per_seed = " / ".join(f"{100 * v:.1f}" for v in g.get("per_seed", []))
        mean = f"{100 * g['mean']:.1f}" if "mean" in g else ""
        if chosen["rows"][g["row"]]["lr"] == g["lr"]:
            mean = f"**{mean}**"
        lines.append(f"| {g['row']} | {g['lr']:g} | {100 * g['seed0']:.1f} | {per_seed} | {mean} |")
    return "\n".join(lines) + "\n"


def final_jobs(chosen: dict[str, Any]) -> dict[tuple[str, int], MethodJob]:
    """Every row on every seed at its chosen lr (the selection's runs)."""
    return {(row, s): job(row, chosen["rows"][row]["lr"], s) for s in SEEDS for row in rows()}


def memory_jobs(chosen: dict[str, Any]) -> list[MethodJob]:
    return [job(r, chosen["rows"][r]["lr"], SEEDS[0], memory=True) for r in rows()]


@dataclass
class RowRuns:
    """A row's finished seeds, with what the table and the verdicts read."""

    row: str
    runs: dict[int, dict[str, Any]]

    @property
    def central(self) -> bool:
        return self.row in REFERENCES

    def nodes(self) -> list[np.ndarray]:
        """Per seed: every node's test outcomes (a reference: its own, one row)."""
        if self.central:
            return [outcomes(r["correct"]) for r in self.runs.values()]
        return [node_outcomes(r) for r in self.runs.values()]

    def worst(self) -> list[np.ndarray]:
        if self.central:
            return self.nodes()
        return [worst_node_outcomes(r) for r in self.runs.values()]

    def average(self) -> list[np.ndarray]:
        return [outcomes(r["final"]["correct"]["average"]) for r in self.runs.values()]

    def kib(self, phase: str | None = None) -> float:
        """KiB a node sent, mean over seeds: all of it, or in `phase` rounds."""
        if self.central:
            return 0.0
        if phase is None:
            sent = [r["final"]["bytes_sent_per_node"] for r in self.runs.values()]
        else:
            sent = [
                sum(x["bytes_sent_per_node"] for x in r["rounds"] if x["phase"] == phase)
                for r in self.runs.values()
            ]
        return float(np.mean(sent)) / 1024

    def train_seconds(self) -> float:
        """A node's training seconds (a reference's: all its steps), mean over seeds."""
        if self.central:
            return float(np.mean([r["train_seconds"] for r in self.runs.values()]))
        per_node = [
            sum(x["seconds"] - x["mix_seconds"] for x in r["rounds"] if x["phase"] == "train")
            / r["config"]["nodes"]
            for r in self.runs.values()
        ]
        return float(np.mean(per_node))

    def config(self) -> dict[str, Any]:
        return dict(next(iter(self.runs.values()))["config"])


def finished_runs(chosen: dict[str, Any], output: Path) -> dict[str, RowRuns]:
    jobs = final_jobs(chosen)
    return {
        row: RowRuns(
            row,
            {
                s: jobs[(row, s)].result(output)
                for s in SEEDS
                if jobs[(row, s)].path(output).is_file()
            },
        )
        for row in rows()
    }


def _mib(x: float) -> str:
    return f"{x / 2**20:,.0f}"


def table(output: Path, chosen: dict[str, Any]) -> str:
    """The results table and the verdicts (markdown) from the finished runs; rows with
    unfinished seeds show the finished ones (and say how many)."""
    done = finished_runs(chosen, output)
    lines = [
        "| row | lr (chosen on validation) | seeds | worst node after finish (%) "
        "| averaged model (%) | KiB sent/node (training) | training s/node "
        "| peak memory MiB (state) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, rr in done.items():
        if not rr.runs:
            lines.append(f"| {row} | | 0 | not run yet | | | | |")
            continue
        cfg = rr.config()
        mark = " †" if cfg["gradient_tracking"] and not rr.central else ""
        lr = f"{cfg['lr']:g}"
        if not rr.central:
            lr += f" (node {cfg['lr'] * cfg['swarm_size'] ** 0.5:.3g}, G {cfg['gossip_steps']})"
        worst = format_interval(summarize(rr.nodes(), shared_examples=True))
        avg = "" if rr.central else format_interval(summarize(rr.average(), shared_examples=True))
        kib = "" if rr.central else f"{rr.kib():,.0f} ({rr.kib('train'):,.0f})"
        secs = f"{rr.train_seconds():.1f}"
        if rr.central:
            secs += f" (all {next(iter(rr.runs.values()))['steps']} steps)"
        mem_job = job(row, chosen["rows"][row]["lr"], SEEDS[0], memory=True)
        mem = ""
        if mem_job.path(output).is_file():
            m = mem_job.result(output)
            mem = f"{_mib(m['peak'])} ({_mib(m['peak'] - m['rss_loaded'])})"
        cells = [row + mark, lr, str(len(rr.runs)), worst, avg, kib, secs, mem]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = f"seeds {SEEDS[0]}-{SEEDS[-1]}" if len(SEEDS) > 1 else f"seed {SEEDS[0]}"
    lines += ["", f"† gradient tracking. Every lr was chosen on validation ({seeds}).", ""]
    lines += verdicts(done)
    text = "\n".join(lines) + "\n"
    (output / "table.md").write_text(text)
    return text


def verdicts(done: dict[str, RowRuns]) -> list[str]:
    """Every other swarm row against Dec-LoRA on their common seeds: Kill-and-Revive's
    targets, whether DECA beats it, ConLoRA's and DeCAF's differences."""
    base = done["dec-lora"]
    out = []
    for row in ("conlora", "decaf", "kill-revive", "kill-revive-untracked", "deca"):
        rr = done[row]
        seeds = sorted(set(rr.runs) & set(base.runs))
        if not seeds:
            out.append(f"- {row} vs dec-lora: not run yet")
            continue
        sub = RowRuns(row, {s: rr.runs[s] for s in seeds})
        ref = RowRuns("dec-lora", {s: base.runs[s] for s in seeds})
        worst = summarize(sub.nodes(), ref.worst(), shared_examples=True)
        avg = summarize(sub.average(), ref.average(), shared_examples=True)
        accuracy = (
            f"worst node {format_interval(worst)} points, averaged model "
            f"{format_interval(avg)} points ({len(seeds)} seeds)"
        )
        if row.startswith("kill-revive"):
            fewer = 1 - sub.kib() / ref.kib()
            fewer_train = 1 - sub.kib("train") / ref.kib("train")
            faster = 1 - sub.train_seconds() / ref.train_seconds()
            out.append(
                f"- {row} vs dec-lora: {accuracy}; {100 * fewer:.0f}% fewer bytes "
                f"({100 * fewer_train:.0f}% in training), {100 * faster:.0f}% less training time."
            )
            out.append(
                f"  - bytes at least {100 * KR_BYTES:.0f}% fewer: "
                f"{'met' if fewer >= KR_BYTES else 'missed'}; training time at least "
                f"{100 * KR_TIME:.0f}% less: {'met' if faster >= KR_TIME else 'missed'}; "
                f"worst node within {KR_POINTS:g} point: {verdict(worst, KR_POINTS)}"
            )
        elif row != "deca":
            out.append(
                f"- {row} vs dec-lora: {accuracy}; {100 * sub.kib() / ref.kib():.0f}% of the bytes."
            )
        else:
            beats = "beats" if worst.low > 0 else "is worse than" if worst.high < 0 else ""
            out.append(
                f"- deca {beats or 'does not clearly differ from'} dec-lora at this scale "
                f"(worst node; the interval decides): {accuracy}; "
                f"{sub.kib() / ref.kib():.2f}x the bytes, "
                f"{sub.train_seconds() / ref.train_seconds():.2f}x the training time."
            )
    return out


def run_study(
    output: Path | None = None, workers: int = 2, say: Callable[[str], None] = print
) -> str:
    """Selection, every row on every seed, the memory measurements, the table
    (resumable)."""
    out = output or OUTPUT
    run_jobs(selection_jobs(), out, workers, say, run)
    while extra := extension_jobs(out):
        run_jobs(extra, out, workers, say, run)
    run_jobs(finalist_jobs(out), out, workers, say, run)
    chosen = select(out)
    say("chosen on validation: " + json.dumps({r: c["lr"] for r, c in chosen["rows"].items()}))
    run_jobs(final_jobs(chosen).values(), out, workers, say, run)
    measure_memory(memory_jobs(chosen), out, workers, say)
    return table(out, chosen)
