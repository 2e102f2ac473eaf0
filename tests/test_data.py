"""Tests for declora.node.data: the embedded BBC News split and user data files."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from declora.node.data import (
    BBC_TEST_FRACTION,
    DataError,
    TextDataset,
    load_bbcnews,
    load_dataset,
    load_file,
    stratified_split,
)

BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


# --------------------------------------------------------------------------- BBC News


@pytest.fixture(scope="module")
def bbc() -> TextDataset:
    return load_bbcnews()


@pytest.fixture(scope="module")
def bbc_split() -> tuple[TextDataset, TextDataset]:
    return load_dataset("bbcnews")


def test_bbcnews_has_all_articles_and_sorted_labels(bbc: TextDataset) -> None:
    assert len(bbc) == 2225
    assert bbc.label_names == BBC_LABELS
    assert bbc.labels is not None
    assert bbc.labels.dtype == np.int64
    assert sorted(set(bbc.labels.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(bbc.labels).tolist() == [510, 386, 417, 511, 401]
    assert all(t and t == t.strip() for t in bbc.texts)


def test_bbcnews_split_sizes_and_determinism(
    bbc: TextDataset, bbc_split: tuple[TextDataset, TextDataset]
) -> None:
    train, test = bbc_split
    assert (len(train), len(test)) == (1781, 444)
    assert train.label_names == test.label_names == BBC_LABELS
    # the split is a partition of the corpus
    assert sorted(train.texts + test.texts) == sorted(bbc.texts)
    again_train, again_test = load_dataset("bbcnews")
    assert again_train.texts == train.texts and again_test.texts == test.texts
    assert train.labels is not None and again_train.labels is not None
    assert np.array_equal(again_train.labels, train.labels)


def test_bbcnews_split_is_stratified(bbc: TextDataset, bbc_split: tuple[TextDataset, ...]) -> None:
    train, test = bbc_split
    assert bbc.labels is not None and train.labels is not None and test.labels is not None
    total = np.bincount(bbc.labels, minlength=5)
    n_test = np.bincount(test.labels, minlength=5)
    assert n_test.tolist() == [round(c * BBC_TEST_FRACTION) for c in total]
    assert (np.bincount(train.labels, minlength=5) + n_test).tolist() == total.tolist()


def test_stratified_split_is_seeded_and_sorted() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 30])
    tr1, te1 = stratified_split(labels, 0.2, seed=5)
    tr2, te2 = stratified_split(labels, 0.2, seed=5)
    _, te3 = stratified_split(labels, 0.2, seed=6)
    assert np.array_equal(tr1, tr2) and np.array_equal(te1, te2)
    assert not np.array_equal(te1, te3)
    assert np.all(np.diff(tr1) > 0) and np.all(np.diff(te1) > 0)
    assert np.bincount(labels[te1]).tolist() == [2, 4, 6]
    assert sorted(np.concatenate([tr1, te1]).tolist()) == list(range(60))


# --------------------------------------------------------------------------- user files

ROWS: list[dict[str, object]] = [
    {"text": "stocks rise", "label": "business"},
    {"text": "a new film", "label": "film"},
    {"text": "goal!", "label": "sport"},
    {"text": "shares fall", "label": "business"},
]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, object]], delimiter: str = ",") -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, object]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": write_jsonl, "csv": write_csv}
if HAS_PYARROW:
    WRITERS["parquet"] = write_parquet


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_load_file_string_labels(tmp_path: Path, kind: str) -> None:
    path = WRITERS[kind](tmp_path / f"d.{kind}", ROWS)
    data = load_file(path)
    assert data.texts == ("stocks rise", "a new film", "goal!", "shares fall")
    assert data.label_names == ("business", "film", "sport")
    assert data.labels is not None
    assert data.labels.tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_load_file_int_labels_sort_numerically(tmp_path: Path, kind: str) -> None:
    rows: list[dict[str, object]] = [
        {"text": f"t{i}", "label": lab} for i, lab in enumerate([10, 2, 0, 2, 1])
    ]
    data = load_file(WRITERS[kind](tmp_path / f"d.{kind}", rows))
    assert data.label_names == ("0", "1", "2", "10")  # numeric order, not "10" < "2"
    assert data.labels is not None
    assert data.labels.tolist() == [3, 2, 0, 2, 1]


def test_load_file_tsv(tmp_path: Path) -> None:
    data = load_file(write_csv(tmp_path / "d.tsv", ROWS, delimiter="\t"))
    assert len(data) == 4 and data.label_names == ("business", "film", "sport")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_load_file_explicit_label_names(tmp_path: Path, kind: str) -> None:
    names = ("sport", "film", "business", "tech")  # a swarm-wide order, with an unused class
    data = load_file(WRITERS[kind](tmp_path / f"d.{kind}", ROWS), label_names=names)
    assert data.label_names == names
    assert data.num_labels == 4
    assert data.labels is not None
    assert data.labels.tolist() == [2, 1, 0, 2]


def test_load_file_custom_columns_and_text_only(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"body": "x y", "topic": "a"}, {"body": "z", "topic": "b"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_file(path, text_column="body", label_column="topic")
    assert data.texts == ("x y", "z")
    assert data.labels is not None and data.labels.tolist() == [0, 1]
    lm_data = load_file(path, text_column="body", label_column=None)
    assert lm_data.texts == ("x y", "z")
    assert lm_data.labels is None and lm_data.label_names == ()


def test_load_file_skips_blank_jsonl_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 0}\n\n   \n{"text": "b", "label": 1}\n')
    assert load_file(path).texts == ("a", "b")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_file(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_missing_column_is_named(tmp_path: Path, kind: str) -> None:
    path = WRITERS[kind](tmp_path / f"d.{kind}", ROWS)
    with pytest.raises(DataError, match="'body'"):
        load_file(path, text_column="body")
    with pytest.raises(DataError, match="'topic'"):
        load_file(path, label_column="topic")


def test_unknown_label_with_explicit_names(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError, match="film"):
        load_file(path, label_names=("business", "sport"))


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": 0}\n{"text": "broken", \n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: not valid JSON"):
        load_file(path)


def test_unsupported_suffix_and_empty_file(tmp_path: Path) -> None:
    txt = tmp_path / "d.txt"
    txt.write_text("hello\n")
    with pytest.raises(DataError, match="unsupported"):
        load_file(txt)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_file(empty)


@pytest.mark.skipif(HAS_PYARROW, reason="checks the message shown when pyarrow is absent")
def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="pyarrow"):
        load_file(path)


def test_column_missing_in_a_later_row(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": "a", "label": "x"}, {"text": "b"}]
    with pytest.raises(DataError, match="row 2 has no column 'label'"):
        load_file(write_jsonl(tmp_path / "d.jsonl", rows))


def test_null_label_and_non_object_rows_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 2 has no column 'label'"):
        load_file(
            write_jsonl(
                tmp_path / "n.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": None}]
            )
        )
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n[1, 2]\n')
    with pytest.raises(DataError, match="row 2 is a list"):
        load_file(path)


def test_text_only_file_for_causal_lm(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"line {i}"} for i in range(10)])
    train, test = load_dataset(str(path), label_column=None)
    assert train.labels is None and len(train) + len(test) == 10 and len(test) == 2
    assert not set(train.texts) & set(test.texts)


def test_textdataset_length_mismatch_and_subset() -> None:
    with pytest.raises(DataError):
        TextDataset(("a", "b"), np.array([0]), ("x",))
    data = TextDataset(("a", "b", "c"), np.array([0, 1, 0]), ("x", "y"))
    sub = data.subset(np.array([2, 0]))
    assert sub.texts == ("c", "a")
    assert sub.labels is not None and sub.labels.tolist() == [0, 0]
    assert sub.label_names == ("x", "y")


def test_load_dataset_from_file_is_a_seeded_stratified_split(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": f"text {i}", "label": "ab"[i % 2]} for i in range(50)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    train, test = load_dataset(str(path))
    assert (len(train), len(test)) == (40, 10)
    assert test.labels is not None and np.bincount(test.labels).tolist() == [5, 5]
    assert set(train.texts).isdisjoint(test.texts)
    assert load_dataset(str(path))[1].texts == test.texts
