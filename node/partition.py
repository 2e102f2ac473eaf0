"""Seeded partitioners that split a labelled data set across nodes.

Every partitioner takes a 1-D array of non-negative integer labels and returns
one sorted int64 array of sample indices per node. The arrays are pairwise
disjoint, depend only on the arguments (``seed`` feeds
``np.random.default_rng``) and are subsets of ``range(len(labels))``; ``iid``
and ``shards`` use every sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from declora.node.data_files import DataError

__all__ = [
    "SCHEME_FORMS",
    "PartitionError",
    "check_scheme",
    "dirichlet",
    "format_label_counts",
    "iid",
    "label_counts",
    "label_proportions",
    "partition",
    "scheme_for_data",
    "shards",
    "skew_proportions",
]

SCHEME_FORMS = ("iid", "dirichlet:ALPHA (ALPHA > 0)", "skew or skew:MAJOR", "shards:K")

DEFAULT_MIN_SIZE = 8
SHARE_HINT = (
    "fewer nodes (simulate/lab --nodes, or N of start --partition i/N), more data, "
    "or another --partition-scheme"
)


class PartitionError(DataError):
    """The data cannot be shared out as asked (more nodes than rows, a scheme that
    leaves a node empty): a one-line message and a hint, reported like a bad data file."""


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError("labels must be non-negative")
    return arr


def _check_nodes(labels: np.ndarray, n_nodes: int) -> None:
    if not 1 <= n_nodes <= len(labels):
        raise ValueError(f"n_nodes must be in 1..{len(labels)} (number of samples), got {n_nodes}")


def _finish(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def iid(labels: np.ndarray, n_nodes: int, seed: int) -> list[np.ndarray]:
    """Uniformly shuffled split; node sizes differ by at most one."""
    labels = _check_labels(labels)
    _check_nodes(labels, n_nodes)
    perm = np.random.default_rng(seed).permutation(len(labels))
    return _finish(np.array_split(perm, n_nodes))


def dirichlet(
    labels: np.ndarray,
    n_nodes: int,
    alpha: float,
    seed: int,
    min_size: int | None = None,
    max_tries: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: each class is divided among nodes by ``Dir(alpha)`` shares.

    Every sample is assigned. The whole draw is repeated (up to ``max_tries``)
    until every node holds at least ``min_size`` samples (default
    ``min(8, len(labels) // n_nodes)``); otherwise ``ValueError``. Small
    ``alpha`` gives few classes per node, large ``alpha`` approaches ``iid``.
    """
    labels = _check_labels(labels)
    _check_nodes(labels, n_nodes)
    if not alpha > 0:
        raise ValueError(f"dirichlet alpha must be > 0, got {alpha}")
    cap = len(labels) // n_nodes
    if min_size is None:
        min_size = min(DEFAULT_MIN_SIZE, cap)
    if not 0 <= min_size <= cap:
        raise ValueError(f"min_size must be in 0..{cap} (len(labels) // n_nodes), got {min_size}")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
        for idx in by_class:
            idx = rng.permutation(idx)
            shares = rng.dirichlet(np.full(n_nodes, float(alpha)))
            cuts = np.round(np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
            for node, chunk in enumerate(np.split(idx, cuts)):
                parts[node].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_size:
            return _finish(merged)
    raise ValueError(
        f"dirichlet(alpha={alpha}) left a node with < {min_size} samples in {max_tries} "
        f"tries; use a larger alpha, fewer nodes or a smaller min_size"
    )


def skew_proportions(n_nodes: int, n_classes: int, major: float = 0.85) -> np.ndarray:
    """Label-distribution matrix (``n_nodes x n_classes``, rows sum to 1).

    Node ``i`` puts ``major`` on class ``(i + 1) % n_classes`` and spreads
    ``1 - major`` evenly over the other classes, except that with two classes
    and an odd number of nodes the last node is balanced ``[0.5, 0.5]``. For
    ``(3, 2)`` this is Dec-LoRA's split ``[.15, .85], [.85, .15], [.5, .5]``.
    One class gives all-ones rows. Entries are rounded to 15 significant digits
    so that e.g. ``1 - 0.85`` prints as ``0.15``.
    """
    if n_nodes < 1 or n_classes < 1:
        raise ValueError(f"need n_nodes >= 1 and n_classes >= 1, got {n_nodes}, {n_classes}")
    if not 0.0 <= major <= 1.0:
        raise ValueError(f"major must be in [0, 1], got {major}")
    if n_classes == 1:
        return np.ones((n_nodes, 1))
    minor = float(f"{(1.0 - major) / (n_classes - 1):.15g}")
    props = np.full((n_nodes, n_classes), minor)
    props[np.arange(n_nodes), (np.arange(n_nodes) + 1) % n_classes] = major
    if n_classes == 2 and n_nodes % 2 == 1:
        props[-1] = 0.5
    return props


def _round_rows(target: np.ndarray, m: int) -> np.ndarray:
    """Largest-remainder rounding of ``m * target`` (rows sum to 1) to integer rows summing to m."""
    exact = target * m
    counts = np.floor(exact).astype(np.int64)
    short = m - counts.sum(axis=1, keepdims=True)
    order = np.argsort(-(exact - counts), axis=1, kind="stable")
    rank = np.argsort(order, axis=1, kind="stable")
    return counts + (rank < short)


def label_proportions(labels: np.ndarray, proportions: np.ndarray, seed: int) -> list[np.ndarray]:
    """Give node ``i`` samples whose label mix follows ``proportions[i]``.

    ``proportions`` is ``n_nodes x n_classes`` (non-negative, rows sum to 1);
    class ``c`` is label value ``c`` and labels must lie in ``0..n_classes-1``.
    Every node gets the same number ``m`` of samples, the largest ``m`` for
    which the rounded per-class counts fit without reusing a sample; node ``i``
    holds ``round(m * proportions[i, c])`` samples of class ``c`` (largest
    remainder rounding, each off by < 1). ``ValueError`` if ``m`` would be 0.
    """
    labels = _check_labels(labels)
    props = np.asarray(proportions, dtype=np.float64)
    if props.ndim != 2 or props.shape[0] < 1 or props.shape[1] < 1:
        raise ValueError(f"proportions must be an n_nodes x n_classes matrix, got {props.shape}")
    n_nodes, n_classes = props.shape
    _check_nodes(labels, n_nodes)
    if not np.all(np.isfinite(props)) or np.any(props < 0):
        raise ValueError("proportions must be finite and non-negative")
    if not np.allclose(props.sum(axis=1), 1.0, rtol=0.0, atol=1e-6):
        raise ValueError("each row of proportions must sum to 1")
    props = props / props.sum(axis=1, keepdims=True)
    if labels.max() >= n_classes:
        raise ValueError(f"label {labels.max()} has no column in {n_classes}-class proportions")
    available = np.bincount(labels, minlength=n_classes)
    demand = props.sum(axis=0)
    # Rounding moves a column sum by < n_nodes, so no m above this bound can fit.
    need = demand > 0
    bound = np.floor((available[need] + n_nodes) / demand[need]).min()
    m = int(min(len(labels) // n_nodes, bound))
    while m > 0:
        counts = _round_rows(props, m)
        if np.all(counts.sum(axis=0) <= available):
            break
        m -= 1
    if m <= 0:
        absent = [c for c in range(n_classes) if demand[c] > 0 and available[c] == 0]
        raise ValueError(f"cannot give every node a sample; requested classes absent: {absent}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_nodes)]
    for c in range(n_classes):
        pool = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for i in range(n_nodes):
            k = int(counts[i, c])
            parts[i].append(pool[start : start + k])
            start += k
    return _finish([np.concatenate(p) for p in parts])


def shards(labels: np.ndarray, n_nodes: int, shards_per_node: int, seed: int) -> list[np.ndarray]:
    """McMahan et al. shards: sort by label, cut into ``n_nodes * shards_per_node``
    near-equal contiguous shards, deal ``shards_per_node`` random shards to each node.

    Ties within a label are shuffled first. Every sample is assigned.
    """
    labels = _check_labels(labels)
    _check_nodes(labels, n_nodes)
    n_shards = n_nodes * shards_per_node
    if shards_per_node < 1 or n_shards > len(labels):
        raise ValueError(
            f"shards_per_node must be >= 1 with n_nodes * shards_per_node <= {len(labels)}, "
            f"got {shards_per_node}"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(labels))
    order = shuffled[np.argsort(labels[shuffled], kind="stable")]
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(n_nodes, shards_per_node)
    return _finish([np.concatenate([pieces[s] for s in row]) for row in deal])


def _scheme_arg(scheme: str, arg: str, conv: type[float] | type[int]) -> float:
    try:
        return conv(arg)
    except ValueError:
        raise _bad_scheme(scheme, f"cannot parse argument {arg!r}") from None


def _bad_scheme(scheme: str, why: str) -> ValueError:
    return ValueError(
        f"bad partition scheme {scheme!r}: {why}; accepted forms: " + ", ".join(SCHEME_FORMS)
    )


def _parse_scheme(scheme: str) -> tuple[str, float | None]:
    """`scheme`'s kind (lower case) and argument (None: none given); ValueError naming
    the accepted forms for a bad one."""
    kind, sep, arg = scheme.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind == "iid":
        if sep:
            raise _bad_scheme(scheme, "iid takes no argument")
        return kind, None
    if kind == "dirichlet":
        alpha = _scheme_arg(scheme, arg, float)
        if not (alpha > 0 and math.isfinite(alpha)):
            raise _bad_scheme(scheme, "alpha must be > 0")
        return kind, alpha
    if kind == "skew":
        major = _scheme_arg(scheme, arg, float) if sep else None
        if major is not None and not 0.0 <= major <= 1.0:
            raise _bad_scheme(scheme, "major must be in [0, 1]")
        return kind, major
    if kind == "shards":
        k = int(_scheme_arg(scheme, arg, int))
        if k < 1:
            raise _bad_scheme(scheme, "shards per node must be >= 1")
        return kind, k
    raise _bad_scheme(scheme, f"unknown kind {kind!r}")


def scheme_for_data(
    scheme: str, chosen: bool, labels: bool, task: str, data: str, label_column: str
) -> tuple[str, str]:
    """The scheme that shares `data` out, and a line saying why when it is not `scheme`:
    causal-LM data without a label column (`data.missing_label_column`) is shared out
    iid when `scheme` is a caller's default (as `workload.load_workload` does in
    process); a label-based scheme the user `chosen`, or declared `labels`, is a
    `DataError` with the hint. What a command checks before handing its scheme to
    daemons, which cannot tell a default from a choice."""
    from declora.node.data import missing_label_column

    if task != "lm" or scheme == "iid":
        return scheme, ""
    missing = missing_label_column(data, label_column)
    if missing is None:
        return scheme, ""
    name_it = "name its label column with --label-column"
    if chosen:
        raise DataError(
            f"{missing}; --partition-scheme {scheme} shares causal-LM data out by a label column",
            f"use --partition-scheme iid for unlabelled data (or {name_it})",
        )
    if labels:
        raise DataError(
            f"{missing}; --labels declares the classes of a label column",
            f"drop --labels for unlabelled data (or {name_it})",
        )
    return "iid", f"{missing}: sharing it out iid, not {scheme} (the default)"


def check_scheme(scheme: str) -> str:
    """`scheme` in its plain form (kind in lower case, no spaces) if it is one of
    `SCHEME_FORMS`, else ValueError naming the accepted forms; needs no data."""
    _parse_scheme(scheme)
    kind, sep, arg = scheme.strip().partition(":")
    return kind.strip().lower() + (f":{arg.strip()}" if sep else "")


def partition(scheme: str, labels: np.ndarray, n_nodes: int, seed: int) -> list[np.ndarray]:
    """Split ``labels`` by a scheme string (see ``SCHEME_FORMS``; kind case-insensitive).

    ``skew`` uses ``skew_proportions(n_nodes, max(labels) + 1, major)`` with
    ``label_proportions``. Bad schemes and ``n_nodes`` < 1 raise ``ValueError``; data
    that cannot be shared out so (``n_nodes`` above ``len(labels)``, a node left without
    rows) raises ``PartitionError``, a ``DataError`` with a hint.
    """
    labels = _check_labels(labels)
    kind, arg = _parse_scheme(scheme)
    if n_nodes > len(labels) and n_nodes >= 1:
        raise PartitionError(
            f"cannot share {len(labels)} training rows among {n_nodes} nodes: each needs at "
            "least one",
            "use " + SHARE_HINT,
        )
    _check_nodes(labels, n_nodes)
    try:
        if kind == "iid":
            return iid(labels, n_nodes, seed)
        if kind == "dirichlet":
            return dirichlet(labels, n_nodes, float(arg or 0), seed)
        if kind == "skew":
            major = 0.85 if arg is None else float(arg)
            props = skew_proportions(n_nodes, int(labels.max()) + 1, major)
            return label_proportions(labels, props, seed)
        return shards(labels, n_nodes, int(arg or 0), seed)
    except ValueError as exc:  # the data do not fit the scheme
        why = str(exc).split("; use ")[0]  # dirichlet's advice: in the hint
        raise PartitionError(
            f"--partition-scheme {scheme.strip()}: cannot share {len(labels)} training rows "
            f"among {n_nodes} nodes: {why}",
            "use " + ("a larger alpha, " if kind == "dirichlet" else "") + SHARE_HINT,
        ) from exc


def label_counts(labels: np.ndarray, parts: Sequence[np.ndarray], n_classes: int) -> np.ndarray:
    """int64 ``len(parts) x n_classes`` matrix: samples of each class held by each node."""
    labels = _check_labels(labels)
    if labels.size and labels.max() >= n_classes:
        raise ValueError(f"label {labels.max()} >= n_classes={n_classes}")
    out = np.zeros((len(parts), n_classes), dtype=np.int64)
    for i, idx in enumerate(parts):
        out[i] = np.bincount(labels[np.asarray(idx, dtype=np.int64)], minlength=n_classes)
    return out


def format_label_counts(counts: np.ndarray, class_names: Sequence[str] | None = None) -> str:
    """Plain-text table: a header, then one row per node with per-class counts and a total."""
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise ValueError(f"counts must be 2-D, got shape {counts.shape}")
    n_classes = counts.shape[1]
    names = [str(c) for c in range(n_classes)] if class_names is None else list(class_names)
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} classes")
    header = ["node", *names, "total"]
    rows = [
        [str(i), *(str(int(v)) for v in row), str(int(row.sum()))] for i, row in enumerate(counts)
    ]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    return "\n".join(lines)
