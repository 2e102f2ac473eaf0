"""How much disk the Arrow table `datasets` copies a data file's rows into may take
(`table_bound`), and the refusal of a file whose table, or decompressed copy, would
leave the temporary folder's disk less than `KEEP_FREE` free (`check_table_room`)."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


# bytes that end a value in a JSON or CSV/TSV file (each ends one value at most)
DELIMITERS = (b",", b"\n", b"}", b"]", b"\t", b";", b"|")
_TABLE_OVERHEAD = 1 << 20  # the table file's schema and metadata
# what one value costs a table beyond its text: a JSON one at most 8 bytes (an int64, a
# double, an offset) and its validity bit; a CSV one, always a string, its 4-byte
# offset and its validity bit
_JSON_SLOT, _CSV_VALUE = 9, 5


def table_bound(inner: Path, delimiters: int) -> int:
    """Bytes the Arrow table `datasets` writes of plain data file `inner` (into
    its cache folder, `tempfile`'s, before it is read into memory) may take at most:
    its size, 9 a slot of its table and its JSON texts' escapes (`json_slots`) for
    JSON, its size and 5 a
    delimiter (`delimiters`, `check_utf8`'s count: each ends one value at most) for
    CSV/TSV, with what each column costs the schema and batches (`_columns_cost`);
    its columns decoded for parquet and arrow (a file of one repeated value
    decodes to many times its size; parquet's texts are sized through their
    dictionary, never decoded: `_parquet_decoded`; arrow's from its batches' metadata:
    `ipc_decoded`), or what it would be read as when it cannot be (`datasets` says
    why)."""
    size = inner.stat().st_size
    suffix = inner.suffix.lower()
    if suffix in (".csv", ".tsv"):
        columns, rows = _csv_shape(inner)
        extra = _CSV_VALUE * (delimiters + 1) + _columns_cost(columns, rows, size)
        return size + extra + _TABLE_OVERHEAD
    if suffix not in (".parquet", ".arrow"):  # JSON
        shape = json_slots(inner)
        if shape is None:
            return size + 8 * delimiters + _TABLE_OVERHEAD
        slots, columns, rows, escapes = shape
        extra = _JSON_SLOT * slots + escapes + _columns_cost(columns, rows, size)
        return size + extra + _TABLE_OVERHEAD
    import pyarrow as pa

    try:
        decoded = _parquet_decoded(inner) if suffix == ".parquet" else ipc_decoded(inner)
    except (pa.ArrowException, OSError, ValueError, IndexError, struct.error):
        decoded = 0
    return max(size, decoded) + _TABLE_OVERHEAD


class _Column:
    """One column of a JSON file's table (a nested one: a mapping's key, a list's
    elements): its own columns, how many values it was given (not null), and for a
    list's elements column how many values it holds, over every row."""

    def __init__(self) -> None:
        self.keys: dict[str, _Column] = {}
        self.elements: _Column | None = None
        self.count = 0
        self.given = 0
        self.key_set: frozenset[str] | None = None
        self.kinds: set[type] = set()
        self.escapes = 0  # bytes the values' texts grow by written as JSON (`_escapes`)
        self.as_text = False  # mappings of other keys, or mixed kinds: JSON text


def _columns_cost(columns: int, rows: int, size: int) -> int:
    """What `columns` cost a table file besides their values: 256 bytes each in its
    schema and in each record batch (their buffers' places and padding), a batch
    every 1,000 rows (`datasets`' writer batch) and every MiB read (a reader block)."""
    return 256 * columns * (2 + rows // 1000 + (size >> 20))


def _csv_shape(inner: Path) -> tuple[int, int]:
    """(columns, rows) of CSV/TSV file `inner`, at most: a field a separator of any kind
    in its header (the line after an Excel `sep=` line, and those a quoted name goes on
    to, its first MiB), a row a line."""
    with inner.open("rb") as fh:
        head = fh.readline()
        if head.lstrip(b"\xef\xbb\xbf").lower().startswith(b"sep="):
            head = fh.readline()
        while head.count(b'"') % 2 and len(head) < 1 << 20 and (line := fh.readline(1 << 20)):
            head += line
        fh.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return 1 + sum(head.count(d) for d in (b",", b"\t", b";", b"|")), lines + 1


def json_slots(inner: Path) -> tuple[int, int, int, int] | None:
    """How many slots (values, nulls included) the Arrow table of JSON file `inner`
    holds, at most, as `datasets` reads it: every row has a slot in every column any row
    has (a file of rows that each name a key of their own is a table of rows times
    keys: 3,000 rows of 25 bytes, a 74 MB table), a nested mapping a slot in each of its
    keys' columns, and a list's elements likewise; a column whose mappings differ in
    keys, or that mixes kinds of values (mappings, lists, texts, booleans, numbers), is
    stored as JSON text:
    a slot, and one a value inside for its text's spacing. Returned with the table's
    columns (nested ones too), rows, and the bytes the escapes of its JSON text add
    (`_escapes`: a non-ASCII character up to 3 times its UTF-8 bytes); None when
    it is not JSON lines nor one JSON array of rows (`datasets` refuses it); a
    `DataError` when a value nests past Python's recursion limit, which pyarrow's
    reader, given it, can crash on (a segmentation fault at some thousands of levels)."""
    root, rows = _Column(), 0
    try:
        with inner.open(encoding="utf-8-sig") as fh:
            first = next((line for line in fh if line.strip()), "")
            fh.seek(0)
            array = first.lstrip().startswith("[")
            lines = (json.loads(line) for line in fh if line.strip())
            values: Iterable[Any] = json.load(fh) if array else lines
            for row in values:  # an array of texts is read as a "text" column
                _add(root, row if isinstance(row, dict) else {"text": row})
                rows += 1
    except ValueError:
        return None
    except RecursionError:  # pyarrow's reader would crash the process on it (C stack)
        raise DataError(
            f"{inner}: a value nests JSON arrays or objects too deeply to be read (hundreds "
            "of levels inside each other)",
            "flatten that value, or store it as a JSON text in a string",
        ) from None
    slots = sum(_slots(column, rows) for column in root.keys.values())
    return slots, _columns(root) - 1, rows, _text_escapes(root)


def _add(column: _Column, value: Any) -> None:
    """Record `value` in `column`: a mapping's keys, a list's elements, its kind."""
    if value is None:
        return
    column.given += 1
    kind = type(value)
    column.kinds.add(float if kind is int else kind)  # ints and floats are doubles
    column.as_text |= len(column.kinds) > 1
    if isinstance(value, str):
        column.escapes += _escapes(value)
    if isinstance(value, dict):
        column.escapes += sum(_escapes(key) for key in value)
        keys = frozenset(value)
        column.key_set = keys if column.key_set is None else column.key_set
        column.as_text |= keys != column.key_set or not keys
        for key, inner in value.items():
            _add(column.keys.setdefault(key, _Column()), inner)
    elif isinstance(value, list):
        column.elements = column.elements or _Column()
        column.elements.count += len(value)
        for inner in value:
            _add(column.elements, inner)


def _slots(column: _Column, count: int) -> int:
    """Slots of `column`, `count` values long, and of every column inside it."""
    if column.as_text:
        return count + _sum(column, "given")
    total = count + sum(_slots(inner, count) for inner in column.keys.values())
    if column.elements is not None:
        total += _slots(column.elements, column.elements.count)
    return total


def _columns(column: _Column) -> int:
    """`column` and the columns inside it (one, stored as JSON text)."""
    if column.as_text:
        return 1
    inside = [*column.keys.values(), *([column.elements] if column.elements else [])]
    return 1 + sum(_columns(inner) for inner in inside)


def _escapes(text: str) -> int:
    """Bytes `text` grows by written as JSON text (`datasets` writes it with pandas'
    ujson): 1 a "/" (written \\/), and as \\uXXXX each non-ASCII character: 4 bytes
    more than a 2-byte one, 3 than a 3-byte one, 8 than a 4-byte one (two escapes), so
    at most 4 a byte past each character's first."""
    grows = text.count("/")
    if not text.isascii():
        grows += 4 * (len(text.encode()) - len(text))
    return grows


def _text_escapes(column: _Column) -> int:
    """The `escapes` of the columns stored as JSON text in and under `column`."""
    if column.as_text:
        return _sum(column, "escapes")
    inside = [*column.keys.values(), *([column.elements] if column.elements else [])]
    return sum(_text_escapes(inner) for inner in inside)


def _sum(column: _Column, count: str) -> int:
    """`count` ("given": values given, "escapes") of `column` and every column inside it."""
    inside = [*column.keys.values(), *([column.elements] if column.elements else [])]
    return int(getattr(column, count)) + sum(_sum(inner, count) for inner in inside)


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
