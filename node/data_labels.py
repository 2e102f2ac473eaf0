"""Label names as read from data and from a declared label set (--labels).

A label value's class name is its text, stripped, with a whole number written as a
float in its integer form (`label_name`: 2 and 2.0 are one class); a declared set needs
two distinct non-empty names (`declared_labels`); labels that differ only by case or
whitespace stay separate classes, with a warning (`warn_label_variants`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from declora.node.data_error import DataError
from declora.node.data_text import utf8_text
from declora.node.option_values import home_path

_log = logging.getLogger("declora.node.data")  # the data loading's logger (data.py's)


def declared_labels(labels: Sequence[str], source: str = "the label set") -> tuple[str, ...]:
    """Check a declared label set: >= 2 distinct non-empty names; returned as a tuple."""
    if isinstance(labels, str):
        raise DataError(f"{source}: a label set is a sequence of names, not the string {labels!r}")
    names = tuple(label_name(n) for n in labels)
    warn_renamed({str(o).strip(): n for o, n in zip(labels, names, strict=True)}, source)
    if len(names) < 2:
        raise DataError(
            f"{source} declares {len(names)} label(s); classification needs at least 2",
            "list every class of the swarm, one per line",
        )
    if "" in names:
        raise DataError(f"{source} has an empty label name", "remove the blank entry")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{source} names {dupes[:5]} more than once", "list each label once")
    return names


def read_label_file(path: str | Path) -> tuple[str, ...]:
    """The label set in `path`: a JSON list of names, or one name per line.

    Blank lines and surrounding whitespace are ignored; the order is kept (it fixes the
    label ids). A leading `~` is the home folder (`option_values.home_path`: no shell
    reads it after `@`). Raises `DataError` for a missing or empty file, bad JSON,
    duplicates or fewer than two labels.
    """
    try:
        p = home_path(path)
    except ValueError as exc:
        raise DataError(
            f"label file {path}: {exc}", "pass --labels @FILE with its full path"
        ) from None
    if p.is_dir():
        raise DataError(f"label file {p} is a folder", "pass --labels @FILE with a file of names")
    if not p.is_file():
        raise DataError(f"label file not found: {p}", "pass --labels @FILE with an existing file")
    text = utf8_text(str(p), p.read_bytes())
    if not text.strip():
        raise DataError(f"{p}: the label file is empty", "write one label per line")
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{p}:{exc.lineno}: not a valid JSON list: {exc.msg}",
                'write ["a", "b", ...] or one label per line',
            ) from exc
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in raw):
            raise DataError(
                f"{p}: the JSON list must hold label names (strings)", 'write ["a", "b", ...]'
            )
        names = [v if isinstance(v, str) else label_name(v) for v in raw]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return declared_labels(names, source=str(p))


# a whole number written as a decimal: "2.0", "2.", "-3.00" (not "2.5", "1e3" or "02")
_WHOLE_DECIMAL = re.compile(r"[+-]?\d+\.0*")
_NAN_NAMES = frozenset({"nan", "+nan", "-nan"})


def label_name(value: Any) -> str:
    """A label value's class name: its text, stripped, with a whole number written as a
    float (2.0 read from JSON or parquet, "2.0" in a CSV) in its integer form ("2"),
    so 2 and 2.0 are one class wherever labels are read (data, --labels). Other values
    keep their spelling ("2.5", "02", "Tech"). A NaN stays "nan" (callers refuse it)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if number.is_integer():
            return str(int(number))
        return "nan" if number != number else str(number)
    text = str(value).strip()
    if _WHOLE_DECIMAL.fullmatch(text):
        whole = text.split(".")[0]
        return str(int(whole))  # "-0.0" -> "0", "+2.0" -> "2"
    return text


def is_nan(name: str) -> bool:
    return name.casefold() in _NAN_NAMES


def warn_renamed(renamed: dict[str, str], source: str) -> None:
    """Log a warning naming labels read in their integer form ("2.0" -> "2")."""
    changed = sorted({(o, n) for o, n in renamed.items() if o != n}, key=lambda p: p[1])
    if changed:
        _log.warning(
            "%s: whole-number label(s) written as decimals are read as integers: %s "
            "(2 and 2.0 are one class)",
            source,
            ", ".join(f"{o!r} -> {n!r}" for o, n in changed[:5])
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""),
        )


def natural_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def mixed_types(feature: Any) -> bool:
    """Whether a column's `datasets` feature is that of values of more than one JSON
    type (its `Json` feature: no single `Value` type held them all)."""
    import datasets

    return not isinstance(feature, (datasets.Value, datasets.ClassLabel))


def label_variants(names: Sequence[str]) -> list[list[str]]:
    """Groups (sorted) of the label names that differ only by case or whitespace."""
    groups: dict[str, set[str]] = {}
    for name in names:
        groups.setdefault(" ".join(name.split()).casefold(), set()).add(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def warn_label_variants(names: set[str], source: str) -> None:
    """Log a warning for labels that differ only by case or whitespace: they stay separate
    classes (never merged), but are most likely one class spelled two ways."""
    variants = label_variants(sorted(names))
    if variants:
        _log.warning(
            "%s: label(s) that differ only by case or whitespace are separate classes: %s "
            "(fix the rows if each group is one class)",
            source,
            "; ".join(", ".join(repr(n) for n in group) for group in variants),
        )
