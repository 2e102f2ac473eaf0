"""Reading a user's data file from disk with the Hugging Face `datasets` library.

`read_splits(path)` gives (where, rows) for each split of a data file or a folder
written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, the rows a
`datasets.Dataset` held in memory (nothing is left in a cache on disk). The file types
are those of `BUILDERS` (JSON lines `.jsonl`, `.ndjson`, `.json`; CSV/TSV; parquet;
arrow), each also compressed as `COMPRESSIONS` name (`data.jsonl.gz`: decompressed into
tempfile's folder, removed after, then read as `data.jsonl`, errors naming the
compressed file; one that would leave less than `KEEP_FREE` of that disk free, a tenth
of a disk under 10 GiB, is refused, counting the Arrow table `datasets` copies its rows
into there too (`table_bound`); an archive, .zip or .tar.gz, is refused with a hint
to extract it); a name holding a glob character is read as that one file;
CSV/TSV columns are all read as strings, so texts and labels keep their spelling. Every
mistake (missing file, unsupported type, empty file, bad JSON line, a JSON or CSV file
in UTF-16/32 or holding a byte that is not UTF-8: its first such line named; no room
in the temporary folder for the table `datasets` copies the rows into) raises
`DataError` with a one-line message and a hint.
CSV/TSV files are read as spreadsheets write them (Excel's `sep=X` first line, a
trailing comma on every line); a file pandas would misread silently (a stray quote mark
swallowing rows, a `;`-separated file named .csv) is refused naming its line
(`_csv_options`). Columns, labels and train/test splits are `data.py`'s.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import errno
import gzip
import io
import json
import lzma
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from declora.node.data_ipc import ipc_decoded
from declora.node.errors import HintedError

# file suffix -> the `datasets` packaged builder that reads it
BUILDERS = {
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}
# a compressed data file's last suffix -> the stdlib module that opens it
COMPRESSIONS: dict[str, Any] = {".gz": gzip, ".bz2": bz2, ".xz": lzma}
SUPPORTED_HINT = (
    "use .jsonl, .json, .csv, .tsv, .parquet, .arrow (each may be compressed: .gz, .bz2, "
    ".xz) or a save_to_disk folder"
)


def data_suffix(path: Path) -> str:
    """The lower-case suffix that names the type of the data file at `path`: a
    compressed file's inner one (".jsonl" for `data.jsonl.gz`)."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSIONS:
        return Path(path.stem).suffix.lower()
    return suffix


class DataError(HintedError):
    """A dataset could not be read: `message`, then `hint` (`errors.HintedError`)."""


@contextmanager
def _quiet_datasets() -> Iterator[Any]:
    """Import `datasets` with its progress bars and logging silenced (restored after)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a dependency
        raise DataError(
            "reading data files needs the 'datasets' package", "pip install datasets"
        ) from exc
    from datasets.utils import logging as ds_logging

    bars_off = datasets.are_progress_bars_disabled()
    verbosity = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity(ds_logging.CRITICAL)
    try:
        yield datasets
    finally:
        ds_logging.set_verbosity(verbosity)
        if not bars_off:
            datasets.enable_progress_bars()


def _root(exc: BaseException) -> BaseException:
    """The first exception of the chain that ends in `exc`."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _diagnose_json(path: Path) -> DataError | None:
    """Find the first line of a JSON-lines file that is not a JSON object."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        row = 0
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                if lineno == 1 and line.lstrip().startswith("["):
                    return None  # a JSON array file, not JSON lines
                hint = 'each line must be one JSON object of columns, e.g. {"text": ...}'
                if exc.msg == "Extra data" and line[exc.pos :].strip() == ",":
                    hint = "remove the comma after the object: JSON Lines has no separators"
                    hint += " between lines (or write a .json file holding one [...] array)"
                return DataError(f"{path}:{lineno}: not valid JSON: {exc.msg}", hint)
            if not isinstance(value, dict):
                return DataError(
                    f"{path}:{lineno}: row {row} is a {type(value).__name__}, "
                    "not a mapping of columns",
                    'each line must be one JSON object, e.g. {"text": ..., "label": ...}',
                )
    return None


# Excel's first line naming the separator ("sep=;"), skipped by Excel itself
_SEP_LINE = re.compile(r"sep=([,;\t|])")
_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_QUOTE_HINT = (
    "quote a text that starts with a quote mark whole, its quote marks doubled "
    '("""Hamlet"" is a play"), or drop the stray quote mark'
)


def _csv_options(datasets: Any, path: Path) -> dict[str, Any]:
    """The `datasets` csv options that read `path` with every column as a string, so
    texts and labels keep their spelling.

    A `.tsv` file is tab-separated, any other comma-separated, unless its first line is
    Excel's `sep=X` (X one of , ; tab |): then X, and that line is skipped. Trailing
    header columns without a name (a comma at the end of every line) are dropped if they
    hold no value. Refused with a `DataError` naming the line: a header that is one
    column holding another separator (a `;`-separated file named .csv), a column name
    that is empty (not trailing) or repeated, and every row `_check_rows` refuses."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    skip = 0
    with _field_limit(path.stat().st_size), path.open(encoding="utf-8-sig", newline="") as fh:
        declared = _SEP_LINE.fullmatch(fh.readline().rstrip("\r\n"))
        if declared:
            sep, skip = declared.group(1), 1
        else:
            fh.seek(0)
        reader = csv.reader(fh, delimiter=sep, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise DataError(
                f"{path}:{skip + 1}: cannot read the header line as csv",
                "separate the column names by the separator, quoting a name only whole",
            ) from exc
        if not header:
            return {"sep": sep, "skiprows": skip or None}
        named = _check_header(header, path, sep, skip + 1)
        _check_rows(reader, path, header, named, sep)
    features = datasets.Features({name: datasets.Value("string") for name in header[:named]})
    return {
        "sep": sep,
        "skiprows": skip or None,
        "usecols": list(range(named)) if named < len(header) else None,
        "features": features,
        "na_filter": False,
        "index_col": False,
    }


@contextmanager
def _field_limit(size: int) -> Iterator[None]:
    """csv's field size limit (131,072 characters) raised to `size` for a block, so a
    long text does not end the check of the rows after it (pandas reads it whole)."""
    before = csv.field_size_limit()
    csv.field_size_limit(max(before, min(size, 2**31 - 1)))  # a C long on every platform
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _check_header(header: list[str], path: Path, sep: str, line: int) -> int:
    """How many leading columns of `header` are named (trailing empty names dropped);
    a `DataError` for a one-column header holding another separator, an empty name
    before a named column, or a repeated name."""
    other = next((s for s in _SEP_NAMES if s != sep and len(header) == 1 and s in header[0]), None)
    if other is not None:
        fixes = {
            "\t": "name the file .tsv (a .tsv file is read tab-separated)",
            ",": "name the file .csv (a .csv file is read comma-separated)",
        }
        raise DataError(
            f"{path}:{line}: the header {header[0]!r} is one column: the file looks "
            f"{_SEP_NAMES[other]}-separated, but it is read {_SEP_NAMES[sep]}-separated",
            fixes.get(other)
            or f"save it comma-separated (Excel: 'CSV UTF-8 (Comma delimited)'), or put the "
            f"line sep={other} above its header",
        )
    names = [name.strip() for name in header]
    named = len(names)
    while named and not names[named - 1]:
        named -= 1
    if "" in names[:named]:
        raise DataError(
            f"{path}:{line}: column {names.index('') + 1} of the header has no name",
            "name every column in the header line",
        )
    repeated = sorted({name for name in header[:named] if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: the header repeats column(s) {repeated}", "name each column once")
    return named


def _check_rows(reader: Any, path: Path, header: list[str], named: int, sep: str) -> None:
    """A `DataError` naming the first row of `reader` (after the header) that cannot be
    read as written: more fields than the header, a value in a trailing unnamed column,
    a quoted field not closed before its row's separator or end of line (`"a"b`) or
    the file's end, or a quoted field that reads as rows swallowed (a stray quote mark
    at a text's start; files of two or more columns): its first line the opening row's
    rest (its other fields), every line after it but the last the header's number of
    fields, one of them a value another row holds (`_holds_a_value`; a swallowed row of
    a rare label or none still counts), so a quoted text with one list-like line
    ("price,good") is read.
    pandas would read each of these silently otherwise (shifted columns, rows merged)."""
    width, row, start = len(header), 0, reader.line_num + 1
    seen: list[set[str]] = [set() for _ in header]
    spanning: list[tuple[int, int, int, str]] = []  # (row, first line, column, value)
    try:
        for fields in reader:
            if not fields:  # a blank line: skipped by the reader too
                start = reader.line_num + 1
                continue
            row += 1
            where = f"{path}:{start}: cannot read it as csv: row {row}"
            if len(fields) > width:
                raise DataError(
                    f"{where} has {len(fields)} fields but the header has {width}",
                    "check the quoting and the number of fields on every line; "
                    "quote a text that holds the separator",
                )
            extra = next((i for i in range(named, len(fields)) if fields[i].strip()), None)
            if extra is not None:
                raise DataError(
                    f"{where} has the value {fields[extra][:40]!r} in column {extra + 1}, "
                    "which the header does not name",
                    "name the column in the header line, or remove the value",
                )
            for i, value in enumerate(fields):
                if "\n" in value or "\r" in value:
                    spanning.append((row, start, i, value))
                elif len(value) <= 100:
                    seen[i].add(value)
            start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise file_not_utf8(path) from exc
    except csv.Error as exc:
        if "expected after" not in str(exc) and "end of data" not in str(exc):
            return  # e.g. a NUL byte: left to the reader
        raise DataError(
            f"{path}:{start}: cannot read it as csv: row {row + 1} opens a quoted field that "
            + (
                "is never closed (it runs to the end of the file)"
                if "end of data" in str(exc)
                else f"a quote mark on line {reader.line_num} closes, followed by more text "
                "instead of a separator or the line's end"
            ),
            _QUOTE_HINT,
        ) from exc
    for number, first, column, value in spanning:
        lines = value.splitlines()
        # the lines whole rows would be: all but the opening row's rest and the closing
        # row's start (none when the quote closes at a line's start)
        end = None if value.endswith(("\n", "\r")) else -1
        rows = [(n, line) for n, line in enumerate(lines[1:end], 1) if line]
        if (
            width > 1
            and rows
            and len(lines[0].split(sep)) == width - column  # the opening row's other fields
            and all(len(line.split(sep)) == width for _, line in rows)
            and any(_holds_a_value(line, sep, seen, column) for _, line in rows)
        ):
            offset, line = rows[0]
            raise DataError(
                f"{path}:{first}: cannot read it as csv: row {number}'s quoted field in "
                f"column {column + 1} runs over line {first + offset}, which reads as a "
                f"row of its own ({line[:60]!r})",
                _QUOTE_HINT,
            )


def _holds_a_value(line: str, sep: str, seen: list[set[str]], column: int) -> bool:
    """Whether `line` of a quoted field in `column`, split as a row, holds a value
    another row has in another column (the field's own column may hold a short text
    such as "Thanks," by chance)."""
    return any(p in seen[i] for i, p in enumerate(line.split(sep)) if p and i != column)


# free space a decompressed data file must leave on its temporary folder's disk (at most
# a tenth of that disk: a small tmpfs), so a small file that inflates past the rest (a
# "zip bomb") is refused, not left to fill the disk
KEEP_FREE = 1 << 30


def _read_compressed(path: Path) -> Any:
    """`_read_file` of the file compressed at `path`, decompressed into a temporary
    folder (`tempfile`'s, removed on every exit, a Ctrl-C's too) under a plain name; a
    `DataError` that names the decompressed file names `path`."""
    with tempfile.TemporaryDirectory(prefix="declora-data-") as folder:
        inner = Path(folder) / f"data{data_suffix(path)}"
        _decompress(path, inner)
        try:
            return _read_plain(inner, f" besides the {_mib(inner.stat().st_size)} decompressed")
        except DataError as exc:
            raise DataError(exc.message.replace(str(inner), str(path)), exc.hint) from exc


_TMP_HINT = (
    "decompress it onto a disk with room and pass that file, or set TMPDIR to a folder on "
    "such a disk"
)


def _room(folder: Path) -> tuple[int, int]:
    """(bytes that may still be written to `folder`'s disk, bytes kept free there)."""
    disk = shutil.disk_usage(folder)
    keep = min(KEEP_FREE, disk.total // 10)
    return disk.free - keep, keep


def _decompress(path: Path, inner: Path) -> None:
    """Write the file compressed at `path` out to `inner`. A `DataError` when it cannot
    be decompressed, or when it inflates past the free space of `inner`'s disk but
    `KEEP_FREE` (nothing more is written) or that disk is full."""
    kind = path.suffix.lower()
    room, keep = _room(inner.parent)
    where = f"the temporary folder {inner.parent.parent}"
    written = 0
    with COMPRESSIONS[kind].open(path, "rb") as src, inner.open("wb") as dst:
        while True:
            try:
                chunk = src.read(1 << 20)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise DataError(
                    f"{path}: cannot decompress it as {kind}: {exc}",
                    f"is it really a {kind} file? or decompress it first",
                ) from exc
            if not chunk:
                return
            written += len(chunk)
            if written > room:
                raise DataError(
                    f"{path}: decompressed, it is over {_mib(written)}, more than "
                    f"{where} has free ({_mib(max(room, 0))}, keeping {_mib(keep)} free)",
                    _TMP_HINT,
                )
            try:
                dst.write(chunk)
            except OSError as exc:
                raise DataError(
                    f"{path}: no room to decompress it in {where}: {exc.strerror}", _TMP_HINT
                ) from exc


# bytes that end a value in a JSON or CSV/TSV file: each value `datasets` reads costs
# its Arrow table at most its text's bytes and 8 more (an offset, an int64 or a double)
_DELIMITERS = (b",", b"\n", b"}", b"]", b"\t", b";", b"|")
_TABLE_OVERHEAD = 1 << 20  # the table file's schema and metadata


def table_bound(inner: Path, cells: int) -> int:
    """Bytes the Arrow table `datasets` writes of plain data file `inner` (into
    its cache folder, `tempfile`'s, before it is read into memory) may take at most:
    its size and 8 a delimiter (`cells`, `_check_utf8`'s count) for JSON and CSV/TSV;
    its columns decoded for parquet and arrow (a file of one repeated value decodes to
    many times its size; parquet's texts are sized through their dictionary, never
    decoded: `_parquet_decoded`; arrow's from its batches' metadata: `ipc_decoded`),
    or its size when it cannot be read (`datasets` says why)."""
    size = inner.stat().st_size
    builder = BUILDERS[inner.suffix.lower()]
    if builder in ("json", "csv"):
        return size + 8 * cells + _TABLE_OVERHEAD
    import pyarrow as pa

    try:
        decoded = _parquet_decoded(inner) if builder == "parquet" else ipc_decoded(inner)
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


def _check_table_room(path: Path, cells: int, besides: str = "") -> None:
    """A `DataError` when the table `datasets` copies data file `path` (`cells` its
    delimiters; a decompressed copy: `besides` says so) into, in tempfile's folder
    (`table_bound`), would leave that disk less than `KEEP_FREE` free."""
    need = table_bound(path, cells)
    folder = Path(tempfile.gettempdir())
    room, keep = _room(folder)
    if need > room:
        raise DataError(
            f"{path}: read, its rows take up to {_mib(need)} as the table datasets copies "
            f"them into{besides}, more than the temporary folder {folder} has free "
            f"({_mib(max(room, 0))}, keeping {_mib(keep)} free)",
            _TMP_HINT if besides else _TABLE_HINT,
        )


_TABLE_HINT = "set TMPDIR to a folder on a disk with room, or free space in the temporary folder"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


# characters `datasets` reads as a glob pattern in a data file's path
_GLOB = re.compile(r"[*?\[\]]")
# archives of files, which declora does not open: the data file inside is wanted
ARCHIVES = (".zip", ".tar", ".tgz", ".7z", ".rar")
_ARCHIVE_HINT = (
    "an archive of files: extract it (unzip, tar -xf) and pass the data file inside "
    "(one data file may be compressed: data.jsonl.gz, .bz2, .xz)"
)


def _read_file(path: Path) -> Any:
    """A `datasets.Dataset` (in memory) of the rows of one data file."""
    suffix = path.suffix.lower()
    if suffix in COMPRESSIONS and data_suffix(path) in BUILDERS:
        return _read_compressed(path)
    builder = BUILDERS.get(suffix)
    if builder is None:
        hint = SUPPORTED_HINT
        inner = data_suffix(path)
        if suffix in ARCHIVES or inner in ARCHIVES:
            hint = _ARCHIVE_HINT
        elif suffix in COMPRESSIONS and inner:  # data.txt.gz
            hint = f"decompress it first: a {inner} file is no data file; {hint}"
        elif suffix in COMPRESSIONS:
            hint = f"name it by the type of the file inside (data.jsonl{suffix}); {hint}"
        elif suffix in (".txt", ".md", ".text"):  # documents or texts, one a line or not
            hint += (
                ': for plain text, a .jsonl file of one {"text": ...} object per document '
                "(with a label column for a classifier)"
            )
        shown = inner + suffix if inner in ARCHIVES and suffix in COMPRESSIONS else suffix
        raise DataError(f"{path}: unsupported data file type {shown!r}", hint)
    return _read_plain(path)


def _read_plain(path: Path, besides: str = "") -> Any:
    """A `datasets.Dataset` (in memory) of the rows of uncompressed data file `path`,
    refused (`DataError`) when empty, not UTF-8 (JSON, CSV) or when its table would not
    fit in the temporary folder (`_check_table_room`; `besides`: its decompressed copy
    is there too)."""
    builder = BUILDERS[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: no rows (the file is empty)", "write one example per row")
    cells = _check_utf8(path) if builder in ("json", "csv") else 0
    _check_table_room(path, cells, besides)
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="declora-data-") as c:
        try:
            kwargs: dict[str, Any] = {}
            if builder == "csv":
                kwargs = _csv_options(datasets, path)
            return datasets.load_dataset(
                builder,
                data_files=_plain_name(path, Path(c)),
                split="train",
                cache_dir=c,
                keep_in_memory=True,
                **kwargs,
            )
        except DataError:
            raise
        except Exception as exc:  # every reader failure is the file's fault here
            raise _read_error(path, builder, exc) from exc


def _plain_name(path: Path, folder: Path) -> str:
    """A name of the file at `path` that `datasets` reads as that one file: `path`, or
    when it holds a glob character (`data[1].jsonl`, which `datasets` matches against
    other files' names) a link to it in `folder` under a plain one."""
    if not _GLOB.search(str(path.absolute())):
        return str(path)
    link = folder / f"data{path.suffix.lower()}"
    link.symlink_to(path.absolute())
    return str(link)


# byte-order marks of the encodings that are not UTF-8 (UTF-32's first: it starts like UTF-16's)
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _check_utf8(path: Path) -> int:
    """How many delimiters (`_DELIMITERS`) text file (JSON, CSV) `path` holds; a
    `DataError` for one written as UTF-16 or UTF-32 (`_wide`, from its first 4 KiB), or
    holding any other byte that is not UTF-8 (`file_not_utf8`: its line)."""
    with path.open("rb") as fh:
        wide = _wide(str(path), fh.read(4096))
    if wide is not None:
        raise wide
    decoder = codecs.getincrementaldecoder("utf-8")()
    cells = 0
    with path.open("rb") as fh:
        try:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                decoder.decode(chunk)
                cells += sum(chunk.count(d) for d in _DELIMITERS)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise file_not_utf8(path) from exc
    return cells


def _wide(label: str, head: bytes) -> DataError | None:
    """The `DataError` for text whose first bytes `head` are UTF-16 or UTF-32: a BOM of
    theirs, NULs as a quarter of the bytes or more (UTF-16 text of Latin letters is half
    NULs), or 8 NULs or more, a twentieth of the bytes, nine in ten of them at even or at
    odd offsets (UTF-16 Chinese or Japanese text, whose NULs are its ASCII characters'
    other byte); None when they are not (a stray NUL in UTF-8 text is read as text)."""
    found = next((name for bom, name in _BOMS if head.startswith(bom)), None)
    nuls = head.count(b"\x00")
    odd = head[1::2].count(b"\x00")
    aligned = nuls >= 8 and 20 * nuls >= len(head) and 10 * max(odd, nuls - odd) >= 9 * nuls
    if found is None and nuls and (4 * nuls >= len(head) or aligned):
        found = "UTF-32" if b"\x00\x00\x00" in head else "UTF-16"
    if found is None:
        return None
    return DataError(
        f"{label}: not UTF-8 (looks like {found})",
        "save it as UTF-8 (e.g. iconv -f " + found + " -t UTF-8, or your editor's "
        "'save with encoding')",
    )


UTF8_HINT = (
    "save it as UTF-8 (a Latin-1 or Windows file: iconv -f CP1252 -t UTF-8 FILE > NEW, "
    "or your editor's 'save with encoding')"
)


def not_utf8(label: str, lines: Iterable[bytes], hint: str = UTF8_HINT) -> DataError:
    """The `DataError` for text that is not UTF-8, reported as `label`: UTF-16 or
    UTF-32 text (`_wide`, from its first line) as such, else naming the first of its
    `lines` (bytes, as a binary file iterates) that is not, the column (in characters)
    and the byte."""
    for number, line in enumerate(lines, 1):
        wide = _wide(label, line[:4096]) if number == 1 else None
        if wide is not None:
            return wide
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            column = len(line[: exc.start].decode("utf-8-sig")) + 1
            at = f"line {number}, column {column}: byte 0x{line[exc.start]:02x}"
            return DataError(f"{label}: not UTF-8 text ({at})", hint)
    return DataError(f"{label}: not UTF-8 text", hint)


def utf8_text(label: str, raw: bytes, hint: str = UTF8_HINT) -> str:
    """`raw` decoded as UTF-8 (a BOM dropped); else the `DataError` of `_wide` (UTF-16
    or UTF-32, whose NULs would otherwise decode as text) or `not_utf8`."""
    wide = _wide(label, raw[:4096])
    if wide is not None:
        raise wide
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise not_utf8(label, io.BytesIO(raw), hint) from exc


def file_not_utf8(path: Path) -> DataError:
    """`not_utf8` for the file at `path`."""
    with path.open("rb") as fh:
        return not_utf8(str(path), fh)


def _read_error(path: Path, builder: str, exc: Exception) -> DataError:
    root = _root(exc)
    message = str(root) or type(root).__name__
    if isinstance(root, PermissionError):
        return _unreadable(path, root)
    if isinstance(root, OSError) and root.errno == errno.ENOSPC:  # datasets' table copy
        return DataError(
            f"{path}: no room to read it in the temporary folder {tempfile.gettempdir()}: "
            f"{root.strerror}",
            "set TMPDIR to a folder on a disk with room (the file is copied there as a "
            "table while it is read)",
        )
    if "corresponds to no data" in str(exc) or "No columns to parse" in message or _no_rows(path):
        return DataError(
            f"{path}: no rows (columns or blank lines at most)", "write one example per row"
        )
    if builder == "json":
        found = _diagnose_json(path)
        if found is not None:
            return found
    if isinstance(exc, UnicodeDecodeError) or "codec can't decode" in message:
        return file_not_utf8(path)
    hints = {
        "json": "write one JSON object per line",
        "csv": "check the quoting and the number of fields on every line",
        "parquet": "is it really a parquet file?",
        "arrow": "is it really an arrow file?",
    }
    return DataError(f"{path}: cannot read it as {builder}: {message}", hints[builder])


def _no_rows(path: Path) -> bool:
    """Whether `path` is a parquet file of columns and no row (which `datasets` fails to
    read with an Arrow error of batch sizes)."""
    if path.suffix.lower() != ".parquet":
        return False
    import pyarrow.parquet as pq

    try:
        return bool(pq.read_metadata(path).num_rows == 0)
    except Exception:  # not parquet: the reader's own error says so
        return False


def _read_splits(path: Path) -> dict[str, Any]:
    """Named `datasets.Dataset` splits: one ("all") for a file or a saved `Dataset`; a
    `DataError` naming what could not be read (`_unreadable`)."""
    try:
        return _splits(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc


_ACCESS_HINT = (
    "make it readable by the user declora runs as (a file needs chmod u+r, a folder u+rx; "
    "ls -ld shows its owner and mode)"
)


def _unreadable(path: Path, exc: OSError) -> DataError:
    """The `DataError` of an `OSError` met reading data `path`: the file or folder it
    names (a file inside a folder `path` too), the reason, and for a permission error
    how to grant it."""
    name = exc.filename if exc.filename not in (None, str(path)) else None
    what = f"{path}: cannot read {name}" if name else f"{path}: cannot read it"
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, PermissionError):
        return DataError(f"{what}: permission denied", _ACCESS_HINT)
    return DataError(f"{what}: {reason}", "check the --data path and its disk")


def _splits(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"data file not found: {path}", "check the --data path")
    if path.is_file():
        return {"all": _read_file(path)}
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except FileNotFoundError as exc:
            files = sorted(str(f) for f in path.iterdir() if data_suffix(f) in BUILDERS)
            raise DataError(
                f"{path} is a folder but not one written by Dataset.save_to_disk",
                f"pass one of its data files ({', '.join(files[:3])}"
                + (", ..." if len(files) > 3 else "")
                + "); a train/test pair is read from a folder DatasetDict.save_to_disk wrote"
                if files
                else f"pass a data file ({SUPPORTED_HINT.removeprefix('use ')})",
            ) from exc
        if isinstance(loaded, datasets.DatasetDict):
            return dict(loaded.items())
        return {"all": loaded}


def _where(path: Path, split: str) -> str:
    return f"{path}" if split == "all" else f"{path} [{split}]"


def read_splits(path: Path) -> list[tuple[str, Any]]:
    """(where, rows) of each split of data file or save_to_disk folder `path`, read as
    training reads --data (`datasets.Dataset`s, in order); `DataError` for a file that
    cannot be read or a split without rows. The one reader of `predict` and `generate`
    input files."""
    splits = []
    for name, ds in _read_splits(path).items():
        where = _where(path, name)
        if len(ds) == 0:
            raise DataError(f"{where}: no rows", "write one example per row")
        splits.append((where, ds))
    return splits
