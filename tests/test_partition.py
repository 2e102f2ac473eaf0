from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from declora.node.partition import (
    PartitionError,
    dirichlet,
    format_label_counts,
    iid,
    label_counts,
    label_proportions,
    partition,
    shards,
    skew_proportions,
)

FAST = settings(max_examples=30, deadline=None)


def make_labels(n: int, n_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_classes, n)


def assert_valid(parts: list[np.ndarray], n_samples: int, n_nodes: int, *, cover: bool) -> None:
    assert len(parts) == n_nodes
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates
        assert p.size == 0 or (p[0] >= 0 and p[-1] < n_samples)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)  # disjoint
    if cover:
        np.testing.assert_array_equal(np.sort(joined), np.arange(n_samples))


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


labels_st = st.builds(
    make_labels, st.integers(60, 400), st.integers(1, 6), st.integers(0, 2**31 - 1)
)


@FAST
@given(labels_st, st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_iid(labels: np.ndarray, n_nodes: int, seed: int) -> None:
    parts = iid(labels, n_nodes, seed)
    assert_valid(parts, len(labels), n_nodes, cover=True)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert same(parts, iid(labels, n_nodes, seed))


@FAST
@given(labels_st, st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_shards(labels: np.ndarray, n_nodes: int, per_node: int, seed: int) -> None:
    parts = shards(labels, n_nodes, per_node, seed)
    assert_valid(parts, len(labels), n_nodes, cover=True)
    assert same(parts, shards(labels, n_nodes, per_node, seed))
    shard_len = len(labels) // (n_nodes * per_node)
    for p in parts:
        assert per_node * shard_len <= len(p) <= per_node * (shard_len + 1)


def test_shards_are_label_pure() -> None:
    labels = np.repeat(np.arange(10), 50)  # 10 classes x 50
    parts = shards(labels, 10, 2, seed=3)  # 20 shards of 25: each from a single class
    counts = label_counts(labels, parts, 10)
    assert np.all((counts > 0).sum(axis=1) <= 2)
    np.testing.assert_array_equal(counts.sum(axis=0), 50)


@FAST
@given(
    labels_st,
    st.integers(1, 6),
    st.floats(0.05, 100.0),
    st.integers(0, 2**31 - 1),
)
def test_dirichlet_valid_and_deterministic(
    labels: np.ndarray, n_nodes: int, alpha: float, seed: int
) -> None:
    try:
        parts = dirichlet(labels, n_nodes, alpha, seed, min_size=1)
    except ValueError as err:  # tiny alpha with several nodes may never give everyone data
        assert "tries" in str(err)
        return
    assert_valid(parts, len(labels), n_nodes, cover=False)
    assert all(len(p) >= 1 for p in parts)
    assert same(parts, dirichlet(labels, n_nodes, alpha, seed, min_size=1))


def _tv_from_global(labels: np.ndarray, parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    counts = label_counts(labels, parts, n_classes)
    local = counts / counts.sum(axis=1, keepdims=True)
    glob = np.bincount(labels, minlength=n_classes) / len(labels)
    return 0.5 * np.abs(local - glob).sum(axis=1)


def test_dirichlet_small_alpha_is_skewed_large_alpha_near_uniform() -> None:
    labels = make_labels(2000, 4, seed=0)
    for seed in range(3):
        skewed = dirichlet(labels, 4, 0.05, seed)
        assert all(len(p) >= 8 for p in skewed)  # default min_size
        counts = label_counts(labels, skewed, 4)
        dominant = counts.max(axis=1) / counts.sum(axis=1)
        assert np.mean(dominant > 0.6) >= 0.5  # most nodes dominated by one class
        assert _tv_from_global(labels, skewed, 4).mean() > 0.4
        flat = dirichlet(labels, 4, 1e5, seed)
        assert _tv_from_global(labels, flat, 4).max() < 0.05


def test_dirichlet_errors() -> None:
    labels = make_labels(100, 2, seed=1)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet(labels, 4, 0.0, 0)
    with pytest.raises(ValueError, match="min_size"):
        dirichlet(labels, 4, 1.0, 0, min_size=26)
    with pytest.raises(ValueError, match="tries"):
        dirichlet(labels, 10, 0.001, 0, min_size=10, max_tries=5)


def test_skew_proportions_paper_matrix() -> None:
    assert skew_proportions(3, 2).tolist() == [[0.15, 0.85], [0.85, 0.15], [0.5, 0.5]]
    assert skew_proportions(2, 2).tolist() == [[0.15, 0.85], [0.85, 0.15]]
    assert skew_proportions(2, 1).tolist() == [[1.0], [1.0]]
    p = skew_proportions(4, 3, major=0.7)
    np.testing.assert_allclose(p[0], [0.15, 0.7, 0.15])
    np.testing.assert_allclose(p[2], [0.7, 0.15, 0.15])
    np.testing.assert_allclose(p[3], p[0])
    with pytest.raises(ValueError):
        skew_proportions(3, 2, major=1.2)


@FAST
@given(st.integers(1, 9), st.integers(1, 6), st.floats(0.0, 1.0))
def test_skew_proportions_rows(n_nodes: int, n_classes: int, major: float) -> None:
    p = skew_proportions(n_nodes, n_classes, major)
    assert p.shape == (n_nodes, n_classes)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    for i in range(n_nodes):
        if n_classes == 2 and n_nodes % 2 == 1 and i == n_nodes - 1:
            np.testing.assert_array_equal(p[i], [0.5, 0.5])
        elif n_classes > 1:
            assert p[i, (i + 1) % n_classes] == major


@FAST
@given(
    st.integers(100, 600),
    st.integers(2, 5),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
)
def test_label_proportions_realises_targets(
    n_samples: int, n_classes: int, n_nodes: int, seed: int
) -> None:
    labels = make_labels(n_samples, n_classes, seed)
    rng = np.random.default_rng(seed + 1)
    props = rng.dirichlet(np.ones(n_classes), size=n_nodes)
    parts = label_proportions(labels, props, seed)
    assert_valid(parts, n_samples, n_nodes, cover=False)
    sizes = {len(p) for p in parts}
    assert len(sizes) == 1
    m = sizes.pop()
    counts = label_counts(labels, parts, n_classes)
    assert np.all(np.abs(counts - m * props) < 1.0)
    assert same(parts, label_proportions(labels, props, seed))
    # maximal: either every node is as large as possible, or some requested class is
    # (nearly) used up -- rounding can shift a column by < n_nodes per step
    available = np.bincount(labels, minlength=n_classes)
    leftover = available - counts.sum(axis=0)
    demand = props.sum(axis=0)
    assert np.all(leftover >= 0)
    assert m == n_samples // n_nodes or np.any((demand > 0) & (leftover < demand + 2 * n_nodes))


def test_label_proportions_paper_split() -> None:
    labels = np.array([0] * 600 + [1] * 400)
    parts = label_proportions(labels, skew_proportions(3, 2), seed=0)
    counts = label_counts(labels, parts, 2)
    # class 1 limits m to about 400 / 1.5; rounding lets m = 267 fit exactly
    # (40.05 -> 40, 226.95 -> 227, 133.5/133.5 -> 134/133), while 268 needs 402 of class 1
    assert [len(p) for p in parts] == [267, 267, 267]
    np.testing.assert_array_equal(counts, [[40, 227], [227, 40], [134, 133]])
    assert counts[:, 1].sum() == 400


def test_label_proportions_errors() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="sum to 1"):
        label_proportions(labels, np.array([[0.5, 0.2, 0.2]]), 0)
    with pytest.raises(ValueError, match="no column"):
        label_proportions(labels, np.array([[0.5, 0.5]]), 0)
    with pytest.raises(ValueError, match="absent"):
        label_proportions(labels, np.array([[0, 0, 0, 1.0]]), 0)
    with pytest.raises(ValueError, match="n_nodes"):
        label_proportions(labels, np.full((6, 3), 1 / 3), 0)


def test_partition_dispatch() -> None:
    labels = make_labels(300, 2, seed=5)
    assert same(partition("iid", labels, 3, 1), iid(labels, 3, 1))
    assert same(partition("dirichlet:0.5", labels, 3, 1), dirichlet(labels, 3, 0.5, 1))
    assert same(partition("shards:2", labels, 3, 1), shards(labels, 3, 2, 1))
    assert same(
        partition("skew", labels, 3, 1), label_proportions(labels, skew_proportions(3, 2), 1)
    )
    assert same(
        partition(" SKEW:0.7 ", labels, 3, 1),
        label_proportions(labels, skew_proportions(3, 2, 0.7), 1),
    )


@pytest.mark.parametrize(
    "scheme",
    ["", "noniid", "iid:2", "dirichlet", "dirichlet:x", "dirichlet:0", "skew:2", "shards:0"],
)
def test_partition_rejects_bad_schemes(scheme: str) -> None:
    with pytest.raises(ValueError, match="accepted forms") as info:
        partition(scheme, make_labels(50, 2, 0), 2, 0)
    assert "dirichlet:ALPHA" in str(info.value)


@pytest.mark.parametrize("n_nodes", [0, -1, 51])
def test_partition_rejects_bad_node_counts(n_nodes: int) -> None:
    with pytest.raises(ValueError, match="n_nodes" if n_nodes < 1 else "among 51 nodes"):
        partition("iid", make_labels(50, 2, 0), n_nodes, 0)


def test_no_rows_for_nodes_is_the_users_error() -> None:
    """No training row at all (everything deduplicated or held out): a PartitionError
    (the user's, with a hint), not "n_nodes must be in 1..0"."""
    with pytest.raises(PartitionError, match="cannot share 0 training rows among 2 nodes"):
        partition("iid", np.array([], dtype=np.int64), 2, 0)


def test_label_counts_and_format() -> None:
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    counts = label_counts(labels, parts, 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 3]])
    text = format_label_counts(counts, ["a", "b", "c"])
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["node", "a", "b", "c", "total"]
    assert lines[1].split() == ["0", "1", "1", "0", "2"]
    assert lines[2].split() == ["1", "0", "1", "3", "4"]
    assert format_label_counts(counts).splitlines()[0].split() == ["node", "0", "1", "2", "total"]
    with pytest.raises(ValueError):
        format_label_counts(counts, ["a"])
    with pytest.raises(ValueError):
        label_counts(labels, parts, 2)
