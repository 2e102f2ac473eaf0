"""A --data path that cannot be read (permission denied) is one `DataError` naming it;
an uncompressed data file's Arrow table is bounded by the temporary folder's free space
before `datasets` writes it, as a compressed file's is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from disk_helpers import small_tmpfs

from declora.node import data_files
from declora.node.data_files import DataError, read_splits

_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from declora.node.data import load_file
from declora.node.data_files import DataError
import datasets, pyarrow  # imported as root: the interpreter's files may be root's only
os.setgid(65534)
os.setuid(65534)
try:
    load_file(Path(sys.argv[1]))
except DataError as exc:
    print(json.dumps([exc.message, exc.hint]))
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        pytest.skip("reading as another user needs root")
    folder = Path(tempfile.mkdtemp(prefix="dataleft2-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for inner in folder.rglob("*"):
            inner.chmod(0o755)
        shutil.rmtree(folder)


def _as_nobody(path: Path) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    message, hint = json.loads(out.stdout)
    return message, hint


def _row() -> str:
    return json.dumps({"text": "a text", "label": "a"}) + "\n"


@pytest.mark.parametrize("kind", ["folder", "subfolder", "file", "saved"])
def test_data_that_cannot_be_read_is_named_with_a_hint(shared: Path, kind: str) -> None:
    """Permission denied listing a folder, a folder inside one, opening a file, or a
    save_to_disk folder's file: a `DataError` naming it (no PermissionError out)."""
    if kind == "saved":
        import datasets

        data = shared / "saved"
        datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}).save_to_disk(data)
        blocked = data / "state.json"
    else:
        data = shared / "data"
        data.mkdir()
        (data / "rows.jsonl").write_text(_row())
        if kind == "subfolder":
            data = data / "sub"
            data.mkdir()
        elif kind == "file":
            data = data / "rows.jsonl"
        blocked = data
    blocked.chmod(0)
    message, hint = _as_nobody(data)
    assert message.startswith(f"{data}: cannot read"), message
    assert message.endswith("permission denied") and str(blocked) in message
    assert "chmod" in hint


@pytest.fixture
def tmp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _free(monkeypatch: pytest.MonkeyPatch, folder: Path, mib: float) -> None:
    usage = shutil.disk_usage(folder)._replace(free=data_files.KEEP_FREE + int(mib * (1 << 20)))
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage)


def _jsonl(path: Path, rows: int) -> Path:
    path.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": "a"}) + "\n" for i in range(rows))
    )
    return path


def test_a_plain_file_whose_table_would_not_fit_is_refused(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl(tmp_path / "rows.jsonl", 50_000)  # 1.7 MB, a table of up to 4.5 MiB
    _free(monkeypatch, tmp_folder, 2)
    with pytest.raises(DataError) as err:
        read_splits(data)
    message = err.value.message
    assert message.startswith(f"{data}: read, its rows take up to ")
    assert f"more than the temporary folder {tmp_folder} has free (2.0 MiB" in message
    assert "TMPDIR" in (err.value.hint or "")
    assert list(tmp_folder.iterdir()) == []


def test_a_plain_file_whose_table_fits_is_read(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl(tmp_path / "rows.jsonl", 50_000)
    _free(monkeypatch, tmp_folder, 8)
    [(_, rows)] = read_splits(data)
    assert len(rows) == 50_000


def test_a_plain_file_on_a_real_small_disk_is_refused_before_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl(tmp_path / "rows.jsonl", 4_000)  # 140 KB: its table cannot fit in 256 KiB
    with small_tmpfs(tmp_path / "small", "256k") as small:
        monkeypatch.setattr(tempfile, "tempdir", str(small))
        with pytest.raises(DataError) as err:
            read_splits(data)
        assert "as the table datasets copies them into, more than" in err.value.message
        assert list(small.iterdir()) == []
