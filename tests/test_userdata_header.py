"""A header that names the columns with other case or spaces (` Text , Label `, as
spreadsheets write it) is never matched silently: the refusal's hint names the
header's own spelling and the option that takes it, quoted for the shell."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from declora.cli.predict import read_rows
from declora.node.data import load_file
from declora.node.data_files import DataError


def test_a_header_spelled_otherwise_is_named_in_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeff Text ,LABEL\r\nhi,a\r\nho,b\r\n".encode())
    with pytest.raises(DataError) as info:
        load_file(path)
    assert "no text column 'text'" in info.value.message
    assert "pass --text-column ' Text '" in (info.value.hint or "")
    with pytest.raises(DataError) as info:
        load_file(path, text_column=" Text ")
    assert "pass --label-column LABEL" in (info.value.hint or "")
    assert len(load_file(path, text_column=" Text ", label_column="LABEL")) == 2


def test_a_header_without_a_near_name_keeps_the_plain_hint(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("body,label\nhi,a\nho,b\n")
    with pytest.raises(DataError) as info:
        load_file(path)
    assert info.value.hint == "name the text column with --text-column"


def test_predict_stdin_jsonl_names_the_rows_own_spelling() -> None:
    stdin = io.StringIO('{"Text ": "shares fell"}\n')
    with pytest.raises(DataError) as info:
        read_rows("-", "text", stdin)[0]
    assert "pass --text-column 'Text '" in (info.value.hint or "")


def test_a_txt_data_file_is_told_how_to_write_plain_text(tmp_path: Path) -> None:
    """`--data notes.txt` (plain documents for --task lm) says what file holds them."""
    path = tmp_path / "notes.txt"
    path.write_text("Once upon a time.\n")
    with pytest.raises(DataError) as info:
        load_file(path)
    assert "unsupported data file type '.txt'" in info.value.message
    assert 'one {"text": ...} object per document' in (info.value.hint or "")


def test_predict_on_a_chat_file_points_to_generate(tmp_path: Path) -> None:
    """A chat file (a `messages` column, no `text`) given to predict: the refusal says
    the column holds conversations and points to `generate`, as README promises."""
    path = tmp_path / "chats.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DataError) as info:
        read_rows(str(path), "text", io.StringIO())[0]
    assert "its 'messages' column holds conversations" in info.value.message
    assert "declora-node generate ADAPTER --input FILE" in (info.value.hint or "")


def test_a_jsonl_line_with_a_trailing_comma_is_told_so(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"},\n{"text": "b", "label": "y"},\n')
    with pytest.raises(DataError) as info:
        load_file(path)
    assert info.value.message == f"{path}:1: not valid JSON: Extra data"
    assert "remove the comma after the object" in (info.value.hint or "")
