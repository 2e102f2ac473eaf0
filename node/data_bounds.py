"""How much disk the Arrow table `datasets` copies a data file's rows into may take
(`table_bound`), and the refusal of a file whose table, or decompressed copy, would
leave the temporary folder's disk less than `KEEP_FREE` free (`check_table_room`)."""

from __future__ import annotations

import shutil
import struct
import tempfile
from pathlib import Path

from declora.node.data_error import DataError
from declora.node.data_ipc import ipc_decoded

# free space a decompressed data file must leave on its temporary folder's disk (at most
# a tenth of that disk: a small tmpfs), so a small file that inflates past the rest (a
# "zip bomb") is refused, not left to fill the disk
KEEP_FREE = 1 << 30
TMP_HINT = (
    "decompress it onto a disk with room and pass that file, or set TMPDIR to a folder on "
    "such a disk"
)
TABLE_HINT = "set TMPDIR to a folder on a disk with room, or free space in the temporary folder"


def disk_room(folder: Path) -> tuple[int, int]:
    """(bytes that may still be written to `folder`'s disk, bytes kept free there)."""
    disk = shutil.disk_usage(folder)
    keep = min(KEEP_FREE, disk.total // 10)
    return disk.free - keep, keep


# bytes that end a value in a JSON or CSV/TSV file: each value `datasets` reads costs
# its Arrow table at most its text's bytes and 8 more (an offset, an int64 or a double)
DELIMITERS = (b",", b"\n", b"}", b"]", b"\t", b";", b"|")
_TABLE_OVERHEAD = 1 << 20  # the table file's schema and metadata


def table_bound(inner: Path, cells: int) -> int:
    """Bytes the Arrow table `datasets` writes of plain data file `inner` (into
    its cache folder, `tempfile`'s, before it is read into memory) may take at most:
    its size and 8 a delimiter (`cells`, `check_utf8`'s count) for JSON and CSV/TSV;
    its columns decoded for parquet and arrow (a file of one repeated value decodes to
    many times its size; parquet's texts are sized through their dictionary, never
    decoded: `_parquet_decoded`; arrow's from its batches' metadata: `ipc_decoded`),
    or its size when it cannot be read (`datasets` says why)."""
    size = inner.stat().st_size
    suffix = inner.suffix.lower()
    if suffix not in (".parquet", ".arrow"):  # JSON or CSV/TSV
        return size + 8 * cells + _TABLE_OVERHEAD
    import pyarrow as pa

    try:
        decoded = _parquet_decoded(inner) if suffix == ".parquet" else ipc_decoded(inner)
    except (pa.ArrowException, OSError, ValueError, IndexError, struct.error):
        decoded = 0
    return max(size, decoded) + _TABLE_OVERHEAD


def _parquet_decoded(inner: Path) -> int:
    """Bytes parquet file `inner`'s columns take decoded, at most: its text and binary
    columns read as dictionaries, each value counted as its bytes and 8 (its offset),
    so what is held at once is a batch's indices and its row group's distinct values,
    never the repeated values decoded (a 17 KB file of 65,536 copies of a 16 KiB text
    held 1 GiB); other columns by their batches' size."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kinds = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_large_binary,
    )
    schema = pq.read_schema(inner)
    texts = [field.name for field in schema if any(kind(field.type) for kind in kinds)]
    total = 0
    for batch in pq.ParquetFile(inner, read_dictionary=texts).iter_batches(batch_size=1 << 12):
        for column in batch.columns:
            if pa.types.is_dictionary(column.type):
                lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
                total += (pc.sum(lengths).as_py() or 0) + 8 * len(column)
            else:
                total += column.nbytes
    return int(total)


def check_table_room(path: Path, cells: int, besides: str = "") -> None:
    """A `DataError` when the table `datasets` copies data file `path` (`cells` its
    delimiters; a decompressed copy: `besides` says so) into, in tempfile's folder
    (`table_bound`), would leave that disk less than `KEEP_FREE` free."""
    need = table_bound(path, cells)
    folder = Path(tempfile.gettempdir())
    room, keep = disk_room(folder)
    if need > room:
        raise DataError(
            f"{path}: read, its rows take up to {mib(need)} as the table datasets copies "
            f"them into{besides}, more than the temporary folder {folder} has free "
            f"({mib(max(room, 0))}, keeping {mib(keep)} free)",
            TMP_HINT if besides else TABLE_HINT,
        )


def mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"
