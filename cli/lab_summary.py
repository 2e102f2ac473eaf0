"""What a lab shows and leaves: the live table of its nodes (`lab_table`), each
node's history (`read_rounds`), and at the end results.json, results.png and the
per-node summary lines (`summarize`)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from declora.node import run_folder
from declora.node.scores import Score, score_for

if TYPE_CHECKING:
    from declora.cli.lab import LabConfig, LabNode
    from declora.cli.lab_swarm import Reference


def read_rounds(folder: Path) -> list[dict[str, Any]]:
    """A node's history, oldest round first: its rounds.jsonl.1 (the older lines a
    rotation moved out, `status.HISTORY_CAP`), then its rounds.jsonl (a line still
    being written is skipped); empty when it has neither."""
    texts: list[str] = []  # newest file first: read before a rotation can move it
    seen: set[tuple[int, int]] = set()
    for name in (run_folder.HISTORY, run_folder.OLDER_HISTORY):
        path = folder / name
        if not path.is_file():
            continue
        try:
            with path.open("rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_dev, st.st_ino) not in seen:  # else: rotated since read
                    seen.add((st.st_dev, st.st_ino))
                    texts.append(f.read().decode())
        except FileNotFoundError:  # rotated away between the two looks
            continue
    out = []
    for line in (line for text in reversed(texts) for line in text.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _number(row: dict[str, Any], key: str) -> float | None:
    """A finite number `row` holds under `key` (rounds.jsonl is the node's own file,
    read leniently: anything else is None)."""
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _last_figure(rows: list[dict[str, Any]], key: str) -> float | None:
    """The last evaluation's `key` (accuracy, perplexity) in a node's history."""
    for row in reversed(rows):
        evals = row.get("eval")
        if isinstance(evals, dict) and _number(evals, key) is not None:
            return _number(evals, key)
    return None


def round_cell(st: Any) -> str:
    """A status' round in the lab's table: "30/240" (its planned rounds; "∞" with
    --rounds 0), and in the consensus finish, past the plan, "262 (finish)"."""
    if st.state == "consensus":
        return f"{st.round} (finish)"
    return f"{st.round}/{st.total_rounds or '∞'}"


def _ended_row(n: LabNode, code: int, rows: list[dict[str, Any]], st: Any, key: str) -> list[str]:
    """An exited node's row: where it ended by its rounds.jsonl (its last status, else
    nothing, when it recorded no round), no live neighbour."""
    if rows:
        last = rows[-1]
        r, loss = _number(last, "round"), _number(last, "loss")
        phase = last.get("phase")
        where = "" if r is None else f"{r:.0f}" + (f" ({phase})" if isinstance(phase, str) else "")
        acc, sent = _last_figure(rows, key), _number(last, "bytes_sent")
    elif st is not None:
        where, loss = round_cell(st), st.loss
        acc, sent = st.last_eval.get(key), float(st.bytes_sent)
    else:
        where, loss, acc, sent = "", None, None, None
    return [
        n.node_id,
        f"exited ({code})",
        where,
        "" if loss is None else f"{loss:.4f}",
        "" if acc is None else f"{acc:.3f}",
        "",
        "" if sent is None else f"{sent / 1024:,.0f} KiB",
        str(n.process.pid),
    ]


def lab_table(nodes: list[LabNode], statuses: dict[str, Any], title: str, key: str) -> Any:
    """The lab's table: a running node's last status (the neighbours it sees live, less
    the lab's nodes that exited); an exited node's end from its rounds.jsonl."""
    from rich.table import Table

    from declora.cli.client import folded

    table = Table(title=title)
    for col in ("node", "state", "round", "loss", key, "live neighbours", "sent", "pid"):
        table.add_column(col)
    exited = {n.node_id for n in nodes if n.process.poll() is not None}
    for n in nodes:
        st = statuses.get(n.node_id)
        code = n.process.poll()
        if code is not None:
            table.add_row(*_ended_row(n, code, read_rounds(n.folder), st, key))
            continue
        if st is None:
            table.add_row(n.node_id, "starting", "", "", "", "", "", str(n.process.pid))
            continue
        acc = st.last_eval.get(key)
        live = [p.node_id for p in st.neighbors if p.live and p.node_id not in exited]
        table.add_row(
            n.node_id,
            st.state,
            round_cell(st),
            f"{st.loss:.4f}",
            "" if acc is None else f"{acc:.3f}",
            ", ".join(live),
            f"{st.bytes_sent / 1024:,.0f} KiB",
            str(n.process.pid),
        )
    return folded(table)


def summary_line(
    node_id: str, value: float | None, reference: float | None, score: Score | None = None
) -> str:
    """One node's line of the lab summary: its figure (accuracy or perplexity) and its
    gap to the centralized reference (`Score.gap_text`)."""
    score = score or score_for("cls")
    if value is None:
        return f"  {node_id}: no final adapter"
    versus = "" if reference is None else f" ({score.gap_text(value, reference)} vs centralized)"
    return f"  {node_id}: {score.key} {value:.4f}{versus}"


def failure_line(node_id: str, code: int, log: Path) -> str:
    """The lab summary's line for a node that exited with `code` and no final adapter:
    the `error:` and `hint:` lines its log ends with (the daemon's own report), else
    where the log is."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-40:]
    except OSError:
        tail = []
    errors = [i for i, line in enumerate(tail) if line.startswith("error: ")]
    if not errors:
        return f"  {node_id}: exited {code} (see {log})"
    said = [tail[errors[-1]].removeprefix("error: ")]
    hint = tail[errors[-1] + 1 : errors[-1] + 2]
    said += [h.removeprefix("hint: ") for h in hint if h.startswith("hint: ")]
    return f"  {node_id}: exited {code}: {'; '.join(said)} (log: {log})"


def plot_lab(
    histories: dict[str, list[dict[str, Any]]],
    central: dict[str, Any] | None,
    path: Path,
    score: Score,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for node_id, rows in sorted(histories.items()):
        evals = [(r["round"], r.get("eval") or {}) for r in rows]  # None: not evaluated
        pts = [(n, e[score.key]) for n, e in evals if score.key in e]
        if pts:
            ax1.plot(*zip(*pts, strict=True), marker=".", label=node_id)
        dis = [  # None: not yet measured (DECA after a resume)
            (r["round"], max(r["disagreement"], 1e-12))
            for r in rows
            if r.get("disagreement") is not None
        ]
        if dis:
            ax2.semilogy(*zip(*dis, strict=True), label=node_id)
    if central:
        ax1.axhline(
            central["eval"][score.key], color="r", ls="--", label="centralized (same samples)"
        )
    ax1.set_xlabel("round")
    ax1.set_ylabel(f"test {score.key}")
    if score.percent:
        ax1.set_ylim(0, 1)
    ax1.grid(alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:  # nothing to plot: no node evaluated
        ax1.legend(loc="lower right" if score.higher_is_better else "upper right")
    ax2.set_xlabel("round")
    ax2.set_ylabel("max ||x̂_j - x_i|| / ||x_i|| over neighbours")
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(
    cfg: LabConfig,
    out: Path,
    swarm: str,
    nodes: list[LabNode],
    reference: Reference | None,
    t0: float,
    interrupted: bool,
    timed_out: bool,
    console: Any,
) -> dict[str, Any]:
    """Write results.json and results.png from what every (stopped) node left, print
    the per-node summary; the summary. A lab cut short (interrupted, timed out) does
    not wait for the centralized reference."""
    cut = interrupted or timed_out
    histories = {n.node_id: read_rounds(n.folder) for n in nodes}
    finals = {}
    for n in nodes:
        meta = n.folder / "adapter" / "declora.json"
        finals[n.node_id] = json.loads(meta.read_text()) if meta.is_file() else None
    central = None
    if reference is not None and reference.is_alive() and not cut:
        console.print("lab: waiting for the centralized reference...")
        reference.join()
    if reference is not None and reference.error is not None:
        raise reference.error
    if reference is not None and not cut:
        central = reference.result
    score = score_for(cfg.task)
    accs = {k: (v or {}).get("eval", {}).get(score.key) for k, v in finals.items()}
    ref = (central or {}).get("eval", {}).get(score.key)
    # results.json keeps its meaning: accuracy points above the reference (negative:
    # below), or for perplexity the percent above the reference (positive: worse), to
    # 0.1 as the summary lines show it (a tie is 0.0, not -0.0)
    signed = {
        k: None if a is None or ref is None else score.signed_gap(a, ref) for k, a in accs.items()
    }
    summary: dict[str, Any] = {
        "config": cfg.model_dump(mode="json"),
        "swarm_id": swarm,
        "seconds": time.time() - t0,
        "interrupted": interrupted,
        "timed_out": timed_out,
        "exit_codes": {n.node_id: n.process.returncode for n in nodes},
        f"final_{score.key}": accs,
        "gap_points" if score.percent else "perplexity_gap_percent": signed,
        "centralized": central,
        "histories": histories,
        "ok": not cut
        and all(n.process.returncode == 0 for n in nodes)
        and all(a is not None for a in accs.values()),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    plot_lab(histories, central, out / "results.png", score)
    lines = [
        failure_line(n.node_id, n.process.returncode, out / f"{n.node_id}.log")
        if accs[n.node_id] is None and n.process.returncode and not cut
        else summary_line(n.node_id, accs[n.node_id], ref, score)
        + _reached(histories[n.node_id], cut)
        for n in nodes
    ]
    if ref is not None:
        lines.append(
            f"  centralized reference: {score.key} {ref:.4f} "
            f"({central['steps'] if central else '?'} steps of {cfg.batch_size} at lr "
            f"{cfg.central_lr:g}, all the data)"
        )
    ended = (
        "interrupted after" if interrupted else "timed out after" if timed_out else "finished in"
    )
    console.print(
        f"lab {ended} {summary['seconds']:.0f}s\n" + "\n".join(lines) + f"\nresults: {out}",
        soft_wrap=True,
    )
    return summary


def _reached(rows: list[dict[str, Any]], cut: bool) -> str:
    """For a lab cut short: the round a node had reached ("" otherwise)."""
    if not cut:
        return ""
    r = _number(rows[-1], "round") if rows else None
    return f" (stopped at round {r:.0f})" if r is not None else " (no round done)"
