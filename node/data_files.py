"""Reading a user's data file from disk with the Hugging Face `datasets` library.

`read_splits(path)` gives (where, rows) for each split of a data file or a folder
written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, the rows a
`datasets.Dataset` held in memory (nothing is left in a cache on disk). The file types
are those of `BUILDERS` (JSON lines `.jsonl`, `.ndjson`, `.json`; CSV/TSV; parquet;
arrow), each also compressed as `COMPRESSIONS` name (`data.jsonl.gz`: decompressed into
tempfile's folder, removed after, then read as `data.jsonl`, errors naming the
compressed file); a file whose decompressed copy or Arrow table (`data_bounds`) would
leave less than `KEEP_FREE` of that disk free, a tenth of a disk under 10 GiB, is
refused; an archive, .zip or .tar.gz, is refused with a hint to extract it; a name
holding a glob character is read as that one file. CSV/TSV files are checked by
`data_csv` (columns all read as strings), JSON and CSV files' encoding by `data_text`.
Every mistake (missing or unreadable file, unsupported type, empty file, bad JSON line,
text that is not UTF-8, no room in the temporary folder) raises `DataError` with a
one-line message and a hint. Columns, labels and train/test splits are `data.py`'s.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import json
import lzma
import re
import shlex
import stat
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from declora.node.data_bounds import KEEP_FREE as KEEP_FREE  # the module's API as before
from declora.node.data_bounds import TMP_HINT, check_table_room, disk_room, mib
from declora.node.data_bounds import table_bound as table_bound
from declora.node.data_csv import _field_limit as _field_limit
from declora.node.data_csv import csv_options
from declora.node.data_error import DataError
from declora.node.data_text import check_utf8, file_not_utf8
from declora.node.data_text import utf8_text as utf8_text

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
            except RecursionError:
                return DataError(
                    f"{path}:{lineno}: a value nests JSON arrays or objects too deeply",
                    "flatten that value, or store it as a JSON text in a string",
                )
            except json.JSONDecodeError as exc:
                if lineno == 1 and line.lstrip().startswith("["):
                    return None  # a JSON array file, not JSON lines
                hint = 'each line must be one JSON object of columns, e.g. {"text": ...}'
                if line.lstrip("\ufeff \t").startswith(("#", "//")):
                    hint = f"JSON Lines has no comment lines: delete line {lineno} (and any other)"
                elif exc.msg == "Extra data" and line[exc.pos :].strip() == ",":
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


def _read_compressed(path: Path) -> Any:
    """`_read_file` of the file compressed at `path`, decompressed into a temporary
    folder (`tempfile`'s, removed on every exit, a Ctrl-C's too) under a plain name; a
    `DataError` that names the decompressed file names `path`."""
    with tempfile.TemporaryDirectory(prefix="declora-data-") as folder:
        inner = Path(folder) / f"data{data_suffix(path)}"
        _decompress(path, inner)
        try:
            room = f" besides the {mib(inner.stat().st_size)} decompressed"
            return _read_plain(inner, room, shown=path)
        except DataError as exc:
            raise DataError(exc.message.replace(str(inner), str(path)), exc.hint) from exc


def _decompress(path: Path, inner: Path) -> None:
    """Write the file compressed at `path` out to `inner`. A `DataError` when it cannot
    be decompressed, or when it inflates past the free space of `inner`'s disk but
    `KEEP_FREE` (nothing more is written) or that disk is full."""
    kind = path.suffix.lower()
    room, keep = disk_room(inner.parent)
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
                    f"{path}: decompressed, it is over {mib(written)}, more than "
                    f"{where} has free ({mib(max(room, 0))}, keeping {mib(keep)} free)",
                    TMP_HINT,
                )
            try:
                dst.write(chunk)
            except OSError as exc:
                raise DataError(
                    f"{path}: no room to decompress it in {where}: {exc.strerror}", TMP_HINT
                ) from exc


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


def _read_plain(path: Path, besides: str = "", shown: Path | None = None) -> Any:
    """A `datasets.Dataset` (in memory) of the rows of uncompressed data file `path`,
    refused (`DataError`) when empty, not UTF-8 (JSON, CSV) or when its table would not
    fit in the temporary folder (`check_table_room`; `besides`: its decompressed copy
    is there too; `shown`: the compressed file it came from, named in its log lines)."""
    builder = BUILDERS[path.suffix.lower()]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: no rows (the file is empty)", "write one example per row")
    cells = check_utf8(path) if builder in ("json", "csv") else 0
    check_table_room(path, cells, besides)
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="declora-data-") as c:
        try:
            kwargs: dict[str, Any] = {}
            if builder == "csv":
                kwargs = csv_options(datasets, path, shown)
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


_SPECIAL = {
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFSOCK: "socket",
}


# One JSON line a .txt file, labelled by its folder's name (the file's text unchanged,
# read as UTF-8 whatever the locale, as declora reads data). Names that begin with a
# dot are left out: pathlib's `*` matches them, and `.ipynb_checkpoints/1.txt` (a
# notebook's copies) or `._1.txt` (macOS metadata) would become rows of a class.
_VISIBLE_TXT = "[!.]*/[!.]*.txt"
_TXT_TO_JSONL = (
    'python3 -c \'import json, pathlib, sys; [print(json.dumps({"text": f.read_text("utf-8"), '
    f'"label": f.parent.name}})) for f in sorted(pathlib.Path(sys.argv[1])'
    f'.glob("{_VISIBLE_TXT}"))]\''
)


def _class_folders_hint(path: Path) -> str | None:
    """The command that writes a folder of class folders of .txt files (`path/sport/1.txt`)
    as JSON Lines, or None when `path` has no subfolder holding a .txt file (hidden
    folders and files, whose names begin with a dot, are left out). The folder is
    shell-quoted; a path an error line cannot show as typed (a newline, bytes that
    are not UTF-8) is FOLDER, to be replaced."""
    try:
        if not any(path.glob(_VISIBLE_TXT)):
            return None
    except OSError:
        return None
    typed = str(path).isprintable()  # a surrogate (a byte not UTF-8) is not printable
    return (
        "a folder of class folders of .txt files is not read as data: write it as JSON "
        "Lines (one row a file, labelled by its folder; hidden folders and files, such as "
        ".ipynb_checkpoints, left out) and pass that file: "
        f"{_TXT_TO_JSONL} {shlex.quote(str(path)) if typed else 'FOLDER'} > data.jsonl"
        + ("" if typed else " (FOLDER: the path of this folder)")
    )


def _splits(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"data file not found: {path}", "check the --data path")
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # never opened: a FIFO would block
        raise DataError(
            f"{path}: not a data file but a {_SPECIAL.get(stat.S_IFMT(mode), 'special file')}",
            "pass a data file or a save_to_disk folder (save what a pipe or a device gives "
            "to a file first)",
        )
    if path.is_file():
        return {"all": _read_file(path)}
    with _quiet_datasets() as datasets:
        try:
            loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
        except FileNotFoundError as exc:
            files = sorted(
                str(f) for f in path.iterdir() if data_suffix(f) in BUILDERS and f.is_file()
            )
            raise DataError(
                f"{path} is a folder but not one written by Dataset.save_to_disk",
                f"pass one of its data files ({', '.join(files[:3])}"
                + (", ..." if len(files) > 3 else "")
                + "); a train/test pair is read from a folder DatasetDict.save_to_disk wrote"
                if files
                else _class_folders_hint(path)
                or f"pass a data file ({SUPPORTED_HINT.removeprefix('use ')})",
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
