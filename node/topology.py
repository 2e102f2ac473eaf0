"""Communication graphs for decentralized training.

A :class:`Topology` is an immutable undirected simple graph on nodes ``0..n-1``.
Builders return topologies whose ``name`` is a canonical spec string, so that
``from_spec(t.name, t.n, seed)`` rebuilds ``t`` (for ``er`` with the same seed).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "SPEC_FORMS",
    "Topology",
    "complete",
    "erdos_renyi",
    "from_edge_list_file",
    "from_edges",
    "from_spec",
    "ring",
    "star",
    "torus",
]

SPEC_FORMS = (
    "ring",
    "complete",
    "er:P (or erdos-renyi:P), 0 <= P <= 1",
    "torus (near-square) or torus:RxC with R*C == n",
    "star",
    "edges:PATH",
)


def _as_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_n(n: object) -> int:
    n_int = _as_index(n, "number of nodes n")
    if n_int < 1:
        raise ValueError(f"number of nodes n must be >= 1, got {n_int}")
    return n_int


@dataclass(frozen=True)
class Topology:
    """Undirected simple graph on nodes ``0..n-1``.

    ``edges`` may be given as any iterable of pairs in either orientation; it is
    normalised to a ``frozenset`` of ``(i, j)`` with ``i < j`` (duplicates merge).
    Self loops, out-of-range indices and ``n < 1`` raise ``ValueError``.
    Equality and hashing depend on ``n`` and ``edges`` only; ``name`` is display.
    """

    n: int
    edges: frozenset[tuple[int, int]] = frozenset()
    name: str = field(default="custom", compare=False)
    _nbrs: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        n = _check_n(self.n)
        norm: set[tuple[int, int]] = set()
        for edge in self.edges:
            try:
                a, b = edge
            except (TypeError, ValueError):
                raise ValueError(f"edge {edge!r} is not a pair of node indices") from None
            i = _as_index(a, f"edge {edge!r} endpoint")
            j = _as_index(b, f"edge {edge!r} endpoint")
            if not (0 <= i < n and 0 <= j < n):
                raise ValueError(f"edge {edge!r} has an endpoint outside 0..{n - 1}")
            if i == j:
                raise ValueError(f"edge {edge!r} is a self loop")
            norm.add((i, j) if i < j else (j, i))
        adj: list[list[int]] = [[] for _ in range(n)]
        for i, j in norm:
            adj[i].append(j)
            adj[j].append(i)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "edges", frozenset(norm))
        object.__setattr__(self, "_nbrs", tuple(tuple(sorted(a)) for a in adj))

    def _check_node(self, i: int) -> int:
        idx = _as_index(i, "node index")
        if not 0 <= idx < self.n:
            raise ValueError(f"node index {idx} outside 0..{self.n - 1}")
        return idx

    def neighbors(self, i: int) -> tuple[int, ...]:
        """Neighbours of node ``i`` in ascending order."""
        return self._nbrs[self._check_node(i)]

    def degree(self, i: int) -> int:
        """Number of neighbours of node ``i``."""
        return len(self._nbrs[self._check_node(i)])

    def degrees(self) -> np.ndarray:
        """int64 array of length ``n`` with every node's degree."""
        return np.array([len(a) for a in self._nbrs], dtype=np.int64)

    def adjacency(self) -> np.ndarray:
        """Symmetric ``n x n`` float64 0/1 adjacency matrix with a zero diagonal."""
        a = np.zeros((self.n, self.n), dtype=np.float64)
        if self.edges:
            idx = np.array(sorted(self.edges), dtype=np.int64)
            a[idx[:, 0], idx[:, 1]] = 1.0
            a[idx[:, 1], idx[:, 0]] = 1.0
        return a

    def is_connected(self) -> bool:
        """True iff every node is reachable from node 0 (a single node is connected)."""
        seen = [False] * self.n
        seen[0] = True
        queue = deque([0])
        count = 1
        while queue:
            for j in self._nbrs[queue.popleft()]:
                if not seen[j]:
                    seen[j] = True
                    count += 1
                    queue.append(j)
        return count == self.n

    @property
    def num_edges(self) -> int:
        """Number of undirected edges."""
        return len(self.edges)


def from_edges(n: int, edges: Iterable[tuple[int, int]], name: str = "custom") -> Topology:
    """Topology on ``n`` nodes with the given undirected edges (see :class:`Topology`)."""
    return Topology(n=n, edges=frozenset(edges), name=name)


def ring(n: int) -> Topology:
    """Cycle ``0-1-...-(n-1)-0``; ``ring(2)`` is one edge and ``ring(1)`` has none."""
    n = _check_n(n)
    edges = {(i, (i + 1) % n) for i in range(n)} if n > 1 else set()
    return from_edges(n, edges, name="ring")


def complete(n: int) -> Topology:
    """Complete graph K_n."""
    n = _check_n(n)
    return from_edges(n, ((i, j) for i in range(n) for j in range(i + 1, n)), name="complete")


def star(n: int) -> Topology:
    """Star with hub 0 joined to every other node."""
    n = _check_n(n)
    return from_edges(n, ((0, i) for i in range(1, n)), name="star")


def torus(rows: int, cols: int) -> Topology:
    """2-D torus grid; node ``(r, c)`` has index ``r * cols + c``.

    Wrap-around links that would duplicate an edge or form a self loop (a side
    of length 1 or 2) are dropped, so a side contributes degree 0, 1 or 2 when
    its length is 1, 2 or >= 3.
    """
    rows = _as_index(rows, "torus rows")
    cols = _as_index(cols, "torus cols")
    if rows < 1 or cols < 1:
        raise ValueError(f"torus sides must be >= 1, got {rows}x{cols}")
    edges: set[tuple[int, int]] = set()
    for r in range(rows):
        for c in range(cols):
            u = r * cols + c
            for v in (r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c):
                if u != v:
                    edges.add((min(u, v), max(u, v)))
    return from_edges(rows * cols, edges, name=f"torus:{rows}x{cols}")


def erdos_renyi(n: int, p: float, seed: int, max_tries: int = 1000) -> Topology:
    """Connected G(n, p) sample.

    Draws G(n, p) from ``np.random.default_rng(seed)`` until the graph is
    connected; deterministic for a given ``(n, p, seed)``. Raises ``ValueError``
    when ``p`` is outside [0, 1] or no connected sample is found in ``max_tries``.
    """
    n = _check_n(n)
    p = float(p)
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"edge probability p must be in [0, 1], got {p}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    name = f"er:{p!r}"
    if n == 1:
        return from_edges(1, (), name=name)
    rng = np.random.default_rng(seed)
    iu, ju = np.triu_indices(n, k=1)
    for _ in range(max_tries):
        keep = rng.random(iu.size) < p
        topo = from_edges(n, zip(iu[keep].tolist(), ju[keep].tolist(), strict=True), name=name)
        if topo.is_connected():
            return topo
    raise ValueError(
        f"no connected G(n={n}, p={p}) sample in {max_tries} tries (seed={seed}); increase p"
    )


def from_edge_list_file(path: str | Path, n: int | None = None) -> Topology:
    """Read an edge list: one ``i j`` pair per line; ``#`` starts a comment.

    ``n`` defaults to the largest index + 1; when given, indices must lie in
    ``0..n-1``. A file that cannot be read (missing, a folder, not text) raises
    ``ValueError`` naming it; malformed lines raise ``ValueError`` naming the line
    number; an edge outside ``0..n-1`` or a self loop, naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"edge list {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"edge list {path} is a folder, not a file of 'i j' lines") from None
    except UnicodeDecodeError:
        raise ValueError(f"edge list {path} is not a text file of 'i j' lines") from None
    except OSError as exc:
        raise ValueError(f"edge list {path} cannot be read: {exc.strerror or exc}") from None
    edges: list[tuple[int, int]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            edges.append((int(parts[0]), int(parts[1])))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 'i j', got {raw!r}") from None
    if n is None:
        if not edges:
            raise ValueError(f"{path}: no edges and no n given")
        n = max(max(e) for e in edges) + 1
    try:
        return from_edges(n, edges, name=f"edges:{path}")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _near_square(n: int) -> tuple[int, int]:
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def _bad_spec(spec: str, why: str) -> ValueError:
    return ValueError(
        f"bad topology spec {spec!r}: {why}; accepted forms: " + ", ".join(SPEC_FORMS)
    )


def from_spec(spec: str, n: int, seed: int = 0) -> Topology:
    """Build a topology on ``n`` nodes from a spec string (see ``SPEC_FORMS``).

    The kind is case-insensitive; ``seed`` only matters for ``er``. Unknown or
    malformed specs raise ``ValueError`` listing the accepted forms.
    """
    n = _check_n(n)
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.strip().lower()
    arg = arg.strip()
    if kind in ("ring", "complete", "star"):
        if sep:
            raise _bad_spec(spec, f"{kind!r} takes no argument")
        return {"ring": ring, "complete": complete, "star": star}[kind](n)
    if kind in ("er", "erdos-renyi", "erdos_renyi"):
        try:
            p = float(arg)
        except ValueError:
            raise _bad_spec(spec, "er needs a probability, e.g. er:0.3") from None
        if not 0.0 <= p <= 1.0:
            raise _bad_spec(spec, f"probability {p} outside [0, 1]")
        return erdos_renyi(n, p, seed)
    if kind == "torus":
        if not sep:
            return torus(*_near_square(n))
        r_s, x, c_s = arg.lower().partition("x")
        try:
            rows, cols = int(r_s), int(c_s)
        except ValueError:
            raise _bad_spec(spec, "torus size must look like torus:RxC") from None
        if not x or rows < 1 or cols < 1 or rows * cols != n:
            raise _bad_spec(spec, f"torus:{arg} does not have n={n} nodes")
        return torus(rows, cols)
    if kind == "edges":
        if not arg:
            raise _bad_spec(spec, "edges needs a file path, e.g. edges:graph.txt")
        return from_edge_list_file(arg, n)
    raise _bad_spec(spec, f"unknown kind {kind!r}")
