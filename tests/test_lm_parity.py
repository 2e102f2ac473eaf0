"""The LLM parity study's machinery (`experiment --task lm-parity`) on a tiny Llama:
selection reads validation only, every row and seed runs, the table reads the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_synthetic, write_jsonl

from declora.cli import lm_parity


def test_gap_interval_is_the_student_t_interval_of_the_seeds() -> None:
    mean, std, low, high = lm_parity.gap_interval([1.0, 2.0, 3.0])
    assert (mean, std) == pytest.approx((2.0, 1.0))
    assert (low, high) == pytest.approx((2.0 - 4.303 / 3**0.5, 2.0 + 4.303 / 3**0.5))
    assert lm_parity.gap_interval([4.0]) == (4.0, 0.0, 4.0, 4.0)


@pytest.mark.parametrize(
    ("low", "high", "seeds", "expected"),
    [(1.0, 4.9, 3, "met"), (1.0, 5.1, 3, "undecided"), (5.1, 9.0, 3, "missed"),
     (1.0, 1.0, 1, "undecided"), (6.0, 6.0, 1, "undecided")],
)  # fmt: skip
def test_verdict_needs_the_whole_interval_and_two_seeds(
    low: float, high: float, seeds: int, expected: str
) -> None:
    assert lm_parity.parity_verdict(high, low, seeds, 5.0) == expected


def test_the_study_selects_on_validation_and_tables_every_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_jsonl(make_synthetic(200), tmp_path / "texts.jsonl")
    tiny = {"model": "tiny-llama", "data": str(data), "rank": 4, "alpha": 8, "max_length": 32,
            "batch_size": 4, "rounds": 4, "eval_every": 4, "max_eval": 8}  # fmt: skip
    monkeypatch.setattr(lm_parity, "SETTING", {**lm_parity.SETTING, **tiny})
    monkeypatch.setattr(lm_parity, "RECIPE_LRS", (1e-3, 1e-2))
    monkeypatch.setattr(lm_parity, "CENTRAL_LRS", (1e-3, 1e-2))
    monkeypatch.setattr(lm_parity, "SEEDS", (0, 1))
    out = tmp_path / "study"
    text = lm_parity.run_study(out, workers=1, say=lambda _: None)

    chosen = json.loads((out / "selection.json").read_text())
    val = {(g["row"], g["lr"]): g for g in chosen["grid"]}
    best = min(
        lm_parity.RECIPE_LRS, key=lambda lr: val[("recipe", lr)]["worst_validation_perplexity"]
    )
    assert chosen["recipe_lr"] == best
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4 + 1 + 1 + 2 + 2  # selection, seed 1 of recipe + central, q4, no-tracking
    seed1 = json.loads((out / "runs" / f"recipe-lr{best:g}-seed1.json").read_text())
    assert "validation" not in seed1["final"]  # only the selection runs score validation
    assert seed1["config"]["seed"] == 1 and seed1["config"]["gradient_tracking"]
    rows = [line for line in text.splitlines() if line.startswith("| recipe")]
    assert [r.split(" | ")[1] for r in rows] == ["2", "2", "2"]
    assert "x fewer bytes" in rows[1]


def test_experiment_table_of_a_study_runs_nothing(tmp_path: Path) -> None:
    """`experiment --task lm-parity|methods|swarm --table` rebuilds the table from the
    finished runs and selection.json; it used to start the whole study (hours)."""
    from typer.testing import CliRunner

    from declora.cli.app import app

    runner = CliRunner()
    chosen = {"recipe_lr": 2e-3, "central_lr": 4e-3, "grid": []}
    (tmp_path / "selection.json").write_text(json.dumps(chosen))
    res = runner.invoke(
        app, ["experiment", "--task", "lm-parity", "--table", "--output", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    assert "| recipe | 0 | not run yet |" in res.stdout and (tmp_path / "table.md").is_file()
    assert not (tmp_path / "runs").exists()
    empty = tmp_path / "empty"
    res = runner.invoke(app, ["experiment", "--task", "methods", "--table", "--output", str(empty)])
    assert res.exit_code == 2 and "selection.json" in res.output
    assert not empty.exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "selection.json").write_text('{"rows": ')  # a truncated file: one line
    res = runner.invoke(
        app, ["experiment", "--task", "methods", "--table", "--output", str(broken)]
    )
    assert res.exit_code == 2 and "not a JSON object" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(
        app, ["experiment", "--task", "swarm", "--only", "x", "--output", str(empty)]
    )
    assert res.exit_code == 2 and not empty.exists()
