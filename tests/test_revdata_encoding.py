"""The refusal of text that is not UTF-8: a UTF-16 .txt (Windows Notepad's "Unicode")
given to predict, generate or a label file is named as UTF-16 with the iconv line for
it (it was told to convert from CP1252, which makes it garbage that then reads as
text); the column of a bad byte counts characters, as editors do, not bytes. Guards:
valid UTF-8 whose multibyte character straddles the checker's 1 MiB read, or that
starts with a UTF-8 BOM, is read."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from declora.cli.generate import read_prompts
from declora.cli.predict import text_lines
from declora.node.data import load_file, read_label_file
from declora.node.data_files import DataError


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_text_file_is_named_as_such(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "in.txt"
    path.write_text("good\nnews\n", encoding=encoding)
    found = "UTF-32" if "32" in encoding else "UTF-16"
    reads = [
        lambda: text_lines(str(path), io.StringIO()),
        lambda: text_lines("-", io.TextIOWrapper(io.BytesIO(path.read_bytes()))),
        lambda: read_label_file(path),
        lambda: read_prompts(None, str(path), io.StringIO()),
    ]
    for read in reads:
        with pytest.raises(DataError) as info:
            read()
        assert info.value.message.endswith(f"not UTF-8 (looks like {found})")
        assert f"iconv -f {found} -t UTF-8" in (info.value.hint or "")


def test_the_column_counts_characters(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nnaïve,a\n".encode() + "café ".encode() + b"\xe9t\xe9,b\n")
    with pytest.raises(DataError, match=r"\(line 3, column 6: byte 0xe9\)"):
        load_file(path)
    stdin = io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbf\xc3\xa9\xe9\n"))  # BOM, then é
    with pytest.raises(DataError, match=r"\(line 1, column 2: byte 0xe9\)"):
        text_lines("-", stdin)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_valid_utf8_across_the_read_boundary_is_read(tmp_path: Path, bom: bytes) -> None:
    head = bom + b"text,label\n"
    pad = (1 << 20) - len(head) - 1  # "é" (2 bytes) starts on the read's last byte
    body = head + b"a" * pad + "é,x\n".encode() + "東京,y\n".encode()
    assert body[(1 << 20) - 1 : (1 << 20) + 1] == "é".encode()
    path = tmp_path / "d.csv"
    path.write_bytes(body)
    data = load_file(path)
    assert data.texts[-1] == "東京" and data.texts[0].endswith("aé")
