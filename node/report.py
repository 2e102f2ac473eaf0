"""Writing simulation results: JSON of every round, a markdown table, a PNG plot."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from declora.node.scores import Score, score_for
from declora.node.simulator import SimResult


def to_jsonable(result: SimResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as fh:
        json.dump(obj, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _score(res: dict[str, Any]) -> Score:
    return score_for(res.get("config", {}).get("task", "cls"))


def _header(score: Score) -> str:
    best = "| best avg (round picked on test) " if score.percent else ""
    return (
        f"| setting | final avg {best}| mean node | worst node | worst before finish | "
        "centralized | KiB sent/node | consensus dist. before → max after finish |\n"
        + "|---" * (8 + bool(best))
        + "|\n"
    )


def _honest(summary: dict[str, float], key: str) -> float:
    """The honest nodes' figure; results written before Byzantine runs have only all."""
    return summary.get(f"honest_{key}", summary[key])


def table_row(name: str, res: dict[str, Any]) -> str:
    """One markdown row from a result dict (as written by `to_jsonable`); node
    figures are the honest nodes'. Classification rows also show the best round's
    average (selected on the test set: a ceiling, not a result). The consensus
    distance is the mean at the last training round → the largest after the finish
    (run.json's final `consensus_max`)."""
    score = _score(res)
    key, show = score.key, score.shown
    final = res["final"]
    central = res.get("centralized") or {}
    train_rounds = [r for r in res["rounds"] if r["phase"] == "train"]
    dist = train_rounds[-1]["consensus_mean"] if train_rounds else 0.0
    best = f"| {show(final[f'best_average_{key}'])} " if score.percent else ""
    before = final.get("before_consensus")
    return (
        f"| {name} | {show(final['average'][key])} {best}"
        f"| {show(_honest(final['after_consensus'], f'mean_{key}'))} "
        f"| {show(_honest(final['after_consensus'], f'worst_{key}'))} "
        f"| {show(_honest(before, f'worst_{key}') if before else None)} "
        f"| {show((central.get('final') or {}).get(key))} "
        f"| {final['bytes_sent_per_node'] / 1024:,.0f} "
        f"| {dist:.2e} → {final.get('consensus_max', dist):.2e} |\n"
    )


def markdown_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Accuracies in percent (classification) or perplexities (causal LM) on the test
    split; consensus distance before and after the finish; then a `warning:` line for
    each of a row's `final["warnings"]` (a finish that ended with the nodes apart).
    Rows share the first row's task."""
    score = _score(rows[0][1]) if rows else score_for("cls")
    table = _header(score) + "".join(table_row(name, res) for name, res in rows)
    warned = [(name, w) for name, res in rows for w in res["final"].get("warnings", ())]
    return table + "".join(f"\nwarning: {name}: {line}\n" for name, line in warned)


def plot(res: dict[str, Any], path: Path, title: str = "") -> None:
    """The task's figure per round (centralized, average, each node) and consensus
    distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    rounds = res["rounds"]
    final = res["final"]
    last_train = max((r["round"] for r in rounds if r["phase"] == "train"), default=0)
    last = rounds[-1]["round"] if rounds else 0
    score = _score(res)
    key = score.key
    avg = [(r["round"], r["average"][key]) for r in rounds if r.get("average")]
    if avg:
        ax1.plot(*zip(*avg, strict=True), "k-", lw=2, label="Dec-LoRA average")
    for i in range(len(final.get("nodes", []))):
        pts = [(r["round"], r["nodes"][i][key]) for r in rounds if r.get("nodes")]
        if "nodes_before_consensus" in final:
            pts.append((last_train, final["nodes_before_consensus"][i][key]))
        pts.append((last, final["nodes"][i][key]))
        ax1.plot(*zip(*pts, strict=True), "-", alpha=0.4, lw=1, label="nodes" if i == 0 else None)
    central = res.get("centralized")
    if central:
        cfg = res["config"]
        per_round = cfg["nodes"] * cfg["local_steps"]
        pts = [(c["step"] / per_round, c[key]) for c in central["curve"]]
        ax1.plot(*zip(*pts, strict=True), "r--", lw=1.5, label="centralized (same samples)")
    ax1.set_xlabel("round")
    ax1.set_ylabel(f"test {key}")
    if score.percent:
        ax1.set_ylim(0, 1)
    else:
        ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right" if score.higher_is_better else "upper right")
    ax2.semilogy([r["round"] for r in rounds], [max(r["consensus_mean"], 1e-12) for r in rounds])
    ax2.axvline(last_train + 0.5, color="gray", ls=":", label="consensus finish starts")
    ax2.set_xlabel("round")
    ax2.set_ylabel("consensus distance (mean ||x_i - x̄|| / ||x̄||)")
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
