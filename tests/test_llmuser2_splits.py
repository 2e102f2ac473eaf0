"""A saved DatasetDict whose splits are not all read as their names say is named in one
warning: a 'validation' split beside 'train' and 'test' was left out, and splits named
otherwise ('training', 'eval') were pooled and split again, both silently."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import pytest

from declora.node.data import load_dataset
from declora.node.lm_data import LmFormat


def saved(path: Path, names: tuple[str, ...]) -> Path:
    rows = {n: [{"text": f"{n} row {i} " * (i + 1)} for i in range(4)] for n in names}
    datasets.DatasetDict({n: datasets.Dataset.from_list(r) for n, r in rows.items()}).save_to_disk(
        path
    )
    return path


def read(path: Path) -> tuple[int, int]:
    fmt = LmFormat("auto", "text", "messages", "prompt", "response")
    train, test = load_dataset(path, 0.25, label_column=None, examples=fmt, dedupe=False)
    return len(train), len(test)


def test_a_validation_split_beside_train_and_test_is_named_as_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = saved(tmp_path / "dd", ("train", "validation", "test"))
    with caplog.at_level(logging.WARNING, logger="declora"):
        assert read(folder) == (4, 4)
    assert "split(s) ['validation'] are not read" in caplog.text


def test_splits_named_otherwise_are_said_to_be_pooled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = saved(tmp_path / "dd", ("training", "eval"))
    with caplog.at_level(logging.WARNING, logger="declora"):
        assert read(folder) == (6, 2)
    assert "pooled" in caplog.text and "'training', 'eval'" in caplog.text


def test_train_and_test_alone_warn_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = saved(tmp_path / "dd", ("train", "test"))
    with caplog.at_level(logging.WARNING, logger="declora"):
        assert read(folder) == (4, 4)
    assert "split" not in caplog.text
