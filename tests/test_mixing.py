from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from declora.node.mixing import (
    MIXING_NAMES,
    check_mixing_matrix,
    laplacian_weights,
    local_mh_weights,
    metropolis_hastings,
    mixing_matrix,
    second_eigenvalue,
    spectral_gap,
    uniform_weights,
)
from declora.node.topology import (
    Topology,
    complete,
    erdos_renyi,
    from_edges,
    ring,
    star,
    torus,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def connected_topologies(draw: st.DrawFn) -> Topology:
    n = draw(st.integers(1, 16))
    kind = draw(st.sampled_from(["ring", "complete", "star", "torus", "er"]))
    if kind == "ring":
        return ring(n)
    if kind == "complete":
        return complete(n)
    if kind == "star":
        return star(n)
    if kind == "torus":
        return torus(draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return erdos_renyi(n, draw(st.floats(0.2, 1.0)), draw(st.integers(0, 10**6)))


@st.composite
def any_topologies(draw: st.DrawFn) -> Topology:
    """Random graphs, frequently disconnected."""
    n = draw(st.integers(1, 14))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    mask = draw(st.lists(st.booleans(), min_size=len(pairs), max_size=len(pairs)))
    return from_edges(n, [e for e, keep in zip(pairs, mask, strict=True) if keep])


def test_mh_small_example() -> None:
    # path 0-1-2: degrees 1, 2, 1
    w = metropolis_hastings(from_edges(3, [(0, 1), (1, 2)]))
    third = 1 / 3
    expected = np.array(
        [[1 - third, third, 0.0], [third, 1 - 2 * third, third], [0.0, third, 1 - third]]
    )
    np.testing.assert_allclose(w, expected, atol=1e-15)


def test_laplacian_matches_paper_formula() -> None:
    t = star(5)
    a = t.adjacency()
    lap = np.diag(a.sum(1)) - a
    lam = np.linalg.eigvalsh(lap).max()
    np.testing.assert_allclose(laplacian_weights(t), np.eye(5) - 2 * lap / (3 * lam), atol=1e-12)
    eig = np.linalg.eigvalsh(laplacian_weights(t))
    assert eig.min() >= 1 / 3 - 1e-12
    np.testing.assert_array_equal(laplacian_weights(from_edges(3, [])), np.eye(3))


def test_uniform_weights_value() -> None:
    w = uniform_weights(star(4))  # d_max = 3
    assert w[0, 1] == pytest.approx(0.25)
    assert w[1, 2] == 0.0
    assert w[0, 0] == pytest.approx(0.25)
    assert w[1, 1] == pytest.approx(0.75)


@FAST
@given(any_topologies(), st.sampled_from(MIXING_NAMES))
def test_mixing_matrices_are_valid(topo: Topology, name: str) -> None:
    w = mixing_matrix(name, topo)
    assert w.shape == (topo.n, topo.n)
    np.testing.assert_array_equal(w, w.T)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.diag(w) > 0)
    off_support = (topo.adjacency() == 0) & ~np.eye(topo.n, dtype=bool)
    assert np.all(w[off_support] == 0)
    check_mixing_matrix(w)


@FAST
@given(connected_topologies(), st.sampled_from(MIXING_NAMES))
def test_connected_graphs_have_positive_gap(topo: Topology, name: str) -> None:
    w = mixing_matrix(name, topo)
    lam2 = second_eigenvalue(w)
    assert 0.0 <= lam2 < 1.0 - 1e-9
    assert spectral_gap(w) == pytest.approx(1.0 - lam2)
    assert spectral_gap(w) > 0
    # gossip preserves the mean and contracts the disagreement by lam2 per round
    x = np.arange(topo.n, dtype=float) ** 2
    dev0 = np.linalg.norm(x - x.mean())
    y = np.linalg.matrix_power(w, 50) @ x
    assert y.mean() == pytest.approx(x.mean())
    assert np.linalg.norm(y - x.mean()) <= lam2**50 * dev0 + 1e-9 * (1 + dev0)


@FAST
@given(any_topologies(), st.sampled_from(MIXING_NAMES))
def test_second_eigenvalue_detects_disconnection(topo: Topology, name: str) -> None:
    lam2 = second_eigenvalue(mixing_matrix(name, topo))
    if topo.is_connected():
        assert lam2 < 1.0 - 1e-9
    else:
        assert lam2 == pytest.approx(1.0, abs=1e-9)


@FAST
@given(any_topologies())
def test_local_mh_reproduces_global_rows(topo: Topology) -> None:
    w = metropolis_hastings(topo)
    for i in range(topo.n):
        nbrs = {f"node-{j}": topo.degree(j) for j in topo.neighbors(i)}
        self_w, weights = local_mh_weights(topo.degree(i), nbrs)
        assert self_w == pytest.approx(w[i, i], abs=1e-12)
        assert set(weights) == set(nbrs)
        for j in topo.neighbors(i):
            assert weights[f"node-{j}"] == pytest.approx(w[i, j], abs=1e-15)


def test_local_mh_edge_cases() -> None:
    assert local_mh_weights(0, {}) == (1.0, {})
    # own degree larger than the known table: unknown links keep their share on the diagonal
    self_w, weights = local_mh_weights(3, {"a": 1})
    assert weights == {"a": 0.25}
    assert self_w == pytest.approx(0.75)
    # a neighbour's advertised degree may count links this node does not see
    self_w, weights = local_mh_weights(1, {"a": 5})
    assert weights == {"a": pytest.approx(1 / 6)}
    assert self_w == pytest.approx(5 / 6)
    # live degree lagging the table never yields a negative self weight
    self_w, weights = local_mh_weights(0, {"a": 1, "b": 1, "c": 1})
    assert all(v == pytest.approx(0.25) for v in weights.values())
    assert self_w == pytest.approx(0.25)
    with pytest.raises(ValueError, match="own_degree"):
        local_mh_weights(-1, {})
    with pytest.raises(ValueError, match="'b'"):
        local_mh_weights(2, {"a": 1, "b": 0})


def test_mixing_matrix_names() -> None:
    t = ring(5)
    np.testing.assert_array_equal(mixing_matrix("MH", t), metropolis_hastings(t))
    np.testing.assert_array_equal(mixing_matrix("laplacian", t), laplacian_weights(t))
    np.testing.assert_array_equal(mixing_matrix("uniform", t), uniform_weights(t))
    with pytest.raises(ValueError, match="mh, laplacian, uniform"):
        mixing_matrix("max-degree", t)


def test_second_eigenvalue_known_values() -> None:
    n = 6
    assert second_eigenvalue(np.full((n, n), 1 / n)) == pytest.approx(0.0, abs=1e-12)
    assert second_eigenvalue(np.eye(n)) == pytest.approx(1.0)
    assert second_eigenvalue(np.eye(1)) == 0.0
    # ring under MH: eigenvalues 1/3 + 2/3 cos(2 pi k / n)
    expected = max(abs(1 / 3 + 2 / 3 * np.cos(2 * np.pi * k / n)) for k in range(1, n))
    assert second_eigenvalue(metropolis_hastings(ring(n))) == pytest.approx(expected)
    # -1 eigenvalue (a swap) counts: no consensus
    assert second_eigenvalue(np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="symmetric"):
        second_eigenvalue(np.array([[0.5, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        second_eigenvalue(np.ones((2, 3)))


def test_check_mixing_matrix_rejects() -> None:
    check_mixing_matrix(np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="symmetric"):
        check_mixing_matrix(np.array([[0.5, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="doubly stochastic"):
        check_mixing_matrix(np.array([[0.5, 0.2], [0.2, 0.5]]))
    with pytest.raises(ValueError, match="negative"):
        check_mixing_matrix(np.array([[1.5, -0.5], [-0.5, 1.5]]))
    with pytest.raises(ValueError, match="square"):
        check_mixing_matrix(np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        check_mixing_matrix(np.array([[np.nan, 1.0], [1.0, 0.0]]))
