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
from typing import Any

import pytest
from disk_helpers import fake_free, small_tmpfs

from declora.node import data_files
from declora.node.data_files import DataError, read_splits

_AS_NOBODY = """
import json, os, sys
from pathlib import Path
from typing import Any
from declora.node.data import load_file
from declora.node.data_files import DataError
import datasets, pyarrow  # imported as root: the interpreter's files may be root's only
try:
    os.setgid(65534)
    os.setuid(65534)
except PermissionError:  # root without CAP_SETUID (a container that dropped it)
    print(json.dumps(None))
    sys.exit(0)
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
    if json.loads(out.stdout) is None:
        pytest.skip("root here cannot switch to uid 65534 (no CAP_SETUID)")
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


def _jsonl(path: Path, rows: int) -> Path:
    path.write_text(
        "".join(json.dumps({"text": f"row {i}", "label": "a"}) + "\n" for i in range(rows))
    )
    return path


def test_a_plain_file_whose_table_would_not_fit_is_refused(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jsonl(tmp_path / "rows.jsonl", 50_000)  # 1.7 MB, a table of up to 4.5 MiB
    fake_free(monkeypatch, tmp_folder, 2)
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
    fake_free(monkeypatch, tmp_folder, 8)
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


def _ipc(path: Path, table: Any, compression: str | None, file_format: bool) -> Path:
    import pyarrow as pa

    options = pa.ipc.IpcWriteOptions(compression=compression)
    new = pa.ipc.new_file if file_format else pa.ipc.new_stream
    with pa.OSFile(str(path), "wb") as sink, new(sink, table.schema, options=options) as out:
        out.write_table(table, max_chunksize=1500)
    return path


_SIZED = """
import sys
from pathlib import Path
from typing import Any
import pyarrow as pa
from declora.node.data_files import table_bound
bound = table_bound(Path(sys.argv[1]), 0)
print(bound, pa.default_memory_pool().max_memory())
"""


@pytest.mark.parametrize("file_format", [False, True])
def test_a_compressed_arrow_file_is_sized_without_decoding_it(
    tmp_path: Path, file_format: bool
) -> None:
    """64 MiB of one repeated text, zstd-compressed into an .arrow file of a few KiB:
    sized from its batches' metadata, so Arrow's memory pool never holds a batch
    (before: each batch decoded, 16 MiB at once here; 1 GiB for 65,536 rows)."""
    import pyarrow as pa

    table = pa.table({"text": ["x" * (16 << 10)] * 4096, "label": ["a"] * 4096})
    data = _ipc(tmp_path / "rows.arrow", table, "zstd", file_format)
    assert data.stat().st_size < 1 << 20
    out = subprocess.run(
        [sys.executable, "-c", _SIZED, str(data)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    bound, peak = map(int, out.stdout.split())
    assert bound >= table.nbytes
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
@pytest.mark.parametrize("file_format", [False, True])
@pytest.mark.parametrize("dictionary", [False, True])
def test_the_arrow_bound_holds_the_table_datasets_writes(
    tmp_path: Path, compression: str | None, file_format: bool, dictionary: bool
) -> None:
    """Measured: the .arrow files `datasets` writes in its cache folder for an .arrow
    file stay within `table_bound`, a dictionary-encoded text column (which `datasets`
    decodes: before, only its dictionary and indices were counted) included."""
    import datasets
    import pyarrow as pa

    texts = pa.array([f"text {i % 3} " * 300 for i in range(6000)])
    table = pa.table(
        {"text": texts.dictionary_encode() if dictionary else texts, "n": list(range(6000))}
    )
    data = _ipc(tmp_path / "rows.arrow", table, compression, file_format)
    bound = data_files.table_bound(data, 0)
    cache = tmp_path / "cache"
    datasets.load_dataset("arrow", data_files=str(data), split="train", cache_dir=str(cache))
    written = sum(f.stat().st_size for f in cache.rglob("*.arrow"))
    assert 10 << 20 < written <= bound, (written, bound)


def _rows(make: Any, n: int) -> str:
    return "".join(json.dumps(make(i)) + "\n" for i in range(n))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("keys.jsonl", _rows(lambda i: {"text": "t", f"k{i}": 1}, 1500)),
        ("nested.jsonl", _rows(lambda i: {"text": "t", "m": {f"k{i}": 1}}, 1500)),
        ("list.jsonl", _rows(lambda i: {"text": "t", "m": [{f"k{i}": 1}, {}]}, 1500)),
        (
            "null_struct.jsonl",
            _rows(lambda i: {"m": {f"k{j}": j for j in range(30)} if i == 0 else None}, 20_000),
        ),
        ("punct.jsonl", '{"a":[[1],[2],[3]],"b":{"c":1,"d":[0,0]}}\n' * 20_000),
        ("text.jsonl", _rows(lambda i: {"text": f"review number {i}", "label": "pos"}, 20_000)),
        ("rows.json", json.dumps([{"text": f"row {i}", "label": i % 3} for i in range(20_000)])),
        ("text.csv", "text,label\n" + "".join(f"review number {i},pos\n" for i in range(20_000))),
        ("blank.csv", "a,b,c\n" + ",,\n" * 20_000),
        pytest.param(  # 15 s; wide.jsonl checks the same per-column cost in make test
            "wide.csv",
            ",".join(f"c{i}" for i in range(20_000)) + "\n" + "1," * 19_999 + "1\n",
            marks=pytest.mark.slow,
        ),
        ("wide.jsonl", json.dumps({f"c{i}": 1 for i in range(20_000)}) + "\n"),
    ],
)
def test_the_json_and_csv_bound_holds_the_table_datasets_writes(
    tmp_path: Path, name: str, text: str
) -> None:
    """Measured: `table_bound` holds the .arrow files `datasets` writes for rows whose
    keys differ (before: 8 bytes a delimiter bounded keys.jsonl's table of rows times
    keys, about 18 MB, at 1.1 MiB), a mapping null in all rows but one (under-counted
    too), a row of 20,000 columns (each costs the table's schema and batches more than
    its value: 3.4 MB for a 170 KB CSV file, bounded at 1.5 MB before), plain files."""
    import datasets

    from declora.node import data_csv, data_text

    path = tmp_path / name
    path.write_text(text)
    bound = data_files.table_bound(path, data_text.check_utf8(path))
    options = data_csv.csv_options(datasets, path) if name.endswith(".csv") else {}
    cache = tmp_path / "cache"
    builder = data_files.BUILDERS[path.suffix]
    datasets.load_dataset(
        builder, data_files=str(path), split="train", cache_dir=str(cache), **options
    )
    written = sum(f.stat().st_size for f in cache.rglob("*.arrow"))
    assert written <= bound, (written, bound)


def test_rows_of_keys_of_their_own_are_refused_before_their_table_fills_the_disk(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 37 KB file of 1,500 rows that each name a key of their own is a table of
    1,500 x 1,501 values (about 18 MB; bounded at 20.4 MiB): refused with 16 MiB free
    (before: bounded at 1.1 MiB and read, filling the disk)."""
    data = tmp_path / "rows.jsonl"
    data.write_text(_rows(lambda i: {"text": "t", f"k{i}": 1}, 1500))
    fake_free(monkeypatch, tmp_folder, 16)
    with pytest.raises(DataError) as err:
        read_splits(data)
    assert "as the table datasets copies them into" in err.value.message
