"""`predict --label-column` means what it means for `start`: a column the input must
have, never the text column; left out, "label" is read where there is one."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from declora.cli.app import app
from declora.cli.predict import read_rows
from declora.node.data_files import DataError


def _adapter(tmp_path: Path) -> Path:
    """A folder `adapter_folder` takes: the input is refused before a model loads."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def _predict(tmp_path: Path, data: Path, *more: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["predict", str(_adapter(tmp_path)), "-i", str(data), *more])
    return res.exit_code, res.stderr


def test_a_named_label_column_the_file_lacks_is_refused(tmp_path: Path) -> None:
    """A typo in --label-column was silently no accuracy line; `start` refuses it."""
    data = tmp_path / "test.csv"
    data.write_text("text,category\ngood,pos\nbad,neg\n")
    code, err = _predict(tmp_path, data, "--label-column", "categroy")
    assert code == 2, err
    assert "no label column 'categroy'; columns are ['category', 'text']" in err
    assert "Traceback" not in err


def test_a_named_label_column_no_json_line_has_is_refused() -> None:
    stdin = io.StringIO('{"text": "good", "category": "pos"}\n{"text": "bad"}\n')
    with pytest.raises(DataError, match="no label column 'categroy' in any line"):
        read_rows("-", "text", stdin, "categroy")
    stdin = io.StringIO('{"text": "good", "category": "pos"}\n{"text": "bad"}\n')
    assert read_rows("-", "text", stdin, "category") == (["good", "bad"], ["pos", None])


def test_the_text_column_is_no_label_column(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    data.write_text(json.dumps({"text": "good", "label": "pos"}) + "\n")
    code, err = _predict(tmp_path, data, "--label-column", "text")
    assert code == 2, err
    assert "--text-column and --label-column both name the column 'text'" in err


def test_lines_have_no_label_column(tmp_path: Path) -> None:
    data = tmp_path / "test.txt"
    data.write_text("good\nbad\n")
    code, err = _predict(tmp_path, data, "--label-column", "label")
    assert code == 2, err
    assert "--label-column 'label' names a column, but lines have none" in err


def test_left_out_label_is_read_where_there_is_one(tmp_path: Path) -> None:
    """The default is unchanged: "label" read when present, no error when absent."""
    with_label = tmp_path / "a.csv"
    with_label.write_text("text,label\ngood,pos\n")
    without = tmp_path / "b.csv"
    without.write_text("text,category\ngood,pos\n")
    assert read_rows(str(with_label), "text", None) == (["good"], ["pos"])
    assert read_rows(str(without), "text", None) == (["good"], [None])
    assert read_rows("-", "text", io.StringIO("good\n")) == (["good"], [None])
