"""Does the swarm match centralized LoRA on a real LLM? (`experiment --task lm-parity`)

The embedded SmolLM2-135M-Instruct on BBC News text (packed into 128-token blocks
with EOS), five nodes on a ring that each hold one category (non-IID by topic), rank
8, batch 4, 24 local steps a node (480 samples); the centralized reference trains one
adapter on the union of the shares for the same 480 samples (120 steps). Rows:

- `recipe`: the defaults (`Recipe`) as they were when it ran: gradient tracking,
  warmup + cosine decay, lr x sqrt(5), two exchanges a round on this ring
  (`mixing.gossip_steps_for`), K = 1, but every node weighed the same and no Chebyshev
  gossip or step after mixing (`SETTING`: the runs predate `--weighting examples` and
  `simulate`'s acceleration);
- `recipe-q4`: the same with 4-bit messages;
- `recipe-no-tracking`: the same lr and schedule without gradient tracking;
- `central`: centralized LoRA on the same samples.

Selection (seed 0) reads validation perplexity only (10% of every node's share, held
out from training, `max_eval` of it scored): the recipe's lr by its worst node after
the consensus finish, the reference's lr by its own; ties go to the smaller lr. The
other rows take the recipe's lr. Then every row runs with seeds 0, 1, 2 (seed 0's
selection runs are reused) and the table reports test perplexity after the consensus
finish: the worst node, its gap to the reference of the same seed in percent of the
reference, mean ± std over seeds and a Student-t 95% interval of the mean gap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from declora.cli.generalization import Job, run_jobs
from declora.node.acceleration import UNACCELERATED
from declora.node.report import write_json
from declora.node.simulator import SimConfig
from declora.node.stats import t95

SETTING: dict[str, Any] = {
    **UNACCELERATED,  # as run: before simulate's default accelerated
    "model": "smollm2",
    "task": "lm",
    "nodes": 5,
    "topology": "ring",
    "partition_scheme": "skew:1",
    "rank": 8,
    "batch_size": 4,
    "max_length": 128,
    "local_steps": 1,
    "rounds": 24,
    "eval_every": 24,
    "node_eval_every": 1000,
    "max_eval": 16,
    "validation_fraction": 0.1,
    "consensus_rounds": 300,
    "eval_before_consensus": False,
    "centralized": False,
    "threads": 1,
    # as run: every node weighs the same (the rows predate `--weighting examples`, the
    # default with tracking since; the five shares are one category each, 386-511
    # articles before dedupe)
    "weighting": "nodes",
}
ROWS: dict[str, dict[str, Any]] = {
    "recipe": {},
    "recipe-q4": {"codec": "q4"},
    "recipe-no-tracking": {"gradient_tracking": False},
}
RECIPE_LRS = (1e-3, 2e-3, 4e-3)
CENTRAL_LRS = (2e-3, 4e-3, 8e-3)
SEEDS = (0, 1, 2)
PARITY_MARGIN = 5.0  # percent of the reference's perplexity: the recipe's worst node
Q4_MARGIN = 2.0  # percent of fp32's perplexity
OUTPUT = Path("results/llm-parity")


def job(row: str, lr: float, seed: int, validate: bool) -> Job:
    """A row's run (`central` for the reference) at `lr` and `seed`."""
    over = {} if row == "central" else ROWS[row]
    cfg = SimConfig(**{**SETTING, **over}, lr=lr, seed=seed)
    return Job(f"{row}-lr{lr:g}-seed{seed}", cfg, row == "central", validate)


def selection_jobs() -> list[Job]:
    """Seed 0: the recipe's and the reference's lr grids, scored on validation."""
    return [job("recipe", lr, SEEDS[0], True) for lr in RECIPE_LRS] + [
        job("central", lr, SEEDS[0], True) for lr in CENTRAL_LRS
    ]


def select(output: Path) -> dict[str, Any]:
    """The lrs with the lowest validation perplexity (the recipe's worst node after the
    finish; the reference's own); writes selection.json and returns it."""
    grid: list[dict[str, Any]] = []
    recipe = []
    for lr in RECIPE_LRS:
        val = job("recipe", lr, SEEDS[0], True).result(output)["final"]["validation"]
        ppl = val["honest_worst_perplexity"]
        recipe.append((ppl, lr))
        grid.append({"row": "recipe", "lr": lr, "worst_validation_perplexity": ppl})
    central = []
    for lr in CENTRAL_LRS:
        ppl = job("central", lr, SEEDS[0], True).result(output)["validation"]["perplexity"]
        central.append((ppl, lr))
        grid.append({"row": "central", "lr": lr, "validation_perplexity": ppl})
    chosen = {"recipe_lr": min(recipe)[1], "central_lr": min(central)[1], "grid": grid}
    write_json(output / "selection.json", chosen)
    return chosen


def final_jobs(chosen: dict[str, Any]) -> dict[tuple[str, int], Job]:
    """Every row and the reference on every seed at the chosen lrs (seed 0 of the
    recipe and the reference are the selection's runs), in the order they run."""
    lr, central = chosen["recipe_lr"], chosen["central_lr"]
    jobs: dict[tuple[str, int], Job] = {}
    for seed in SEEDS:
        first = seed == SEEDS[0]
        jobs[("recipe", seed)] = job("recipe", lr, seed, first)
        jobs[("central", seed)] = job("central", central, seed, first)
    for row in ("recipe-q4", "recipe-no-tracking"):
        for seed in SEEDS:
            jobs[(row, seed)] = job(row, lr, seed, False)
    return jobs


def gap_interval(gaps: list[float]) -> tuple[float, float, float, float]:
    """Mean, sample std and the Student-t 95% interval of the mean of per-seed gaps
    (one seed: no interval, low = high = the gap)."""
    a = np.asarray(gaps, dtype=float)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, 0.0, mean, mean
    std = float(a.std(ddof=1))
    half = t95(len(a) - 1) * std / np.sqrt(len(a))
    return mean, std, mean - half, mean + half


def parity_verdict(high: float, low: float, seeds: int, margin: float) -> str:
    """A perplexity gap (percent, positive = worse) against `margin`: "met" when the
    whole interval is below it (two seeds at least), "missed" when all of it is above."""
    if seeds >= 2 and high <= margin:
        return "met"
    if seeds >= 2 and low > margin:
        return "missed"
    return "undecided"


def _gap(value: float, reference: float) -> float:
    return 100 * (value - reference) / reference


def table(output: Path, chosen: dict[str, Any]) -> str:
    """The results table (markdown) from the finished runs; rows with unfinished seeds
    show the finished ones and say how many."""
    jobs = final_jobs(chosen)
    central = {
        s: jobs[("central", s)].result(output)["final"]["perplexity"]
        for s in SEEDS
        if jobs[("central", s)].path(output).is_file()
    }
    lines = [
        f"Chosen on validation: recipe lr {chosen['recipe_lr']:g} (each node "
        f"{chosen['recipe_lr'] * 5**0.5:.3g}), centralized lr {chosen['central_lr']:g}.",
        "",
        "| row | seeds | worst node | averaged | centralized | worst vs centralized (%)"
        " | verdict | KiB sent/node |",
        "|---|---|---|---|---|---|---|---|",
    ]
    worst_fp32: dict[int, float] = {}
    for row in ROWS:
        done = {}
        for s in central:
            if jobs[(row, s)].path(output).is_file():
                done[s] = jobs[(row, s)].result(output)
        if not done:
            lines.append(f"| {row} | 0 | not run yet | | | | | |")
            continue
        after = {s: r["final"]["after_consensus"] for s, r in done.items()}
        worst = {s: a["honest_worst_perplexity"] for s, a in after.items()}
        if row == "recipe":
            worst_fp32 = worst
        avg = [r["final"]["average"]["perplexity"] for r in done.values()]
        mean, std, low, high = gap_interval([_gap(worst[s], central[s]) for s in done])
        note = f"{parity_verdict(high, low, len(done), PARITY_MARGIN)} at {PARITY_MARGIN:g}%"
        kib = float(np.mean([r["final"]["bytes_sent_per_node"] for r in done.values()])) / 1024
        if row == "recipe-q4" and all(s in worst_fp32 for s in done):
            qm, qs, ql, qh = gap_interval([_gap(worst[s], worst_fp32[s]) for s in done])
            fp32_bytes = np.mean(
                [jobs[("recipe", s)].result(output)["final"]["bytes_sent_per_node"] for s in done]
            )
            note += (
                f"; vs fp32 {qm:+.2f} ± {qs:.2f} [{ql:+.2f}, {qh:+.2f}]%: "
                f"{parity_verdict(qh, ql, len(done), Q4_MARGIN)} at {Q4_MARGIN:g}%, "
                f"{fp32_bytes / 1024 / kib:.1f}x fewer bytes"
            )
        cells = [
            row,
            str(len(done)),
            " / ".join(f"{worst[s]:.2f}" for s in done),
            " / ".join(f"{a:.2f}" for a in avg),
            " / ".join(f"{central[s]:.2f}" for s in done),
            f"{mean:+.2f} ± {std:.2f} [{low:+.2f}, {high:+.2f}]",
            note,
            f"{kib:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (output / "table.md").write_text(text)
    return text


def selection_table(chosen: dict[str, Any]) -> str:
    """The lr grid's validation perplexities (markdown), the chosen ones in bold."""
    lines = ["| row | lr | validation perplexity |", "|---|---|---|"]
    for g in chosen["grid"]:
        ppl = g.get("worst_validation_perplexity", g.get("validation_perplexity"))
        pick = chosen[f"{g['row']}_lr"] == g["lr"]
        cell = f"**{ppl:.2f}**" if pick else f"{ppl:.2f}"
        lines.append(f"| {g['row']} | {g['lr']:g} | {cell} |")
    return "\n".join(lines) + "\n"


def run_study(
    output: Path | None = None, workers: int = 2, say: Callable[[str], None] = print
) -> str:
    """Selection, then every row on every seed, then the table (resumable)."""
    out = output or OUTPUT
    run_jobs(selection_jobs(), out, workers, say)
    chosen = select(out)
    (out / "selection.md").write_text(selection_table(chosen))
    say(f"chosen on validation: lr {chosen['recipe_lr']:g}, centralized {chosen['central_lr']:g}")
    run_jobs(final_jobs(chosen).values(), out, workers, say)
    return table(out, chosen)
