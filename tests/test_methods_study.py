"""The methods study's machinery (`experiment --task methods`) on tiny-bert: full
fine-tuning trains every parameter, selection reads validation only, every row and
seed runs, the table and the verdicts are computed from the runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, NUM_CLASSES, TINY_SPEC, make_synthetic, write_jsonl

from declora.cli import methods_study as ms
from declora.cli.generalization import best_first
from declora.node.data import TextDataset
from declora.node.full_finetune import FullModel
from declora.node.trainer import LocalTrainer


def test_full_fine_tuning_changes_every_parameter(synthetic: TextDataset) -> None:
    lm = FullModel(TINY_SPEC, num_labels=NUM_CLASSES, label_names=CLASS_NAMES)
    names = [n for n, _ in lm.model.named_parameters()]
    assert lm.schema.names == tuple(names)  # embeddings, layers, norms, pooler, head
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    LocalTrainer(lm, lm.encode(synthetic), 1e-3, 16, seed=0).train_steps(1)
    after = dict(lm.model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in names)


def _rewrite(path: Path, change: dict[str, object]) -> None:
    res = json.loads(path.read_text())
    for keys, value in change.items():
        *head, last = keys.split(".")
        d = res
        for k in head:
            d = d[k]
        d[last] = value
    path.write_text(json.dumps(res))


@pytest.mark.slow  # 76 s: the whole study on tiny-bert, every row; in make test-slow
def test_the_study_selects_on_validation_and_tables_every_row_and_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(make_synthetic(160), tmp_path / "texts.jsonl")
    tiny = {"model": "tiny-bert", "data": str(data), "rounds": 3,
            "eval_every": 3, "nodes": 4, "consensus_rounds": 20}  # fmt: skip
    monkeypatch.setattr(ms, "SETTING", {**ms.SETTING, **tiny})
    monkeypatch.setattr(ms, "LORA_LRS", (1e-3, 3e-2))
    monkeypatch.setattr(ms, "FULL_LRS", (1e-4, 1e-3))
    monkeypatch.setattr(ms, "SEEDS", (0, 1))
    monkeypatch.setattr(ms, "EXTEND", 0)  # the grids as given (extension: its own test)
    out = tmp_path / "study"
    text = ms.run_study(out, workers=1, say=lambda _: None)

    runs = out / "runs"
    # both lrs of every grid are finalists: seeds 0 and 1 each, and the memory runs
    assert len(list(runs.iterdir())) == 8 * 2 * 2 + 8
    chosen = json.loads((out / "selection.json").read_text())
    for row in ms.rows():
        means = {lr: np.mean([ms.validation_of(json.loads(ms.job(row, lr, s).path(out).read_text()))
                              for s in ms.SEEDS]) for lr in ms.lrs(row)}  # fmt: skip
        best = max(means.values())
        assert chosen["rows"][row]["lr"] == min(lr for lr, m in means.items() if m == best)
        seed1 = json.loads(ms.job(row, chosen["rows"][row]["lr"], 1).path(out).read_text())
        assert seed1["config"]["seed"] == 1 and ms.job(row, 1e-3, 1).done(out)
    configs = {r: json.loads(ms.job(r, ms.lrs(r)[0], 0).path(out).read_text())["config"]
               for r in ms.rows()}  # fmt: skip
    assert [configs[r]["method"] for r in ms.ROWS] == [v["method"] for v in ms.ROWS.values()]
    assert configs["dec-lora"]["gradient_tracking"] and configs["kill-revive"]["gradient_tracking"]
    assert configs["kill-revive-untracked"]["method"] == "kill-revive"
    assert not configs["kill-revive-untracked"]["gradient_tracking"]
    assert not configs["decaf"]["gradient_tracking"]
    assert configs["deca"]["gossip_steps"] == 1
    full = json.loads(ms.job("central-full", 1e-4, 0).path(out).read_text())
    assert full["full_finetune"] and full["train_seconds"] > 0
    deca_lr = chosen["rows"]["deca"]["lr"]
    memory = json.loads(ms.job("deca", deca_lr, 0, memory=True).path(out).read_text())
    assert memory["peak"] >= memory["rss_loaded"] > 0 and memory["peak_reset_after_loading"]

    # selection reads validation only: test figures do not move it, validation does
    row, (low, high) = "dec-lora", ms.LORA_LRS
    other = low if chosen["rows"][row]["lr"] == high else high
    paths = [ms.job(row, other, s).path(out) for s in ms.SEEDS]
    originals = [path.read_text() for path in paths]
    test_only = {"final.after_consensus.honest_worst_accuracy": 1.0, "final.average.accuracy": 1.0}
    for path in paths:
        _rewrite(path, test_only)
    assert ms.select(out)["rows"][row]["lr"] != other
    for path in paths:
        _rewrite(path, {"final.validation.honest_worst_accuracy": 1.01})
    assert ms.select(out)["rows"][row]["lr"] == other
    for path, original in zip(paths, originals, strict=True):
        path.write_text(original)
    assert ms.select(out) == chosen

    # a resumed study finds every run done: none is repeated, memory runs included
    said: list[str] = []
    assert ms.run_study(out, workers=1, say=said.append) == text
    assert not [m for m in said if m.startswith(("done", "4 memory")) or "to do" in m]

    # the table and the verdicts read the runs
    lines = {line.split(" | ")[0].strip("| †"): line for line in text.splitlines()}
    assert all(lines[r].split(" | ")[2] == "2" for r in ms.rows())
    done = ms.finished_runs(chosen, out)
    dl, kr = done["dec-lora"], done["kill-revive"]
    worst = np.mean([min(n["accuracy"] for n in r["final"]["nodes"]) for r in dl.runs.values()])
    assert lines["dec-lora"].split(" | ")[3].startswith(f"{100 * worst:.1f} ± ")
    assert f"{100 * (1 - kr.kib() / dl.kib()):.0f}% fewer bytes" in text
    for seed in ms.SEEDS:
        _rewrite(ms.final_jobs(chosen)[("kill-revive", seed)].path(out),
                 {"final.bytes_sent_per_node": 0.0})  # fmt: skip
    again = ms.table(out, chosen)
    assert "- kill-revive vs dec-lora" in again and "- kill-revive-untracked vs dec-lora" in again
    kr_lines = again.split("- kill-revive vs dec-lora")[1].split("- kill-revive-untracked")[0]
    assert "100% fewer bytes" in kr_lines and "bytes at least 75% fewer: met" in kr_lines


def test_a_pick_at_the_top_of_its_grid_extends_the_grid(tmp_path: Path) -> None:
    """Selection runs are faked (validation figures only): a row whose best lr is the
    top of its grid tries twice the top, until the best is inside or EXTEND is spent."""

    def fake(row: str, lr: float, accuracy: float) -> None:
        path = ms.job(row, lr, 0).path(tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"validation": {"accuracy": accuracy}}))

    grid = ms.lrs("central-lora")
    for k, lr in enumerate(grid):
        fake("central-lora", lr, 0.5 + 0.01 * k)  # rising: the top is best
    assert ms.next_lr("central-lora", tmp_path) == (2 * grid[-1], list(grid))
    fake("central-lora", 2 * grid[-1], 0.4)  # worse: settled at the old top
    assert ms.next_lr("central-lora", tmp_path) == (None, [*grid, 2 * grid[-1]])

    full = ms.lrs("central-full")
    for lr in full:
        fake("central-full", lr, 0.7)  # a tie everywhere goes to the smallest lr: settled
    assert ms.next_lr("central-full", tmp_path)[0] is None
    for k, lr in enumerate(full):
        fake("central-full", lr, 0.5 + 0.01 * k)
    doubled = [full[-1] * 2**d for d in range(1, ms.EXTEND + 1)]
    for k, lr in enumerate(doubled):  # always rising: stops after EXTEND doublings
        assert ms.next_lr("central-full", tmp_path)[0] == lr
        fake("central-full", lr, 0.9 + 0.01 * k)
    assert ms.next_lr("central-full", tmp_path) == (None, [*full, *doubled])


def _fake(out: Path, row: str, lr: float, seed: int, accuracy: float | None) -> None:
    """A stored run of `row` holding only a validation figure (None: none at all)."""
    path = ms.job(row, lr, seed).path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({} if accuracy is None else {"validation": {"accuracy": accuracy}}))


def test_the_pick_is_the_best_mean_over_the_seeds_among_seed_0s_finalists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seed 0 ranks the grid; its FINALISTS best run every seed; the best mean wins,
    though seed 0 alone preferred another lr; a run stored without validation is not
    done (it is run again)."""
    monkeypatch.setattr(ms, "FINALISTS", 2)
    row, grid = "central-lora", ms.lrs("central-lora")
    for other in ms.rows():  # every other row: the same figure everywhere
        for lr in ms.lrs(other) if other != row else ():
            for s in ms.SEEDS:
                _fake(tmp_path, other, lr, s, 0.5)
    seed0 = {grid[0]: 0.80, grid[1]: 0.90, grid[2]: 0.88, grid[3]: 0.70, grid[4]: 0.85}
    for lr, acc in seed0.items():
        _fake(tmp_path, row, lr, 0, acc)
    assert ms.finalists(row, tmp_path) == [grid[1], grid[2]]
    jobs = [j for j in ms.finalist_jobs(tmp_path) if j.name.startswith(row)]
    assert {(j.cfg.lr, j.cfg.seed) for j in jobs} == {
        (lr, s) for lr in (grid[1], grid[2]) for s in ms.SEEDS[1:]
    }
    later = {grid[1]: (0.86, 0.86), grid[2]: (0.92, 0.90)}  # means 0.873 vs 0.9
    for lr, accs in later.items():
        for s, acc in zip(ms.SEEDS[1:], accs, strict=True):
            _fake(tmp_path, row, lr, s, acc)
    chosen = ms.select(tmp_path)
    assert chosen["rows"][row]["lr"] == grid[2]
    assert chosen["rows"][row]["per_seed"] == [0.88, 0.92, 0.90]
    assert (
        "| central-lora | 0.004 | 88.0 | 88.0 / 92.0 / 90.0 | **90.0** |"
        in (tmp_path / "selection.md").read_text()
    )
    tie = {grid[1]: (0.875, 0.75, 0.75), grid[2]: (0.875, 0.625, 0.875)}  # exact means
    for lr, accs in tie.items():
        for s, acc in zip(ms.SEEDS, accs, strict=True):
            _fake(tmp_path, row, lr, s, acc)
    assert ms.select(tmp_path)["rows"][row]["lr"] == grid[1]  # a tie goes to the smaller lr
    _fake(tmp_path, row, grid[2], 1, None)  # stored without its validation figures
    assert not ms.job(row, grid[2], 1).done(tmp_path) and ms.job(row, grid[1], 1).done(tmp_path)
    assert ms.job(row, grid[2], 1, validate=False).done(tmp_path)


def test_best_first_breaks_ties_towards_the_smaller_candidate() -> None:
    assert best_first({2e-3: 0.9, 1e-3: 0.9, 4e-3: 0.95}) == [4e-3, 1e-3, 2e-3]
    assert best_first({(1e-3, 2): 0.9, (1e-3, 1): 0.9, (2e-3, 1): 0.9})[0] == (1e-3, 1)
