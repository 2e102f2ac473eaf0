"""revlast2: user data files as they come damaged or odd, each refused with one
`DataError` line and a hint, nothing left behind."""

from __future__ import annotations

import errno
import gzip
import json
import os
from pathlib import Path

import pytest

from declora.node.data_files import DataError, read_splits

ROWS = "".join(json.dumps({"text": f"row {i} " + "x" * 50}) + "\n" for i in range(2000))


def test_a_gz_file_damaged_inside_is_a_data_error(tmp_path: Path, tmp_folder: Path) -> None:
    """zlib's own error (a flipped byte in the deflate stream) was no DataError: a
    traceback ('Error -3 while decompressing data')."""
    data = bytearray(gzip.compress(ROWS.encode()))
    for i in range(40, len(data) - 20, 7):
        data[i] ^= 0x55
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert err.value.message.startswith(f"{path}: cannot decompress it as .gz: ")
    assert "\n" not in err.value.message
    assert "is it really a .gz file?" in (err.value.hint or "")
    assert list(tmp_folder.iterdir()) == []  # its partial copy removed


def test_a_full_temporary_disk_while_reading_is_named(
    tmp_path: Path, tmp_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`datasets` copies the rows into a table in the temporary folder; a disk that
    fills then (40 MiB of rows gzipped to 40 KiB on a 64 MiB tmpfs: the decompressed
    file fit, its table did not) was 'cannot read it as json: [Errno 28] ...' with the
    hint 'write one JSON object per line'. The chain is the one datasets 2.x raised."""
    import datasets
    from datasets.exceptions import DatasetGenerationError

    def full_disk(*_args: object, **_kwargs: object) -> None:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise DatasetGenerationError("An error occurred while generating the dataset") from exc

    monkeypatch.setattr(datasets, "load_dataset", full_disk)
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(ROWS.encode()))
    with pytest.raises(DataError) as err:
        read_splits(path)
    assert err.value.message == (
        f"{path}: no room to read it in the temporary folder {tmp_folder}: No space left on device"
    )
    assert "TMPDIR" in (err.value.hint or "")
    assert list(tmp_folder.iterdir()) == []
