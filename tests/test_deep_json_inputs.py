"""A JSON line nested past Python's recursion limit, given to predict or generate, is
one `DataError` naming its line ("nested too deeply"), not a RecursionError traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.cli.predict import read_rows
from declora.node.data_error import DataError

DEEP = '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"


def test_predict_names_a_line_nested_too_deeply_on_stdin() -> None:
    with pytest.raises(DataError, match=r"<stdin>:2: not valid JSON: nested too deeply"):
        read_rows("-", "text", io.StringIO('{"text": "fine"}\n' + DEEP))[0]


def test_generate_names_a_line_nested_too_deeply(tmp_path: Path) -> None:
    source = tmp_path / "prompts.jsonl"
    source.write_text('{"prompt": "fine"}\n' + DEEP.replace("text", "prompt"))
    with pytest.raises(DataError, match=r"prompts.jsonl:2: not valid JSON: nested too deeply"):
        read_prompts(None, str(source), io.StringIO())
