"""The JSON/CSV table bound (`data_bounds.table_bound`) holds what `datasets` writes
when it stores a column as JSON text (non-ASCII characters escaped \\uXXXX, mixed
scalar kinds), and a CSV file's columns are its header's, not its first row's."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from declora.node import data_files, data_text
from declora.node.data_files import read_splits

_EMOJI = "\U0001f600" * 200
_CJK = "\u65e5\u672c\u8a9e" * 100
_ACCENTS = "\u00e9" * 200


def _rows(make: Callable[[int], object], n: int) -> str:
    return "".join(json.dumps(make(i), ensure_ascii=False) + "\n" for i in range(n))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        # mappings of two key sets: JSON text, each emoji written as two \\u escapes
        ("emoji.jsonl", _rows(lambda i: {"text": "t", "m": {f"k{i % 2}": _EMOJI}}, 3000)),
        # JSON text written by ujson: each "/" escaped \\/
        ("slash.jsonl", _rows(lambda i: {"text": "t", "m": "/" * 800 if i % 2 else 1}, 8000)),
        # texts and numbers in one column: JSON text too
        ("cjk.jsonl", _rows(lambda i: {"text": "t", "m": _CJK if i % 2 else 1}, 3000)),
        pytest.param(  # 20 s; test_an_array_of_texts_has_a_slot_a_text checks it fast
            "texts.json",
            json.dumps(["a"] * 2_000_000, separators=(",", ":")),
            marks=pytest.mark.slow,
        ),
        ("mixed.jsonl", _rows(lambda i: {"text": "t", "m": _ACCENTS if i % 2 else True}, 3000)),
    ],
)
def test_the_bound_holds_columns_stored_as_json_text(tmp_path: Path, name: str, text: str) -> None:
    """Measured: the .arrow files `datasets` writes stay within `table_bound` (before:
    emoji.jsonl, 2.5 MB, wrote 7.3 MB against a bound of 3.7 MB; cjk.jsonl 2.7 MB
    against 2.5 MB; mixed.jsonl, texts and booleans, was bounded as texts; texts.json,
    8 MB, wrote 10.4 MB against 9.0 MB; slash.jsonl 6.5 MB against 4.7 MB)."""
    import datasets

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    bound = data_files.table_bound(path, data_text.check_utf8(path))
    cache = tmp_path / "cache"
    datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    written = sum(f.stat().st_size for f in cache.rglob("*.arrow"))
    assert written <= bound, (written, bound)


def test_an_array_of_texts_has_a_slot_a_text(tmp_path: Path) -> None:
    """A .json array of texts is read by `datasets` as a "text" column, a row each:
    a slot each in the bound (before: none, and an 8 MB file of 2,000,000 texts
    wrote 10.4 MB against a bound of 9.0 MB)."""
    from declora.node import data_bounds

    path = tmp_path / "texts.json"
    path.write_text(json.dumps(["a"] * 1000, separators=(",", ":")))
    assert data_bounds.json_slots(path) == (1000, 1, 1000, 0)


def test_a_csv_first_row_of_many_commas_is_not_counted_as_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-column CSV (2.2 MB) whose first text holds 60,000 commas is read with 32 MiB
    free in the temporary folder (before: its first row's commas were counted as
    columns, a bound of 60.1 MiB, and the file refused)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    usage = shutil.disk_usage(folder)._replace(free=data_files.KEEP_FREE + (32 << 20))
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage)
    data = tmp_path / "news.csv"
    first = '"' + "a, " * 60_000 + '",business\n'
    data.write_text("text,label\n" + first + "".join(f"story {i},sport\n" for i in range(2000)))
    [(_, rows)] = read_splits(data)
    assert len(rows) == 2001
    assert rows[0]["label"] == "business"


def test_a_csv_header_after_a_sep_line_or_quoted_over_lines_is_counted(tmp_path: Path) -> None:
    """The header's columns are counted after Excel's `sep=;` line, and across a
    quoted name that holds a line break (each column costs 256 bytes a batch)."""
    from declora.node import data_bounds

    sep = tmp_path / "sep.csv"
    sep.write_text("sep=;\na;b;c\n1;2;3\n")
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('"a\nname",b,c,d\n1,2,3,4\n')
    assert data_bounds._csv_shape(sep) == (3, 4)
    assert data_bounds._csv_shape(quoted) == (4, 4)
