"""Writing simulation results: JSON of every round, a markdown table, a PNG plot."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def _pct(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{100 * x:.1f}"


ROW_HEADER = (
    "| setting | final avg | best avg | mean node | worst node | worst before finish | "
    "centralized | KiB sent/node | consensus dist. |\n"
    "|---|---|---|---|---|---|---|---|---|\n"
)


def _honest(summary: dict[str, float], key: str) -> float:
    """The honest nodes' figure; results written before Byzantine runs have only all."""
    return summary.get(f"honest_{key}", summary[key])


def table_row(name: str, res: dict[str, Any]) -> str:
    """One markdown row from a result dict (as written by `to_jsonable`); node
    accuracies are the honest nodes'."""
    final = res["final"]
    central = res.get("centralized") or {}
    train_rounds = [r for r in res["rounds"] if r["phase"] == "train"]
    dist = train_rounds[-1]["consensus_mean"] if train_rounds else 0.0
    return (
        f"| {name} | {_pct(final['average']['accuracy'])} "
        f"| {_pct(final['best_average_accuracy'])} "
        f"| {_pct(_honest(final['after_consensus'], 'mean_accuracy'))} "
        f"| {_pct(_honest(final['after_consensus'], 'worst_accuracy'))} "
        f"| {_pct(_honest(final['before_consensus'], 'worst_accuracy'))} "
        f"| {_pct((central.get('final') or {}).get('accuracy'))} "
        f"| {final['bytes_sent_per_node'] / 1024:,.0f} | {dist:.2e} |\n"
    )


def markdown_table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Accuracies in percent on the test split; consensus distance before the finish."""
    return ROW_HEADER + "".join(table_row(name, res) for name, res in rows)


def plot(res: dict[str, Any], path: Path, title: str = "") -> None:
    """Accuracy per round (centralized, average, each node) and consensus distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    rounds = res["rounds"]
    final = res["final"]
    last_train = max((r["round"] for r in rounds if r["phase"] == "train"), default=0)
    last = rounds[-1]["round"] if rounds else 0
    avg = [(r["round"], r["average"]["accuracy"]) for r in rounds if r.get("average")]
    if avg:
        ax1.plot(*zip(*avg, strict=True), "k-", lw=2, label="Dec-LoRA average")
    for i in range(len(final.get("nodes", []))):
        pts = [(r["round"], r["nodes"][i]["accuracy"]) for r in rounds if r.get("nodes")]
        pts.append((last_train, final["nodes_before_consensus"][i]["accuracy"]))
        pts.append((last, final["nodes"][i]["accuracy"]))
        ax1.plot(*zip(*pts, strict=True), "-", alpha=0.4, lw=1, label="nodes" if i == 0 else None)
    central = res.get("centralized")
    if central:
        cfg = res["config"]
        per_round = cfg["nodes"] * cfg["local_steps"]
        pts = [(c["step"] / per_round, c["accuracy"]) for c in central["curve"]]
        ax1.plot(*zip(*pts, strict=True), "r--", lw=1.5, label="centralized (same samples)")
    ax1.set_xlabel("round")
    ax1.set_ylabel("test accuracy")
    ax1.set_ylim(0, 1)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right")
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
