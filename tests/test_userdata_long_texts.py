"""A classifier reads each text's first --max-length tokens: when a user's texts are
longer, training says so once per dataset (how many texts, what share of the tokens
is dropped) and so does `predict` (it was silent in both); texts that fit, and the
embedded BBC set (read by its first tokens on purpose), give no such warning."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SPEC

from declora.node.adapter_io import load_adapter
from declora.node.recipe import Recipe
from declora.node.trainer import LoraModel
from declora.node.workload import load_workload

CUT = "longer than --max-length"


def write_csv(path: Path, long: bool) -> Path:
    words = "word " * (60 if long else 2)
    rows = [f"{'ab'[i % 2]}{i} {words if i % 5 == 0 else ''},{'xy'[i % 2]}" for i in range(20)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("long", [True, False])
def test_training_counts_the_texts_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, long: bool
) -> None:
    data = write_csv(tmp_path / "d.csv", long)
    recipe = Recipe(model="tiny-bert", data=str(data), max_length=32)
    with caplog.at_level(logging.WARNING):
        work = load_workload(recipe, 2)
        work.encoded_train()
    cut = [r.getMessage() for r in caplog.records if CUT in r.getMessage()]
    if not long:
        assert cut == []
        return
    trained = sum(t.count("word") > 0 for t in work.train.texts)
    assert cut and cut[0].startswith(f"training data: {trained} of {len(work.train)} texts")
    assert "their first 32 tokens" in cut[0]


def test_predict_counts_the_texts_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lm = LoraModel(dataclasses.replace(TINY_SPEC, max_length=16), label_names=("x", "y"))
    lm.save_adapter(np.zeros(lm.schema.numel, dtype=np.float32), tmp_path / "a", {})
    adapter = load_adapter(tmp_path / "a")
    with caplog.at_level(logging.WARNING):
        adapter.predict(["short", "a much longer text than sixteen bytes", "tiny"])
    cut = [r.getMessage() for r in caplog.records if "longer than the adapter" in r.getMessage()]
    assert len(cut) == 1 and cut[0].startswith("1 of 3 texts")
