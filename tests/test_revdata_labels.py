"""Labels a user's file spells two ways: a number and a text of one value, and copies
of one text labelled differently (dedupe keeps the first)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from declora.node.data import TextDataset, load_dataset, load_file
from declora.node.dedupe import dedupe_labelled, duplicate_of, duplicate_rows


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_label_written_as_a_number_and_as_text_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1 and "1" in one JSON lines file were one class, silently."""
    rows = [("a b", 1), ("c d", "1"), ("e f", 2), ("g h", 2)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": v}) + "\n" for t, v in rows))
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        data = load_file(path)
    assert data.label_names == ("1", "2")
    warned = _warnings(caplog)
    assert any(
        "column 'label' holds labels of more than one type (numbers and texts)" in m for m in warned
    ), warned


def test_labels_of_one_type_are_not_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The guard: numbers only, texts only (CSV reads every label as text)."""
    (tmp_path / "n.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n')
    (tmp_path / "t.csv").write_text("text,label\na,1\nb,x\n")
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        load_file(tmp_path / "n.jsonl")
        load_file(tmp_path / "t.csv")
    assert not [m for m in _warnings(caplog) if "more than one type" in m]


def test_copies_with_conflicting_labels_are_counted_in_the_dedupe_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Three copies of one review, two labelled otherwise than the first: dedupe kept
    the first's label without saying the copies disagreed."""
    rows = [
        ("the film was great fun", "pos"),
        ("The film was great fun!", "neg"),  # an exact copy once normalized
        ("the film was great fun", "neg"),
        ("the film was great fun", "pos"),  # a copy that agrees
        *[(f"another distinct review number {i}", "pos" if i % 2 else "neg") for i in range(8)],
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": v}) + "\n" for t, v in rows))
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        load_dataset(path)
    warned = [m for m in _warnings(caplog) if "rows dropped" in m]
    assert len(warned) == 1 and "3 of 12 rows dropped" in warned[0], warned
    assert "2 of them with a conflicting label" in warned[0], warned


def test_a_copy_of_a_near_duplicate_names_the_row_kept() -> None:
    """An exact copy of a row that is itself a near duplicate maps to the kept row;
    `duplicate_rows` is `duplicate_of`'s copies."""
    base = "one two three four five six seven eight nine ten eleven twelve"
    near = base + " thirteen"
    texts = [base, near, "something else entirely here", near]
    of = duplicate_of(texts)
    assert of.tolist() == [-1, 0, -1, 0]
    assert duplicate_rows(texts).tolist() == [1, 3]
    data = TextDataset(tuple(texts), np.array([0, 1, 1, 0]), ("a", "b"))
    kept, dropped, conflicting = dedupe_labelled(data)
    assert kept.texts == (base, "something else entirely here") and (dropped, conflicting) == (2, 1)


def test_a_saved_split_s_conflicting_copies_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A test row copying a training row under another label is dropped: the warning
    counts it as a conflict, as it does a training copy's."""
    import datasets

    train = [(f"distinct training review {i}", "ab"[i % 2]) for i in range(6)]
    train += [("distinct training review 0", "b")]  # a training copy, other label
    test = [("distinct training review 1", "a"), ("a test review of its own", "a")]
    datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"text": [t for t, _ in rows], "label": [v for _, v in rows]}
            )
            for name, rows in (("train", train), ("test", test))
        }
    ).save_to_disk(str(tmp_path / "saved"))
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        kept_train, kept_test = load_dataset(tmp_path / "saved")
    assert (len(kept_train), len(kept_test)) == (6, 1)
    warned = [m for m in _warnings(caplog) if "rows dropped" in m]
    assert len(warned) == 1 and "2 of 9 rows dropped" in warned[0], warned
    assert "2 of them with a conflicting label" in warned[0], warned
