"""A compressed data file's free-space bound counts the Arrow table `datasets` copies
its rows into (in the same temporary folder) as well as the decompressed file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from disk_helpers import fake_free

from declora.node import data_csv, data_files, data_text
from declora.node.data_files import DataError, read_splits


def _parquet_bomb(path: Path) -> Path:
    """A few KiB of parquet, gzipped, that decodes to a 6 MB table (one repeated row)."""
    plain = path.with_suffix("")
    pq.write_table(pa.table({"text": ["same text here"] * 200_000}), plain)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert path.stat().st_size < 64 << 10
    return path


def _jsonl(path: Path, rows: int) -> Path:
    text = "".join(json.dumps({"text": f"row {i}", "label": "a"}) + "\n" for i in range(rows))
    path.write_bytes(gzip.compress(text.encode()))
    return path


def test_a_file_whose_table_copy_would_fill_the_disk_is_refused(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_free(monkeypatch, tmp_folder, 3)  # the decompressed file fits, its 6 MB table not
    with pytest.raises(DataError) as err:
        read_splits(_parquet_bomb(tmp_path / "rows.parquet.gz"))
    assert "as the table datasets copies them into" in err.value.message
    assert str(tmp_path / "rows.parquet.gz") in err.value.message
    assert "TMPDIR" in (err.value.hint or "")
    assert list(tmp_folder.iterdir()) == []


def test_json_lines_count_their_table_copy(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _jsonl(tmp_path / "rows.jsonl.gz", 40_000)  # 1.3 MB decompressed
    fake_free(monkeypatch, tmp_folder, 2)  # room for the file, not for it and its table
    with pytest.raises(DataError, match="as the table datasets copies them into"):
        read_splits(path)
    assert list(tmp_folder.iterdir()) == []


def test_a_file_with_room_for_both_is_read(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_free(monkeypatch, tmp_folder, 16)
    [(_, rows)] = read_splits(_parquet_bomb(tmp_path / "rows.parquet.gz"))
    assert len(rows) == 200_000
    [(_, rows)] = read_splits(_jsonl(tmp_path / "rows.jsonl.gz", 40_000))
    assert len(rows) == 40_000 and rows[3]["text"] == "row 3"
    assert list(tmp_folder.iterdir()) == []


@pytest.mark.parametrize(
    "name, text",
    [
        ("ints.jsonl", '{"a": [1, 2, 3, 4, 5, 6, 7, 8], "b": 1}\n' * 20_000),
        ("nulls.jsonl", '{"x": 1, "y": [0, 0, 0, 0]}\n' * 20_000),
        ("tiny.csv", "a,b,c\n" + "1,2,3\n" * 20_000),
        ("blank.csv", "a,b,c\n" + ",,\n" * 20_000),
        ("tabs.tsv", "a\tb\n" + "1\t2\n" * 20_000),
    ],
)
def test_the_bound_holds_the_table_datasets_writes(tmp_path: Path, name: str, text: str) -> None:
    """Measured: the .arrow files `datasets` writes in its cache folder for small cells
    (each costs more as a table than as text) stay within `table_bound`."""
    import datasets

    compressed = tmp_path / f"{name}.gz"
    compressed.write_bytes(gzip.compress(text.encode()))
    inner = tmp_path / f"data{Path(name).suffix}"
    data_files._decompress(compressed, inner)
    bound = data_files.table_bound(inner, data_text.check_utf8(inner))
    options = data_csv.csv_options(datasets, inner) if name.endswith(("csv", "tsv")) else {}
    builder = data_files.BUILDERS[inner.suffix]
    cache = tmp_path / "cache"
    datasets.load_dataset(
        builder, data_files=str(inner), split="train", cache_dir=str(cache), **options
    )
    written = sum(f.stat().st_size for f in cache.rglob("*.arrow"))
    assert len(text) < written <= bound, (written, bound)
