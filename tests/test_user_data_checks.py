"""User data that used to be read silently wrong is refused (or warned about) clearly.

A CSV row with one field more than the header (pandas shifted every column), column-
oriented JSON (read as one row of lists), classification with fewer than 2 classes,
labels that differ only by case or whitespace, a UTF-8 byte-order mark in a .txt input
of predict / generate, and the same column named as text and label.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from conftest import tiny_sim_config

from declora.cli.generate import read_prompts
from declora.cli.predict import read_rows
from declora.node.data import label_variants, load_dataset, load_file
from declora.node.data_files import DataError
from declora.node.workload import load_workload


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def test_csv_row_with_an_extra_field_is_refused_with_its_row(tmp_path: Path) -> None:
    ragged = write(tmp_path / "ragged.csv", "text,label,extra\nfoo,tech,1,2\nbar,sport,3\n")
    with pytest.raises(
        DataError,
        match=r"ragged\.csv:2: cannot read it as csv: row 1 has 4 fields but the header has 3",
    ):
        load_file(ragged)
    with pytest.raises(DataError, match="row 1 has 4 fields"):  # predict reads it too
        read_rows(str(ragged), "text", io.StringIO())[0]
    # a later row, after blank lines and a quoted separator, is counted as a row
    later = write(tmp_path / "later.csv", 'text,label\n"a, b",x\n\nc,y\nd,z,extra\n')
    with pytest.raises(DataError, match=r"later\.csv:5: cannot read it as csv: row 3 has 3 fields"):
        load_file(later)
    # well-formed: quoted separators and short rows keep their columns
    good = write(tmp_path / "good.csv", 'text,label,extra\n"a, b",x,1\nc,y,2\n')
    data = load_file(good)
    assert data.texts == ("a, b", "c")
    assert data.label_names == ("x", "y")


def test_column_oriented_json_is_refused(tmp_path: Path) -> None:
    texts = [f"text {i}" for i in range(6)]
    labels = ["a", "b"] * 3
    cols = write(tmp_path / "cols.json", json.dumps({"text": texts, "label": labels}))
    with pytest.raises(DataError, match=r"row 1: the text in column 'text' is a list") as err:
        load_file(cols)
    assert "one object per record" in str(err.value)
    # a list as a label is refused as well
    bad = tmp_path / "bad.jsonl"
    write(bad, '{"text": "x", "label": "a"}\n{"text": "y", "label": ["a", "b"]}\n')
    with pytest.raises(DataError, match=r"row 2: the label in column 'label' is a list"):
        load_file(bad)
    # numbers stay accepted as labels; one object per record is read as before
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts)]
    ok = write(tmp_path / "rows.json", json.dumps(rows))
    assert load_file(ok).label_names == ("0", "1")


def test_classification_needs_two_classes(tmp_path: Path) -> None:
    rows = "".join(f"text number {i} about things,tech\n" for i in range(12))
    one = write(tmp_path / "one.csv", "headline,category\n" + rows)
    cfg = tiny_sim_config(one, text_column="headline", label_column="category")
    with pytest.raises(DataError, match=r"1 class\(es\) \['tech'\].*at least 2") as err:
        load_workload(cfg.recipe(), 1)
    assert "--labels" in str(err.value)
    # the documented way: the swarm's classes declared, this shard has only one
    declared = cfg.model_copy(update={"labels": ("business", "sport", "tech")})
    work = load_workload(declared.recipe(), 1)
    assert work.train.label_names == ("business", "sport", "tech")
    assert work.lm.label_names == ("business", "sport", "tech")


def test_label_variants_are_warned_about_not_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = ["SPORT", "Sport", "Tech", "sport", "tech", "Big  Deal", "big deal", "other"]
    rows = "".join(f"text {i} {lab},{lab}\n" for i, lab in enumerate(labels * 2))
    data = write(tmp_path / "variants.csv", "text,label\n" + rows)
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        train, _ = load_dataset(data, dedupe=False)
    assert len(train.label_names) == 8  # kept apart
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "differ only by case or whitespace" in warned
    assert "'SPORT', 'Sport', 'sport'" in warned
    assert "'Tech', 'tech'" in warned
    assert "'Big  Deal', 'big deal'" in warned
    assert "other" not in warned
    assert label_variants(["a", "b"]) == []


def test_byte_order_mark_is_not_part_of_the_first_text(tmp_path: Path) -> None:
    bom = write(tmp_path / "bom.txt", "one\ntwo\n", encoding="utf-8-sig")
    assert read_rows(str(bom), "text", io.StringIO())[0] == ["one", "two"]
    assert read_prompts(None, str(bom), io.StringIO()) == ["one", "two"]
    assert read_rows("-", "text", io.StringIO("\ufeffone\ntwo\n"))[0] == ["one", "two"]
    assert read_prompts(None, "-", io.StringIO("\ufeffone\n")) == ["one"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_rows(str(latin), "text", io.StringIO())[0]
    with pytest.raises(DataError, match="not UTF-8"):
        read_prompts(None, str(latin), io.StringIO())


def test_text_and_label_cannot_be_the_same_column(tmp_path: Path) -> None:
    data = write(tmp_path / "d.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    with pytest.raises(DataError, match="both name the column 'label'"):
        load_dataset(data, text_column="label", label_column="label")
    with pytest.raises(DataError, match="both name the column 'text'"):
        load_file(data, text_column="text", label_column="text")
    assert len(load_file(data, text_column="label", label_column=None)) == 4


def test_input_that_is_not_utf8_is_one_data_error(tmp_path: Path) -> None:
    """Latin-1 bytes on stdin or in a .txt file: a DataError naming the input, for
    predict and generate alike (never a UnicodeDecodeError traceback)."""
    latin = "café\n".encode("latin-1")
    stdin = io.TextIOWrapper(io.BytesIO(latin), encoding="utf-8")
    with pytest.raises(DataError, match="<stdin>: not UTF-8 text"):
        read_rows("-", "text", stdin)[0]
    stdin = io.TextIOWrapper(io.BytesIO(latin), encoding="utf-8")
    with pytest.raises(DataError, match="<stdin>: not UTF-8 text"):
        read_prompts(None, "-", stdin)
    path = tmp_path / "latin.txt"
    path.write_bytes(latin)
    for read in (
        lambda: read_rows(str(path), "text", io.StringIO())[0],
        lambda: read_prompts(None, str(path), io.StringIO()),
    ):
        with pytest.raises(DataError, match=r"latin\.txt: not UTF-8 text"):
            read()
