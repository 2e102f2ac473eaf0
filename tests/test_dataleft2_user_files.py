"""Data files that are slightly wrong, as users write them: each is read right or
refused with one clear line and a hint; a FIFO or a device is never opened."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from declora.node.data import load_file
from declora.node.data_files import DataError

_ROWS = [("a good movie", "pos"), ("a bad movie", "neg"), ("fine acting", "pos")]


def _csv(rows: list[tuple[str, str]] = _ROWS, sep: str = ",", end: str = "\n") -> str:
    return f"text{sep}label{end}" + "".join(f"{t}{sep}{label}{end}" for t, label in rows)


def _jsonl(rows: list[tuple[str, str]] = _ROWS, end: str = "\n") -> str:
    return "".join(json.dumps({"text": t, "label": label}) + end for t, label in rows)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("bom.csv", b"\xef\xbb\xbf" + _csv().encode()),
        ("bom.jsonl", b"\xef\xbb\xbf" + _jsonl().encode()),
        ("crlf.csv", _csv(end="\r\n").encode()),
        ("crlf.jsonl", _jsonl(end="\r\n").encode()),
        ("blank_last.jsonl", (_jsonl() + "\n  \n").encode()),
        ("spaces.csv", _csv([(t, f"{label}  ") for t, label in _ROWS]).encode()),
    ],
)
def test_a_bom_crlf_blank_last_line_or_trailing_spaces_read_as_written(
    tmp_path: Path, name: str, data: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    rows = load_file(path)
    assert rows.texts == tuple(t for t, _ in _ROWS)
    assert rows.label_names == ("neg", "pos")
    assert rows.labels is not None and rows.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize("name", ["floats.csv", "floats.jsonl"])
def test_float_labels_are_their_integer_classes_with_a_warning(
    tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("text,label\na,1.0\nb,0.0\nc,1\n")
    else:
        path.write_text('{"text": "a", "label": 1.0}\n{"text": "b", "label": 0.0}\n')
    with caplog.at_level(logging.WARNING, logger="declora.node.data"):
        rows = load_file(path)
    assert rows.label_names == ("0", "1")
    assert "'1.0' -> '1'" in caplog.text


def test_a_text_column_in_another_case_is_named_in_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("Text,label\na,x\nb,y\n")
    with pytest.raises(DataError) as err:
        load_file(path)
    assert "no text column 'text'" in err.value.message
    assert "--text-column Text" in (err.value.hint or "")


def test_latin1_bytes_are_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes("text,label\nun café,x\n".encode("latin-1"))
    with pytest.raises(DataError) as err:
        load_file(path)
    assert err.value.message == f"{path}: not UTF-8 text (line 2, column 7: byte 0xe9)"
    assert "iconv" in (err.value.hint or "")


def test_a_tsv_named_csv_is_told_to_be_named_tsv(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(_csv(sep="\t"))
    with pytest.raises(DataError) as err:
        load_file(path)
    assert "looks tab-separated" in err.value.message
    assert "name the file .tsv" in (err.value.hint or "")


def test_a_huge_single_line_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    text = "word " * 400_000  # 2 MB: past csv's default field limit (128 KiB)
    path.write_text(f"text,label\n{text},a\nshort,b\n")
    rows = load_file(path)
    assert rows.texts == (text, "short")


@pytest.mark.parametrize("comment", ["# my rows", "// my rows"])
def test_a_comment_line_in_json_lines_is_told_to_be_deleted(tmp_path: Path, comment: str) -> None:
    """Before: the hint asked for one JSON object a line, not naming the comment."""
    path = tmp_path / "rows.jsonl"
    path.write_text(_jsonl() + comment + "\n")
    with pytest.raises(DataError) as err:
        load_file(path)
    assert err.value.message.startswith(f"{path}:4: not valid JSON")
    assert err.value.hint == "JSON Lines has no comment lines: delete line 4 (and any other)"


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "dev_null"])
@pytest.mark.parametrize("name", ["rows.jsonl", "rows.csv", "rows.parquet", "rows.jsonl.gz"])
def test_a_fifo_or_a_device_is_refused_without_being_opened(
    tmp_path: Path, kind: str, name: str
) -> None:
    """A FIFO that no one writes to would block an open forever, /dev/zero never ends;
    before: load_from_disk's NotADirectoryError out of the reader (a traceback)."""
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero" if kind == "dev_zero" else "/dev/null")
    with pytest.raises(DataError) as err:
        load_file(path)
    what = "FIFO (named pipe)" if kind == "fifo" else "character device"
    assert err.value.message == f"{path}: not a data file but a {what}"
    assert "save_to_disk folder" in (err.value.hint or "")
