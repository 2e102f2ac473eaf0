"""Data files as users name and pack them: a compressed file that inflates past its
temporary folder's free space is refused before the disk fills (the folder removed, on a
Ctrl-C too); a full disk is named as such; a name holding a glob character is read as
that one file; an archive gets a hint to extract it."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from declora.node import data_files
from declora.node.data_files import DataError, read_splits

ROWS = b"".join(json.dumps({"text": f"row {i}"}).encode() + b"\n" for i in range(5))
KEEP_FREE = getattr(data_files, "KEEP_FREE", 1 << 30)


def bomb(path: Path) -> Path:
    """4 MiB of one repeated row, gzipped to a few KiB."""
    path.write_bytes(gzip.compress(b'{"text": "a"}\n' * (4 << 18), 9))
    assert path.stat().st_size < 64 << 10
    return path


def test_a_file_that_inflates_past_the_free_space_is_refused(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = KEEP_FREE + (1 << 20)  # 1 MiB to spare past what must stay free
    usage = shutil.disk_usage(tmp_folder)._replace(free=free)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage)
    with pytest.raises(DataError) as err:
        read_splits(bomb(tmp_path / "bomb.jsonl.gz"))
    assert "decompressed, it is over 2.0 MiB" in err.value.message
    assert "TMPDIR" in (err.value.hint or "")
    assert list(tmp_folder.iterdir()) == []  # its partial copy removed


def test_a_full_disk_is_named_not_the_file(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = tempfile.mkdtemp

    def full(*args: Any, **kwargs: Any) -> str:  # its decompressed file writes to /dev/full
        folder = made(*args, **kwargs)
        (Path(folder) / "data.jsonl").symlink_to("/dev/full")
        (Path(folder) / "bomb.jsonl").symlink_to("/dev/full")
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(DataError) as err:
        read_splits(bomb(tmp_path / "bomb.jsonl.gz"))
    assert "no room to decompress it" in err.value.message, err.value.message
    assert list(tmp_folder.iterdir()) == []


def test_a_ctrl_c_while_decompressing_removes_the_copy(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted(gzip.GzipFile):
        reads = 0

        def read(self, size: int = -1) -> bytes:
            Interrupted.reads += 1
            if Interrupted.reads > 2:
                raise KeyboardInterrupt
            return super().read(size)

    monkeypatch.setattr(gzip, "open", lambda path, mode: Interrupted(path, mode))
    with pytest.raises(KeyboardInterrupt):
        read_splits(bomb(tmp_path / "bomb.jsonl.gz"))
    assert list(tmp_folder.iterdir()) == []  # a guard: TemporaryDirectory's exit


@pytest.mark.parametrize("name", ["rows[1].jsonl", "rows[1].jsonl.gz", "rows?.jsonl"])
def test_a_name_with_a_glob_character_is_that_one_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "rows1.jsonl").write_bytes(ROWS * 2)  # what rows[1] matches as a glob
    (tmp_path / "rowsX.jsonl").write_bytes(ROWS * 3)  # what rows? matches
    path = tmp_path / name
    path.write_bytes(gzip.compress(ROWS) if name.endswith(".gz") else ROWS)
    [(_, rows)] = read_splits(path)
    assert list(rows["text"]) == [f"row {i}" for i in range(5)]


def archive(path: Path) -> Path:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.jsonl", ROWS)
    else:
        with tarfile.open(path, "w:gz") as t:
            t.add(__file__, "data.jsonl")
    return path


@pytest.mark.parametrize(
    ("name", "kind"), [("data.tar.gz", ".tar.gz"), ("data.zip", ".zip"), ("d.jsonl.zip", ".zip")]
)
def test_an_archive_is_refused_with_a_hint_to_extract_it(
    tmp_path: Path, name: str, kind: str
) -> None:
    with pytest.raises(DataError) as err:
        read_splits(archive(tmp_path / name))
    assert err.value.message.endswith(f"unsupported data file type {kind!r}")
    assert "extract it" in (err.value.hint or "")


def test_a_gz_file_without_its_inner_type_is_told_to_name_it(tmp_path: Path) -> None:
    path = tmp_path / "data.gz"
    path.write_bytes(gzip.compress(ROWS))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert "data.jsonl.gz" in (err.value.hint or "")


def test_a_compressed_text_file_is_told_to_be_decompressed(tmp_path: Path) -> None:
    path = tmp_path / "texts.txt.gz"
    path.write_bytes(gzip.compress(b"one text\nanother\n"))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert "decompress it first: a .txt file is no data file" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("prompts.tar.gz", "extract it"),
        ("prompts.zip", "extract it"),
        ("prompts.txt.gz", "decompress it first"),
    ],
)
def test_generate_input_archives_get_the_data_files_hint(
    tmp_path: Path, name: str, hint: str
) -> None:
    """They were read as lines of text: 'not UTF-8 ... iconv -f CP1252' (a .zip:
    'looks like UTF-32')."""
    from declora.cli.generate import read_prompts

    path = tmp_path / name
    if name.endswith(".txt.gz"):
        path.write_bytes(gzip.compress(b"Capital of France?\n"))
    else:
        archive(path)
    with pytest.raises(DataError) as err:
        read_prompts(None, str(path), io.StringIO())
    assert hint in (err.value.hint or ""), err.value


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_chinese_text_in_utf16_without_a_bom_is_named_utf16(tmp_path: Path, encoding: str) -> None:
    """Under a tenth of its bytes are NULs (the ASCII characters' other byte), so it was
    refused as 'not UTF-8 text' with the hint for Latin-1 files (iconv -f CP1252)."""
    texts = [
        "".join(chr(0x4E00 + (i * 7919 + k * 104729) % 0x5000) for k in range(60))
        for i in range(20)
    ]
    path = tmp_path / "cjk.jsonl"
    rows = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    path.write_bytes(rows.encode(encoding))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert err.value.message.endswith("not UTF-8 (looks like UTF-16)")


def test_utf8_text_with_stray_nuls_is_read(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    rows = [f"row {'x' * i}\x00 with a NUL,a" for i in range(12)]  # at even and odd offsets
    path.write_bytes(("text,label\n" + "\n".join(rows) + "\n").encode())
    [(_, ds)] = read_splits(path)
    assert len(ds) == 12 and ds["text"][0] == "row \x00 with a NUL"  # a guard


def test_a_small_temporary_disk_keeps_a_tenth_free_not_a_gibibyte(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 512 MiB tmpfs with 400 MiB free refused every compressed file, a few rows too."""
    small = shutil.disk_usage(tmp_folder)._replace(total=512 << 20, free=400 << 20)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: small)
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(ROWS))
    [(_, rows)] = read_splits(path)
    assert len(rows) == 5
    with pytest.raises(DataError) as err:  # yet 4 MiB past its last 10 MiB is refused
        monkeypatch.setattr(shutil, "disk_usage", lambda _p: small._replace(free=54 << 20))
        read_splits(bomb(tmp_path / "bomb.jsonl.gz"))
    assert "keeping 51.2 MiB free" in err.value.message
