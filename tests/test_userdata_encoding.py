"""A data, label or input file saved as Latin-1 / Windows-1252 (a spreadsheet's
default) is refused naming its first line that is not UTF-8, the column and the byte,
with the iconv line that converts it: a JSONL file too, whose bad byte the reader
only met when the column was read (it was `not UTF-8 text` with no line)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from declora.cli.predict import text_lines
from declora.node.data import load_file, read_label_file
from declora.node.data_files import DataError

WHERE = "(line 3, column 4: byte 0xe9)"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("d.csv", "text,label\nok,a\nCaf\xe9,b\n"),
        ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "b", "label": "b"}\n{"t\xe9xt": 1}\n'),
    ],
)
def test_a_latin1_data_file_names_its_line(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / name
    path.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_file(path)
    assert WHERE in info.value.message and info.value.message.startswith(str(path))
    assert "iconv -f CP1252 -t UTF-8" in (info.value.hint or "")


def test_a_latin1_label_file_and_input_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes("a\nb\nCaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=WHERE.replace("(", r"\(").replace(")", r"\)")):
        read_label_file(path)
    with pytest.raises(DataError, match=r"in\.txt: not UTF-8 text \(line 3"):
        text_lines(str(path), io.StringIO())
    stdin = io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8")
    with pytest.raises(DataError, match=r"<stdin>: not UTF-8 text \(line 3, column 4"):
        text_lines("-", stdin)
