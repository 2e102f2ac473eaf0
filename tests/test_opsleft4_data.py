"""A folder of class folders as a notebook or a Mac leaves it: the hint's command
writes no rows of `.ipynb_checkpoints` (a notebook's copies) or `._1.txt` (macOS
metadata, not text), and a folder whose only .txt files are hidden gets no such hint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from declora.node.data_error import DataError
from declora.node.data_files import read_splits


def _hint(root: Path) -> str:
    with pytest.raises(DataError) as err:
        read_splits(root)
    return err.value.hint or ""


def test_the_command_leaves_hidden_folders_and_files_out(tmp_path: Path) -> None:
    root = tmp_path / "news"
    for label, text in (("sport", "a goal"), ("tech", "new chip")):
        (root / label).mkdir(parents=True)
        (root / label / "1.txt").write_text(text)
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "1-checkpoint.txt").write_text("a copy")
    (root / "sport" / "._1.txt").write_bytes(b"\x00\x05\x16\x07 Mac OS X")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    hint = _hint(root)
    assert ".ipynb_checkpoints, left out" in hint
    command = hint.split("pass that file: ", 1)[1].replace("python3 ", f"{sys.executable} ", 1)
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=60)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert rows == [{"text": "a goal", "label": "sport"}, {"text": "new chip", "label": "tech"}]


def test_only_hidden_txt_files_get_the_data_file_hint(tmp_path: Path) -> None:
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "1-checkpoint.txt").write_text("a copy")
    assert "class folders" not in _hint(tmp_path)
