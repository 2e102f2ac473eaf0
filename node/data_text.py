"""Whether a data or text file is UTF-8: its first byte that is not, or UTF-16/32 told
as such, in a `DataError` with a hint to convert it."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterable
from pathlib import Path

from declora.node.data_bounds import DELIMITERS
from declora.node.data_error import DataError

# byte-order marks of the encodings that are not UTF-8 (UTF-32's first: it starts like UTF-16's)
_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def check_utf8(path: Path) -> int:
    """How many delimiters (`DELIMITERS`) text file (JSON, CSV) `path` holds; a
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
                cells += sum(chunk.count(d) for d in DELIMITERS)
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
