"""Gossip mixing matrices for a :class:`~declora.node.topology.Topology`.

Every builder returns a symmetric, doubly stochastic, non-negative ``n x n``
float64 matrix ``W`` supported on the graph (``W_ij > 0`` only for edges and the
diagonal) with a strictly positive diagonal, so for a connected graph
``second_eigenvalue(W) < 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np

from declora.node.topology import Topology

__all__ = [
    "MIXING_NAMES",
    "check_mixing_matrix",
    "laplacian_weights",
    "local_mh_weights",
    "metropolis_hastings",
    "mixing_matrix",
    "second_eigenvalue",
    "spectral_gap",
    "uniform_weights",
]

K = TypeVar("K", bound=Hashable)


def _fill_diagonal(w: np.ndarray) -> np.ndarray:
    np.fill_diagonal(w, 0.0)
    np.fill_diagonal(w, 1.0 - w.sum(axis=1))
    return w


def metropolis_hastings(topo: Topology) -> np.ndarray:
    """Metropolis-Hastings weights: ``W_ij = 1 / (1 + max(d_i, d_j))`` on edges.

    The diagonal takes the remainder, ``W_ii = 1 - sum_j W_ij >= 1 / (1 + d_i)``.
    """
    deg = topo.degrees()
    w = np.zeros((topo.n, topo.n), dtype=np.float64)
    for i, j in topo.edges:
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(deg[i], deg[j]))
    return _fill_diagonal(w)


def local_mh_weights(
    own_degree: int, neighbor_degrees: Mapping[K, int]
) -> tuple[float, dict[K, float]]:
    """One node's Metropolis-Hastings row from locally known degrees.

    Returns ``(self_weight, {neighbour: weight})`` with weight
    ``1 / (1 + max(d_own, d_k))``, where ``d_own = max(own_degree,
    len(neighbor_degrees))`` (so the self weight is always >= ``1/(1 + d_own)``
    even while the live degree lags the neighbour table). When every node
    passes its true degree and its neighbours' true degrees, the result equals
    the node's row of :func:`metropolis_hastings`; symmetry across nodes needs
    each node to advertise the same degree it uses here.
    Raises ``ValueError`` if ``own_degree < 0`` or any neighbour degree is < 1.
    """
    if own_degree < 0:
        raise ValueError(f"own_degree must be >= 0, got {own_degree}")
    for key, d in neighbor_degrees.items():
        if d < 1:
            raise ValueError(f"neighbour {key!r} has degree {d}; a neighbour's degree is >= 1")
    d_own = max(int(own_degree), len(neighbor_degrees))
    weights = {k: 1.0 / (1.0 + max(d_own, int(d))) for k, d in neighbor_degrees.items()}
    return 1.0 - sum(weights.values()), weights


def laplacian_weights(topo: Topology) -> np.ndarray:
    """Dec-LoRA's ``W = I - 2 L / (3 lambda_max(L))`` with ``L = D - A``.

    Eigenvalues of ``W`` lie in ``[1/3, 1]``. A graph without edges gives ``I``.
    """
    eye = np.eye(topo.n)
    if not topo.edges:
        return eye
    a = topo.adjacency()
    lap = np.diag(a.sum(axis=1)) - a
    lam_max = float(np.linalg.eigvalsh(lap)[-1])
    return _fill_diagonal(eye - (2.0 / (3.0 * lam_max)) * lap)


def uniform_weights(topo: Topology) -> np.ndarray:
    """``W_ij = 1 / (1 + d_max)`` on every edge; the diagonal takes the remainder."""
    deg = topo.degrees()
    d_max = int(deg.max()) if deg.size else 0
    return _fill_diagonal(topo.adjacency() / (1.0 + d_max))


_BUILDERS: dict[str, Callable[[Topology], np.ndarray]] = {
    "mh": metropolis_hastings,
    "laplacian": laplacian_weights,
    "uniform": uniform_weights,
}
MIXING_NAMES = tuple(_BUILDERS)


def mixing_matrix(name: str, topo: Topology) -> np.ndarray:
    """Mixing matrix by name: ``"mh"``, ``"laplacian"`` or ``"uniform"`` (case-insensitive)."""
    key = name.strip().lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown mixing matrix {name!r}; accepted: {', '.join(MIXING_NAMES)}")
    return _BUILDERS[key](topo)


def _as_symmetric(w: np.ndarray, atol: float) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"mixing matrix must be square, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("mixing matrix has non-finite entries")
    if not np.allclose(w, w.T, rtol=0.0, atol=atol):
        raise ValueError("mixing matrix is not symmetric")
    return w


def second_eigenvalue(w: np.ndarray) -> float:
    """Largest ``|lambda|`` of symmetric ``w`` after removing its top eigenvalue.

    For a mixing matrix this is the consensus contraction factor; it is ``< 1``
    for a connected graph and ``1`` (up to rounding) for a disconnected one.
    A ``1 x 1`` matrix gives ``0.0``. Raises ``ValueError`` if ``w`` is not
    square or not symmetric (within 1e-9).
    """
    w = _as_symmetric(w, 1e-9)
    eig = np.linalg.eigvalsh(w)  # ascending
    if eig.size <= 1:
        return 0.0
    return float(np.max(np.abs(eig[:-1])))


def spectral_gap(w: np.ndarray) -> float:
    """``1 - second_eigenvalue(w)``; positive iff gossip with ``w`` reaches consensus."""
    return 1.0 - second_eigenvalue(w)


GOSSIP_CONTRACTION = 0.5  # a training round's exchanges shrink disagreement at least this much
GOSSIP_STEPS_CAP = 4  # ...with at most this many exchanges a round


def gossip_steps_for(w: np.ndarray) -> int:
    """Exchanges per training round for mixing matrix `w`: the fewest g with
    second_eigenvalue(w)^g <= GOSSIP_CONTRACTION, at most GOSSIP_STEPS_CAP (and 1 for
    a graph that never mixes). A ring of 4 or a torus mixes fast enough in one
    exchange or two; a ring of 8 or a star of 6 needs the cap."""
    lam = second_eigenvalue(w)
    if lam <= GOSSIP_CONTRACTION or lam >= 1.0 - 1e-9:
        return 1
    steps = math.ceil(math.log(GOSSIP_CONTRACTION) / math.log(lam) - 1e-9)
    return int(min(max(steps, 1), GOSSIP_STEPS_CAP))


def check_mixing_matrix(w: np.ndarray, atol: float = 1e-9) -> None:
    """Raise ``ValueError`` unless ``w`` is square, finite, symmetric, has
    row and column sums of 1 and no entry below ``-atol`` (all within ``atol``)."""
    w = _as_symmetric(w, atol)
    if np.any(w < -atol):
        raise ValueError(f"mixing matrix has negative entries (min {w.min():.3g})")
    for axis, what in ((1, "row"), (0, "column")):
        err = np.abs(w.sum(axis=axis) - 1.0)
        if np.any(err > atol):
            raise ValueError(
                f"mixing matrix is not doubly stochastic: {what} sums off by up to {err.max():.3g}"
            )
