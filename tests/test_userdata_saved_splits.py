"""A saved train/test dataset whose test rows all repeat training texts loses its test
split to deduplication: one warning says so and that evaluation is off (the log said
only how many duplicates were dropped, then 'none held out as a test set')."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from declora.node.data import load_dataset

EMPTIED = "none is left to evaluate on"


@pytest.mark.parametrize("leaked", [True, False])
def test_a_test_split_emptied_by_dedupe_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, leaked: bool
) -> None:
    datasets = pytest.importorskip("datasets")
    train = {"text": [f"story number {i} about {w}" for i, w in enumerate("abcdefgh")]}
    train["label"] = ["x", "y"] * 4
    test = {"text": train["text"][:2] if leaked else ["a new story", "another one"]}
    test["label"] = ["x", "y"]
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(train), "test": datasets.Dataset.from_dict(test)}
    ).save_to_disk(str(folder))
    with caplog.at_level(logging.WARNING):
        _, held = load_dataset(folder)
    found = [r.getMessage() for r in caplog.records if EMPTIED in r.getMessage()]
    assert len(held) == (0 if leaked else 2)
    assert len(found) == (1 if leaked else 0)
    if leaked:
        assert "every row of its 'test' split (2) repeats a training text" in found[0]
