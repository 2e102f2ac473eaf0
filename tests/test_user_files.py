"""A new user's own files: a small file `simulate` cannot hold a test set out of, and
CSV/TSV files as spreadsheets write them (Excel's `;` separator, `sep=` line and
trailing commas) or as a stray quote mark would misread them (rows swallowed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.node.data import TextDataset, load_file, no_test_rows
from declora.node.data_files import DataError

QUOTE_HINT = "quote a text that starts with a quote mark whole"


def test_simulate_refuses_a_file_too_small_to_hold_out_a_test_row(tmp_path: Path) -> None:
    """10 rows in 5 classes: 20% of 2 rows rounds to 0 in every class. One `error:` line
    naming the counts and the rounding, a hint, exit 2, and no output folder."""
    data = tmp_path / "ten.jsonl"
    rows = [{"text": f"example number {i} about topic {i % 5}", "label": f"t{i % 5}"}
            for i in range(10)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    args = ["simulate", "--model", "tiny-bert", "--data", str(data), "--nodes", "2",
            "--rounds", "1", "--max-length", "16", "-o", str(out)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    error, hint = res.stderr.strip().splitlines()[-2:]
    assert error.startswith("error: ") and "10 row(s) in 5 classes, at most 2 a class" in error
    assert "rounds to 0 rows" in error
    assert hint == "hint: give each class at least 3 rows (20% of 3 rounds to one test row), " \
        "or merge classes"  # fmt: skip
    assert "Traceback" not in res.output
    assert not out.exists() or not any(out.iterdir())


def test_no_test_rows_names_dropped_copies_when_rounding_is_not_the_cause() -> None:
    train = TextDataset(tuple(f"t{i}" for i in range(10)), np.arange(10) % 2, ("a", "b"))
    err = no_test_rows("d", train)
    assert "every test row was dropped as a copy of a training row" in err.message
    assert "--no-dedupe" in err.hint


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def two_quotes_tsv() -> str:
    """60 rows; rows 4 and 11 start with an unbalanced quote mark (the audit's file)."""
    rows = [f"{chr(34) if i in (3, 10) else ''}text number {i}\t{'abc'[i % 3]}" for i in range(60)]
    return "text\tlabel\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("name", "text", "needle", "hint"),
    [
        ("two.tsv", two_quotes_tsv(), "two.tsv:5: cannot read it as csv: row 4 opens a quoted "
         "field that a quote mark on line 12 closes, followed by more text", QUOTE_HINT),
        ("open.tsv", 'text\tlabel\nok\ta\n"x y\ta\nm n\tb\n', "open.tsv:3: cannot read it as "
         "csv: row 2 opens a quoted field that is never closed", QUOTE_HINT),
        ("swallow.tsv", 'text\tlabel\nq r\ta\n"x y\ta\nm n\tb\nfoo"\tb\n', "swallow.tsv:3: "
         "cannot read it as csv: row 2's quoted field in column 1 runs over line 4, which "
         "reads as a row of its own", QUOTE_HINT),
        ("swallow.csv", 'label,text\na,q r\nb,s t\na,"x y\nb,m n\nb,foo"\n', "swallow.csv:4: "
         "cannot read it as csv: row 3's quoted field in column 2 runs over line 5", QUOTE_HINT),
        ("tabs.csv", "text\tlabel\nhello a\tx\n", "the file looks tab-separated, but it is read "
         "comma-separated", "name the file .tsv"),
        ("commas.tsv", "text,label\nhello a,x\n", "the file looks comma-separated, but it is "
         "read tab-separated", "name the file .csv"),
        ("value.csv", "text,label,\nhello a,x,\nbye b,y,oops\n", "value.csv:3: cannot read it as "
         "csv: row 2 has the value 'oops' in column 3, which the header does not name",
         "name the column in the header line"),
        ("head.tsv", '"text"x\tlabel\nx\ty\n', "head.tsv:1: cannot read the header line as "
         "csv", "separate the column names"),
        ("gap.csv", "text,,label\nhello a,,x\n", "gap.csv:1: column 2 of the header has no name",
         "name every column"),
    ],
)  # fmt: skip
def test_a_file_that_would_be_misread_is_refused_naming_the_line(
    tmp_path: Path, name: str, text: str, needle: str, hint: str
) -> None:
    with pytest.raises(DataError) as caught:
        load_file(write(tmp_path, name, text))
    assert needle in caught.value.message
    assert caught.value.hint.startswith(hint)


@pytest.mark.parametrize(
    ("name", "text", "texts"),
    [  # Excel: a trailing comma on every line (or some), a sep= first line, a BOM before it
        ("trail.csv", "text,label,\nhello a,x,\nbye b,y\n", ["hello a", "bye b"]),
        ("trail2.csv", "text,label,,\nhello a,x,,\nbye b,y,,\n", ["hello a", "bye b"]),
        ("semi.csv", "sep=;\ntext;label\nhello, a;x\nbye b;y\n", ["hello, a", "bye b"]),
        # Excel where `;` is the list separator: no sep= line, a header without a comma
        ("semi2.csv", "text;label\nhello a;x\nbye b;y\n", ["hello a", "bye b"]),
        ("bom.csv", "\ufeffsep=,\r\ntext,label,\r\nhello a,x,\r\nbye b,y,\r\n",
         ["hello a", "bye b"]),
        # quoting as pandas and Excel write it, and quote marks inside a text
        ("q.tsv", 'text\tlabel\n"He said ""hi"""\tx\n5" screen\ty\n',
         ['He said "hi"', '5" screen']),
        ("multi.csv", 'text,label\n"Dear Sir,\nI write, to say\nBye",x\nhi,y\n',
         ["Dear Sir,\nI write, to say\nBye", "hi"]),
    ],
)  # fmt: skip
def test_spreadsheet_csvs_are_read_as_written(
    tmp_path: Path, name: str, text: str, texts: list[str]
) -> None:
    data = load_file(write(tmp_path, name, text))
    assert list(data.texts) == texts
    assert data.label_names == ("x", "y")


def test_a_multi_line_text_whose_line_matches_another_rows_text_is_read(
    tmp_path: Path,
) -> None:
    """A quoted e-mail signed "Thanks," beside a row whose text is "Thanks": the inner
    line matches a value of the spanning field's own column only, so it is no row."""
    email = "Hello,\n\nmy parcel has not arrived yet.\n\nThanks,\nAnna"
    body = f'text,label\nThanks,thanks\n"{email}",order_status\n'
    data = load_file(write(tmp_path, "emails.csv", body))
    assert list(data.texts) == ["Thanks", email]
    assert sorted(data.label_names) == ["order_status", "thanks"]
