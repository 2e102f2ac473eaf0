"""A data split's columns: the values of the text or label column, each row checked
(one value, not a list or a mapping; a text that is not empty), and the hint that names
a missing column by the data's own spelling of it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from declora.node.data_error import DataError


def no_column(where: str, what: str, column: str, ds: Any) -> str:
    return f"{where}: no {what} column {column!r}; columns are {sorted(ds.column_names)}"


def column_hint(columns: Sequence[str], what: str, column: str, option: str) -> str:
    """How to name the missing `column` with `option`: the data's own spelling of it
    when its `columns` write it with other case or spaces (` Text `, `TEXT`), which is
    never matched silently."""
    key = column.strip().casefold()
    near = [c for c in columns if c.strip().casefold() == key]
    if near and option.endswith("-column"):
        return (
            f"the header writes it {near[0]!r} (names are matched exactly, case and spaces "
            f"included): pass {option} {shlex.quote(near[0])}, or rename the column"
        )
    return f"name the {what} column with {option}"


def column_values(
    ds: Any, where: str, column: str, what: str, option: str
) -> tuple[list[Any], Any]:
    """The values and the feature of `column` of a `datasets.Dataset`; a `DataError`
    naming the columns and the `option` that names it when it is missing."""
    if column not in ds.column_names:
        hint = column_hint(ds.column_names, what, column, option)
        raise DataError(no_column(where, what, column, ds), hint)
    try:  # one batch: much faster than iterating the column row by row
        values = list(ds.select_columns([column])[:][column])
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text", "save the file as UTF-8") from exc
    return values, ds.features[column]


def is_chat_turns(value: object) -> bool:
    """Whether `value` looks like chat turns: a non-empty list of mappings with a role
    ({role, content}) or a speaker (ShareGPT's {from, value})."""
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(t, Mapping) and ("role" in t or "from" in t) for t in value)
    )


def check_scalar(value: Any, where: str, number: int, what: str, column: str) -> None:
    """A `DataError` when a row's `what` is a list or a mapping, not one value (a list:
    column-oriented JSON, {"text": [...], "label": [...]}, read as a single row)."""
    if isinstance(value, (list, tuple, dict)):
        raise DataError(
            f"{where}: row {number}: the {what} in column {column!r} is a "
            f"{type(value).__name__}, not a single value",
            "these are chat turns: causal-LM chat data is read from a 'messages' column "
            "(--task lm; name yours with --messages-column)"
            if is_chat_turns(value)
            else f"write the {what} as one value (a string or a number), not an object"
            if isinstance(value, dict)
            else 'write one object per record, e.g. JSON Lines: {"text": "...", "label": "..."} '
            'a line, or a JSON array of such objects; not {"text": [...], "label": [...]}',
        )


def read_texts(ds: Any, where: str, text_column: str, *, blank: bool = False) -> tuple[str, ...]:
    """The non-empty texts of `text_column`; a `DataError` naming the first bad row.
    `blank` (predict's rows, each an output line): an empty, null or NaN text is ""
    instead, keeping its place."""
    texts, _ = column_values(ds, where, text_column, "text", "--text-column")
    if blank:
        texts = ["" if _no_text(t) else t for t in texts]
    for number, text in enumerate(texts, 1):
        if text is None:  # a missing key, a JSON null, or a NaN pandas wrote as null
            raise DataError(
                f"{where}: row {number} has no value in column {text_column!r} "
                "(missing, null or NaN)",
                f"every row needs a {text_column!r} value",
            )
        check_scalar(text, where, number, "text", text_column)
        if isinstance(text, float) and text != text:  # NaN: a missing value, not "nan"
            raise DataError(
                f"{where}: row {number} has no value in column {text_column!r} (NaN)",
                "remove the row or give it a text",
            )
        if isinstance(text, bool):  # a JSON true/false: never a document
            raise DataError(
                f"{where}: row {number}: the text in column {text_column!r} is the boolean "
                f"{str(text).lower()}, not a text",
                "write the text as a string, or name the text column with --text-column",
            )
        if not str(text).strip() and not blank:
            raise DataError(
                f"{where}: row {number} has an empty text in column {text_column!r}",
                "remove the row or give it a text",
            )
    return tuple(str(t) for t in texts)


def _no_text(value: Any) -> bool:
    """Whether a text column's value is no text: None, NaN, or blank."""
    if isinstance(value, float):
        return value != value
    return value is None or (isinstance(value, str) and not value.strip())


def check_nested(ds: Any, where: str, text_column: str) -> None:
    """A `DataError` for a JSON file of one object whose rows are a list under a key
    ({"data": [{"text": ...}, ...]}), read as one row without `text_column`."""
    if len(ds) != 1 or text_column in ds.column_names:
        return
    row = ds[0]
    for key in sorted(ds.column_names):
        value = row[key]
        if (
            isinstance(value, list)
            and value
            and isinstance(value[0], Mapping)
            and (text_column in value[0])
        ):
            raise DataError(
                f"{where}: one object whose rows are nested under {key!r} "
                f"({len(value)} of them), not rows of their own",
                "write the rows one JSON object a line (JSON Lines) or as a top-level "
                f"[...] array, e.g. jq -c '.{key}[]' FILE > rows.jsonl",
            )
