"""The check of a CSV/TSV data file before `datasets` reads it (`csv_options`).

CSV/TSV files are read as spreadsheets write them (Excel's `sep=X` first line, a
trailing comma on every line), every column as a string, so texts and labels keep
their spelling; a file pandas would misread silently (a stray quote mark swallowing
rows, a header that is one unquoted column holding `;` or a tab) is refused with a `DataError`
naming its line. A `.csv` file whose header is one column comma-separated but
`;`-separated names is read `;`-separated, as Excel writes CSV where `;` is the list
separator.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from declora.node.data_error import DataError
from declora.node.data_text import file_not_utf8

# Excel's first line naming the separator ("sep=;"), skipped by Excel itself
_log = logging.getLogger(__name__)
_SEP_LINE = re.compile(r"sep=([,;\t|])")
_SEP_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_QUOTE_HINT = (
    "quote a text that starts with a quote mark whole, its quote marks doubled "
    '("""Hamlet"" is a play"), or drop the stray quote mark'
)


def csv_options(datasets: Any, path: Path, shown: Path | None = None) -> dict[str, Any]:
    """The `datasets` csv options that read `path` with every column as a string, so
    texts and labels keep their spelling (`shown`: the name its log line gives it, a
    compressed file's own for its decompressed copy).

    A `.tsv` file is tab-separated, any other comma-separated, unless its first line is
    Excel's `sep=X` (X one of , ; tab |): then X, and that line is skipped; a header of
    one comma-separated name (a comma only inside quotes) but two or more `;`-separated
    ones reads `;`-separated (one info line). Trailing
    header columns without a name (a comma at the end of every line) are dropped if they
    hold no value. Refused with a `DataError` naming the line: a header that is one
    column holding another separator unquoted (a `;`-separated file named .csv), a column name
    that is empty (not trailing) or repeated, and every row `_check_rows` refuses."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    skip = 0
    with _field_limit(path.stat().st_size), path.open(encoding="utf-8-sig", newline="") as fh:
        first = fh.readline().rstrip("\r\n")
        declared = _SEP_LINE.fullmatch(first)
        if declared:
            sep, skip = declared.group(1), 1
        else:
            fh.seek(0)
            if sep == "," and _semicolon_header(first):
                sep = ";"
                _log.info(
                    "%s: read semicolon-separated (its header names its columns between "
                    "semicolons, not commas; a first line sep=; says so outright)",
                    shown or path,
                )  # fmt: skip
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
        quoted = not declared and first.startswith('"')  # a name quoted whole: as meant
        named = _check_header(header, path, sep, skip + 1, quoted)
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


def _semicolon_header(line: str) -> bool:
    """Whether header `line` is a spreadsheet's `;`-separated one (Excel where the list
    separator is `;`): one column read comma-separated (a comma only inside a quoted
    name, "price, EUR";label), no tab, two or more named ones read `;`-separated."""
    commas = _fields(line, ",")
    if ";" not in line or "\t" in line or (commas is not None and len(commas) > 1):
        return False  # a tab: a tab-separated file named .csv (`_check_header` says so)
    return sum(bool(name.strip()) for name in _fields(line, ";") or ()) >= 2


def _fields(line: str, sep: str) -> list[str] | None:
    """The fields of one csv `line` separated by `sep`; None when it is not csv so."""
    try:
        return next(csv.reader([line], delimiter=sep, strict=True))
    except csv.Error:
        return None


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


def _check_header(header: list[str], path: Path, sep: str, line: int, quoted: bool) -> int:
    """How many leading columns of `header` are named (trailing empty names dropped);
    a `DataError` for a one-column header holding another separator (unless `quoted`:
    its line quotes the name, `"notes; misc"`), an empty name before a named column, or
    a repeated name."""
    one = len(header) == 1 and not quoted
    # a tab first: it is in no name, while `;` and `|` may be
    other = next((s for s in ("\t", ";", "|", ",") if s != sep and one and s in header[0]), None)
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
