"""Compressed data files (`data.jsonl.gz`, `.csv.xz`, `.parquet.bz2`) are read as the
file inside them; an error names the compressed file and the line inside it."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
from collections.abc import Callable
from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.node.data import load_dataset
from declora.node.data_files import DataError, read_splits
from declora.node.lm_data import LmFormat

CHATS = [
    {"messages": [{"role": "user", "content": f"q {i}"}, {"role": "assistant", "content": "a"}]}
    for i in range(10)
]


def jsonl_gz(path: Path, rows: list[object]) -> Path:
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_training_reads_gzipped_json_lines(tmp_path: Path) -> None:
    path = jsonl_gz(tmp_path / "chats.jsonl.gz", list(CHATS))
    train, test = load_dataset(path, label_column=None, examples=LmFormat(), dedupe=False)
    assert len(train) + len(test) == 10 and train.chats is not None


@pytest.mark.parametrize(
    ("name", "pack", "text"),
    [("t.csv.xz", lzma.compress, "hello world"), ("t.tsv.bz2", bz2.compress, "hello, world")],
)
def test_csv_and_tsv_compressed_keep_their_separator(
    tmp_path: Path, name: str, pack: Callable[[bytes], bytes], text: str
) -> None:
    sep = "\t" if ".tsv" in name else ","
    (tmp_path / name).write_bytes(pack(f"text{sep}label\n{text}{sep}a\n".encode()))
    ((_, ds),) = read_splits(tmp_path / name)
    assert ds["text"] == [text] and ds["label"] == ["a"]


def test_a_bad_line_is_named_in_the_compressed_file(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": \n'))
    with pytest.raises(DataError) as info:
        read_splits(path)
    assert info.value.message.startswith(f"{path}:2: not valid JSON")


def test_a_file_that_is_not_compressed_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl.gz"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(DataError) as info:
        read_splits(path)
    assert info.value.message.startswith(f"{path}: cannot decompress it as .gz")
    assert "\n" not in info.value.message and info.value.hint


def test_generate_reads_a_gzipped_prompt_file(tmp_path: Path) -> None:
    rows = [{"prompt": "Capital?"}, {"messages": [{"role": "user", "content": "Hi"}]}]
    path = jsonl_gz(tmp_path / "prompts.jsonl.gz", rows)  # type: ignore[arg-type]
    got = read_prompts(None, str(path), io.StringIO())
    assert got == ["Capital?", [{"role": "user", "content": "Hi"}]]
