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
    TextDataset,
    load_bbcnews,
    load_dataset,
    load_file,
    read_label_file,
    stratified_split,
)
from declora.node.data_files import DataError
from declora.node.dedupe import dedupe

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
    assert (len(train), len(test)) == (1654, 414)  # 157 duplicates dropped before the split
    assert train.label_names == test.label_names == BBC_LABELS
    # the split is a partition of the deduplicated corpus
    assert sorted(train.texts + test.texts) == sorted(dedupe(bbc)[0].texts)
    again_train, again_test = load_dataset("bbcnews")
    assert again_train.texts == train.texts and again_test.texts == test.texts
    assert train.labels is not None and again_train.labels is not None
    assert np.array_equal(again_train.labels, train.labels)


def test_bbcnews_split_is_stratified(bbc: TextDataset, bbc_split: tuple[TextDataset, ...]) -> None:
    train, test = bbc_split
    assert train.labels is not None and test.labels is not None
    unique = dedupe(bbc)[0]
    assert unique.labels is not None
    total = np.bincount(unique.labels, minlength=5)
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


def test_column_missing_in_a_later_row(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": "a", "label": "x"}, {"text": "b"}]
    with pytest.raises(DataError, match="row 2 has no value in column 'label'"):
        load_file(write_jsonl(tmp_path / "d.jsonl", rows))


def test_null_label_and_non_object_rows_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 2 has no value in column 'label'"):
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


# --------------------------------------------------------------------------- datasets-backed
# reading, declared label sets and the one-line errors


def assert_one_line_with_hint(exc: pytest.ExceptionInfo[DataError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "(hint: " in text, text
    assert isinstance(exc.value, ValueError)
    return text


def test_csv_category_column_with_label_column(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"text": "stocks rise", "category": "business"},
        {"text": "a new film", "category": "film"},
        {"text": "shares fall", "category": "business"},
    ]
    path = write_csv(tmp_path / "news.csv", rows)
    data = load_file(path, label_column="category")
    assert data.label_names == ("business", "film")
    assert data.labels is not None and data.labels.tolist() == [0, 1, 0]
    with pytest.raises(DataError) as exc:
        load_file(path)  # the default label column is "label"
    text = assert_one_line_with_hint(exc)
    assert "'label'" in text and "['category', 'text']" in text and "--label-column" in text


def test_csv_keeps_the_spelling_of_texts_and_labels(tmp_path: Path) -> None:
    # numbers, "NA" and quoted commas stay the strings they are in the file
    path = tmp_path / "d.csv"
    path.write_text('text,label\n1.50,NA\n"a, b",007\nNA,NA\n', encoding="utf-8")
    data = load_file(path)
    assert data.texts == ("1.50", "a, b", "NA")
    assert data.label_names == ("007", "NA")
    assert data.labels is not None and data.labels.tolist() == [1, 0, 1]


def test_integer_labels_with_a_declared_label_set(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"text": f"t{i}", "label": i % 3} for i in range(30)]
    path = write_jsonl(tmp_path / "ints.jsonl", rows)
    train, test = load_dataset(str(path), labels=["2", "0", "1"])
    assert train.label_names == test.label_names == ("2", "0", "1")
    assert train.labels is not None and test.labels is not None
    ids = dict(
        zip(train.texts + test.texts, [*train.labels.tolist(), *test.labels.tolist()], strict=True)
    )
    # the integer label i is the name str(i): its id is its place in the declared set
    assert ids == {f"t{i}": ("2", "0", "1").index(str(i % 3)) for i in range(30)}
    # the split is the same as without the declared set
    assert load_dataset(str(path))[1].texts == test.texts


def test_declared_labels_cover_a_shard_that_lacks_a_class(tmp_path: Path) -> None:
    swarm = ("business", "film", "sport", "tech")
    shard = [r for r in ROWS * 5 if r["label"] != "film"]  # this node never saw "film"
    path = write_jsonl(tmp_path / "shard.jsonl", shard)
    inferred, _ = load_dataset(str(path))
    assert inferred.label_names == ("business", "sport")  # without the set: ids drift
    train, test = load_dataset(str(path), labels=swarm)
    assert train.label_names == test.label_names == swarm
    assert train.num_labels == 4
    assert train.labels is not None and test.labels is not None
    ids = set(train.labels.tolist()) | set(test.labels.tolist())
    assert ids == {0, 2}  # business and sport keep their swarm-wide ids


def test_label_outside_the_declared_set_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(DataError) as exc:
        load_dataset(str(path), labels=("business", "sport", "tech"))
    text = assert_one_line_with_hint(exc)
    assert "['film']" in text and "declared" in text


def test_declared_set_must_be_a_real_set() -> None:
    with pytest.raises(DataError, match="more than once"):
        load_dataset("bbcnews", labels=("tech", "tech", "sport"))
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("bbcnews", labels=("tech",))


def test_bbcnews_with_declared_labels_follows_their_order(
    bbc_split: tuple[TextDataset, ...],
) -> None:
    order = tuple(reversed(BBC_LABELS))
    train, _ = load_dataset("bbcnews", labels=order)
    base_train = bbc_split[0]
    assert train.texts == base_train.texts and train.label_names == order
    assert train.labels is not None and base_train.labels is not None
    assert (train.labels == 4 - base_train.labels).all()
    with pytest.raises(DataError, match="tech"):
        load_dataset("bbcnews", labels=("business", "entertainment", "politics", "sports"))


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("d.txt", "hello\n", "unsupported data file type '.txt'"),
        ("e.jsonl", "", "no rows"),
        ("blank.jsonl", "\n  \n", "no rows"),
        ("e.csv", "", "no rows"),
        ("header.csv", "text,label\n", "no rows"),
        ("bad.jsonl", '{"text": "a", "label": 0}\n\n{"text": "b" "label": 1}\n', "bad.jsonl:3:"),
        ("ragged.csv", "text,label\na,b\nc,d,e\n", "cannot read it as csv"),
        ("junk.parquet", "not parquet at all", "cannot read it as parquet"),
    ],
)
def test_bad_files_are_one_line_errors(
    tmp_path: Path, name: str, content: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as exc:
        load_file(path)
    assert needle in assert_one_line_with_hint(exc)


def test_missing_file_and_plain_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path / "nope.jsonl"))
    assert "not found" in assert_one_line_with_hint(exc)
    with pytest.raises(DataError) as exc:
        load_dataset(str(tmp_path))
    assert "save_to_disk" in assert_one_line_with_hint(exc)


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_missing_text_column_lists_the_columns(tmp_path: Path, kind: str) -> None:
    path = WRITERS[kind](tmp_path / f"d.{kind}", ROWS)
    with pytest.raises(DataError) as exc:
        load_dataset(str(path), text_column="body")
    text = assert_one_line_with_hint(exc)
    assert "no text column 'body'" in text and "['label', 'text']" in text
    assert "--text-column" in text


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_empty_text_is_refused(tmp_path: Path, kind: str) -> None:
    rows: list[dict[str, object]] = [{"text": "ok", "label": "a"}, {"text": "  ", "label": "b"}]
    with pytest.raises(DataError) as exc:
        load_file(WRITERS[kind](tmp_path / f"d.{kind}", rows))
    assert "row 2 has an empty text" in assert_one_line_with_hint(exc)


def test_text_column_option_reaches_load_dataset(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"body": f"b{i}", "label": "xy"[i % 2]} for i in range(10)]
    train, test = load_dataset(str(write_jsonl(tmp_path / "d.jsonl", rows)), text_column="body")
    assert sorted(train.texts + test.texts) == sorted(f"b{i}" for i in range(10))


def test_save_to_disk_dataset_and_its_class_label_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    ds = datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]}, features
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    data = load_file(tmp_path / "saved")
    # a ClassLabel declares the label set: "neg" stays id 0 even if sorting says otherwise
    assert data.label_names == ("neg", "pos")
    assert data.labels is not None and data.labels.tolist() == [i % 2 for i in range(10)]
    train, test = load_dataset(str(tmp_path / "saved"))
    assert (len(train), len(test)) == (8, 2)


def test_save_to_disk_dataset_dict_keeps_its_splits(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(ROWS),
            "test": datasets.Dataset.from_list([{"text": "match report", "label": "sport"}]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    train, test = load_dataset(str(tmp_path / "dd"))
    assert train.texts == tuple(str(r["text"]) for r in ROWS) and test.texts == ("match report",)
    assert train.label_names == test.label_names == ("business", "film", "sport")
    assert test.labels is not None and test.labels.tolist() == [2]
    assert len(load_file(tmp_path / "dd")) == 5  # load_file reads every split


def test_read_label_file_lines_and_json(tmp_path: Path) -> None:
    lines = tmp_path / "labels.txt"
    lines.write_text("\ufeffsport\n  film \n\nbusiness\n", encoding="utf-8")
    assert read_label_file(lines) == ("sport", "film", "business")
    as_json = tmp_path / "labels.json"
    as_json.write_text('["neg", "pos", 2]')
    assert read_label_file(as_json) == ("neg", "pos", "2")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "empty"),
        ("a\nb\na\n", "more than once"),
        ("only\n", "at least 2"),
        ('["a", "b"', "not a valid JSON list"),
        ('["a", {"b": 1}]', "label names"),
    ],
)
def test_read_label_file_errors(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=needle) as exc:
        read_label_file(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(DataError, match="not found"):
        read_label_file(tmp_path / "none.txt")


@pytest.mark.parametrize("name", ["latin1.jsonl", "latin1.csv"])
def test_non_utf8_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    body = '{"text": "café", "label": "a"}\n' if name.endswith("jsonl") else "text,label\ncafé,a\n"
    path.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataError) as exc:
        load_file(path)
    assert "not UTF-8" in assert_one_line_with_hint(exc)


def test_repeated_csv_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,text,label\na,b,c\n")
    with pytest.raises(DataError) as exc:
        load_file(path)
    assert "repeats column(s) ['text']" in assert_one_line_with_hint(exc)
