"""Exact and near-duplicate texts, found before any train/test split.

What callers may rely on:

- Texts are compared by their `normalize`d form (casefolded, punctuation dropped,
  whitespace collapsed). A row is a duplicate if its normalized text equals that of an
  earlier kept row (exact), or if the Jaccard similarity of its word `shingle`-gram
  set with an earlier kept row's is >= `threshold` (near). A text shorter than
  `shingle` words is one shingle: the whole text.
- A conversation (`TextDataset.chats`) is compared by its turns without the system
  turn(s) (`compared_texts`): many distinct conversations share one long system prompt,
  which would otherwise make them near duplicates. Two conversations that differ only
  in their system prompt are therefore duplicates (and exact copies still are).
- Rows are decided in index order, so the first occurrence (lowest index) of each
  duplicate group is kept and every dropped row is a duplicate of a kept one.
- Near-duplicate candidates come from MinHash + LSH banding with a fixed seed; the
  bands are chosen so that a pair at the threshold is missed with probability below
  `MISS_TARGET` (for thresholds >= 0.11). Every candidate is verified by exact Jaccard
  on the shingle sets, so nothing below the threshold is ever dropped, and the result
  is a deterministic function of the texts and the parameters (the same on every
  machine and run: word hashes are blake2b, not Python's salted `hash`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from declora.node.data import TextDataset

NUM_PERM = 128  # MinHash functions
MISS_TARGET = 1e-6  # the banding misses a pair at the threshold at most this often
SEED = 0x5EED_DEC1
_BLOCK = 4096  # shingles hashed at once (4096 x NUM_PERM x 8 bytes = 4 MiB)
_PUNCT = re.compile(r"[^\w\s]|_")
_SPACE = re.compile(r"\s+")

Shingles = frozenset[tuple[str, ...]]


def normalize(text: str) -> str:
    """`text` casefolded, punctuation dropped, whitespace collapsed to single spaces."""
    return _SPACE.sub(" ", _PUNCT.sub("", text.casefold())).strip()


def _shingles(words: Sequence[str], shingle: int) -> Shingles:
    if len(words) < shingle:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + shingle]) for i in range(len(words) - shingle + 1))


def _jaccard(a: Shingles, b: Shingles) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole word (wrapping)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _WordHashes(dict[str, int]):
    """word -> its 64-bit blake2b hash, computed once per word."""

    def __missing__(self, word: str) -> int:
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        self[word] = h
        return h


class _Signer:
    """MinHash signatures of word-shingle sets, from seeded constants."""

    def __init__(self, shingle: int) -> None:
        rng = np.random.default_rng(SEED)
        self.position = rng.integers(1, 2**63, size=shingle, dtype=np.uint64) | np.uint64(1)
        self.a = rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
        self.shingle = shingle
        self._words = _WordHashes()

    def sign(self, words: Sequence[str]) -> np.ndarray:
        """NUM_PERM minima of (a * h + b) >> 32 over the shingle hashes h of `words`."""
        ids = np.fromiter(map(self._words.__getitem__, words), dtype=np.uint64, count=len(words))
        k = min(self.shingle, len(ids))
        n = len(ids) - k + 1  # a short text: one shingle of all its words
        h = np.full(n, np.uint64(k))  # the length, so a short text differs from a prefix
        for j in range(k):
            h = h + ids[j : j + n] * self.position[j]
        h = np.unique(_mix(h))
        signature = np.full(NUM_PERM, np.uint64(1 << 32))  # above every 32-bit value
        for start in range(0, len(h), _BLOCK):  # bounded memory for a long text
            block = h[start : start + _BLOCK, None] * self.a + self.b  # wraps mod 2**64
            signature = np.minimum(signature, (block >> np.uint64(32)).min(axis=0))
        return signature


MAX_BUCKET = 512  # rows of one LSH bucket compared pairwise; beyond, a linear chain


def _rows_per_band(threshold: float) -> int:
    """The most rows per band that still find a pair at `threshold` (fewest candidates)."""
    for rows in range(NUM_PERM, 1, -1):
        bands = NUM_PERM // rows
        if (1.0 - threshold**rows) ** bands <= MISS_TARGET:
            return rows
    return 1


def _candidates(signatures: np.ndarray, rows: int) -> np.ndarray:
    """(earlier, later) index pairs that share a band, sorted by later then earlier."""
    n = len(signatures)
    codes: list[np.ndarray] = []
    for start in range(0, NUM_PERM - rows + 1, rows):
        band = np.ascontiguousarray(signatures[:, start : start + rows])
        keys = band.view(np.dtype((np.void, band.dtype.itemsize * rows))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = np.flatnonzero(counts > 1)
        if len(shared) == 0:
            continue
        order = np.argsort(inverse, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts)))
        for bucket in shared:
            members = order[bounds[bucket] : bounds[bucket + 1]]  # ascending (stable sort)
            if len(members) > MAX_BUCKET:  # bounded work: each row meets the first and
                # the one before it, not all (a file of many similar rows stays linear)
                later = members[1:]
                codes.append(later * n + members[0])
                codes.append(later[1:] * n + members[1:-1])
                continue
            i, j = np.triu_indices(len(members), k=1)
            codes.append(members[j] * n + members[i])
    if not codes:
        return np.empty((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    return np.stack([unique % n, unique // n], axis=1)


def duplicate_rows(texts: Sequence[str], threshold: float = 0.8, shingle: int = 5) -> np.ndarray:
    """Sorted int64 indices of the rows of `texts` to drop (see the module docstring)."""
    return np.flatnonzero(duplicate_of(texts, threshold, shingle) >= 0).astype(np.int64)


def duplicate_of(texts: Sequence[str], threshold: float = 0.8, shingle: int = 5) -> np.ndarray:
    """For each row of `texts`, the kept row it duplicates (int64), or -1 when it is
    kept itself; the rows to drop are `duplicate_rows`'."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if shingle < 1:
        raise ValueError(f"shingle must be >= 1, got {shingle}")
    first: dict[str, int] = {}  # normalized text -> its first row
    of = np.full(len(texts), -1, dtype=np.int64)
    for row, text in enumerate(texts):
        key = normalize(text)
        if key in first:
            of[row] = first[key]
        else:
            first[key] = row
    unique = list(first.values())  # in row order (dicts keep insertion order)
    words = [key.split() for key in first]
    signer = _Signer(shingle)
    signatures = np.stack([signer.sign(w) for w in words]) if words else np.empty((0, NUM_PERM))
    sets: dict[int, Shingles] = {}

    def shingles(u: int) -> Shingles:
        if u not in sets:
            sets[u] = _shingles(words[u], shingle)
        return sets[u]

    near = np.zeros(len(unique), dtype=bool)
    for earlier, later in _candidates(signatures, _rows_per_band(threshold)).tolist():
        if near[later] or near[earlier]:  # decided, or not a kept row to compare with
            continue
        if _jaccard(shingles(earlier), shingles(later)) >= threshold:
            near[later] = True
            of[unique[later]] = unique[earlier]
    copied = of >= 0
    of[copied] = np.where(of[of[copied]] >= 0, of[of[copied]], of[copied])  # a near copy's copies
    return of


def compared_texts(data: TextDataset) -> tuple[str, ...]:
    """What deduplication compares of each row: its text, or a conversation's
    "role: content" lines without its system turns."""
    if data.chats is None:
        return data.texts
    return tuple(
        "\n".join(f"{role}: {content}" for role, content in chat if role != "system")
        if any(role == "system" for role, _ in chat)
        else text  # the same rendering (`lm_data.LmFormat` writes texts so)
        for text, chat in zip(data.texts, data.chats, strict=True)
    )


def dedupe(data: TextDataset, threshold: float = 0.8, shingle: int = 5) -> tuple[TextDataset, int]:
    """`data` without its duplicate rows (order, labels and chats kept), and how many
    rows were dropped."""
    kept, dropped, _ = dedupe_labelled(data, threshold, shingle)
    return kept, dropped


def dedupe_labelled(
    data: TextDataset, threshold: float = 0.8, shingle: int = 5
) -> tuple[TextDataset, int, int]:
    """`dedupe`'s answer and how many of the dropped rows have a label other than the
    kept row they copy (the kept row's label is what is trained; 0 without labels)."""
    of = duplicate_of(compared_texts(data), threshold, shingle)
    copied = np.flatnonzero(of >= 0)
    conflicting = 0
    if data.labels is not None:
        conflicting = int((data.labels[copied] != data.labels[of[copied]]).sum())
    return data.subset(np.flatnonzero(of < 0)), len(copied), conflicting


def dedupe_split(
    train: TextDataset, test: TextDataset, threshold: float = 0.8, shingle: int = 5
) -> tuple[TextDataset, TextDataset, int]:
    """(train, test) deduplicated, and how many rows were dropped in all.

    `train` is deduplicated on its own; a test row is dropped if it duplicates a kept
    train row or an earlier kept test row, so no test text copies a training text."""
    train, test, dropped, _ = dedupe_split_labelled(train, test, threshold, shingle)
    return train, test, dropped


def dedupe_split_labelled(
    train: TextDataset, test: TextDataset, threshold: float = 0.8, shingle: int = 5
) -> tuple[TextDataset, TextDataset, int, int]:
    """`dedupe_split`'s answer and how many of the dropped rows have a label other
    than the kept row they copy (`dedupe_labelled`'s count; both splits share label
    ids, as `data.load_dataset` reads them)."""
    train, dropped, conflicting = dedupe_labelled(train, threshold, shingle)
    of = duplicate_of(compared_texts(train) + compared_texts(test), threshold, shingle)
    copied = np.flatnonzero(of[len(train) :] >= 0)
    if train.labels is not None and test.labels is not None:
        labels = np.concatenate([train.labels, test.labels])
        kept = of[len(train) + copied]
        conflicting += int((test.labels[copied] != labels[kept]).sum())
    test = test.subset(np.flatnonzero(of[len(train) :] < 0))
    return train, test, dropped + len(copied), conflicting
