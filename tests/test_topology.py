from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from declora.node.topology import (
    Topology,
    complete,
    erdos_renyi,
    from_edge_list_file,
    from_edges,
    from_spec,
    ring,
    star,
    torus,
)

FAST = settings(max_examples=40, deadline=None)


def test_edges_are_normalised_and_deduplicated() -> None:
    t = from_edges(4, [(2, 0), (0, 2), (3, 1)])
    assert t.edges == frozenset({(0, 2), (1, 3)})
    assert t.neighbors(0) == (2,)
    assert t.neighbors(1) == (3,)
    assert t.degree(2) == 1
    assert t.num_edges == 2
    assert t.name == "custom"


@pytest.mark.parametrize(
    ("n", "edges", "match"),
    [
        (0, [], "n must be >= 1"),
        (3, [(0, 3)], "outside 0..2"),
        (3, [(-1, 2)], "outside 0..2"),
        (3, [(1, 1)], "self loop"),
        (3, [(0, 1, 2)], "not a pair"),
        (3, [(0.5, 1)], "integer"),
    ],
)
def test_invalid_topologies_raise(n: int, edges: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Topology(n=n, edges=frozenset(tuple(e) for e in edges))


def test_neighbors_rejects_bad_index() -> None:
    with pytest.raises(ValueError):
        ring(3).neighbors(3)


def test_equality_ignores_name() -> None:
    assert ring(3) == complete(3)
    assert ring(3).name == "ring" and complete(3).name == "complete"
    assert hash(ring(3)) == hash(complete(3))
    assert ring(4) != complete(4)


def test_small_rings() -> None:
    assert ring(1).edges == frozenset()
    assert ring(1).is_connected()
    assert ring(2).edges == frozenset({(0, 1)})
    assert ring(3).edges == frozenset({(0, 1), (1, 2), (0, 2)})
    for builder in (ring, complete, star):
        with pytest.raises(ValueError):
            builder(0)


def test_adjacency_matches_edges() -> None:
    t = from_edges(4, [(0, 1), (1, 2)])
    a = t.adjacency()
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 0] = expected[1, 2] = expected[2, 1] = 1.0
    np.testing.assert_array_equal(a, expected)
    np.testing.assert_array_equal(t.degrees(), [1, 2, 1, 0])
    assert not t.is_connected()


@FAST
@given(st.integers(1, 40))
def test_ring_star_complete_degrees(n: int) -> None:
    r, s, c = ring(n), star(n), complete(n)
    expected_ring = 0 if n == 1 else (1 if n == 2 else 2)
    assert r.degrees().tolist() == [expected_ring] * n
    assert r.num_edges == (0 if n == 1 else (1 if n == 2 else n))
    assert s.degree(0) == n - 1
    assert all(s.degree(i) == 1 for i in range(1, n))
    assert s.neighbors(0) == tuple(range(1, n))
    assert c.degrees().tolist() == [n - 1] * n
    assert c.num_edges == n * (n - 1) // 2
    assert r.is_connected() and s.is_connected() and c.is_connected()
    np.testing.assert_array_equal(c.adjacency().sum(axis=1), c.degrees())


@FAST
@given(st.integers(1, 7), st.integers(1, 7))
def test_torus_degrees(rows: int, cols: int) -> None:
    t = torus(rows, cols)

    def side(k: int) -> int:
        return {1: 0, 2: 1}.get(k, 2)

    assert t.n == rows * cols
    assert t.degrees().tolist() == [side(rows) + side(cols)] * (rows * cols)
    assert t.num_edges == rows * cols * (side(rows) + side(cols)) // 2
    assert t.is_connected()
    assert t.name == f"torus:{rows}x{cols}"


def test_torus_layout() -> None:
    t = torus(3, 4)
    assert t.neighbors(0) == (1, 3, 4, 8)
    assert t.neighbors(5) == (1, 4, 6, 9)
    assert torus(1, 5) == ring(5)
    assert torus(2, 2).edges == frozenset({(0, 1), (0, 2), (1, 3), (2, 3)})  # a 4-cycle
    assert torus(1, 1).edges == frozenset()


@FAST
@given(st.integers(1, 25), st.floats(0.15, 1.0), st.integers(0, 2**32 - 1))
def test_erdos_renyi_connected_and_deterministic(n: int, p: float, seed: int) -> None:
    t = erdos_renyi(n, p, seed)
    assert t.n == n
    assert t.is_connected()
    assert erdos_renyi(n, p, seed) == t
    assert t.name == f"er:{p!r}"


def test_erdos_renyi_seed_matters_and_errors() -> None:
    graphs = {erdos_renyi(12, 0.3, s) for s in range(10)}
    assert len(graphs) > 1
    assert erdos_renyi(6, 1.0, 0) == complete(6)
    with pytest.raises(ValueError, match="no connected"):
        erdos_renyi(5, 0.0, 0, max_tries=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        erdos_renyi(5, 1.5, 0)


def test_edge_list_file(tmp_path: Path) -> None:
    path = tmp_path / "g.txt"
    path.write_text("# a path\n0 1\n\n1 2  # middle\n 2 3\n")
    t = from_edge_list_file(path)
    assert t.n == 4
    assert t.edges == frozenset({(0, 1), (1, 2), (2, 3)})
    assert from_edge_list_file(path, n=6).n == 6
    with pytest.raises(ValueError, match="outside"):
        from_edge_list_file(path, n=3)
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1\n1 two\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2"):
        from_edge_list_file(bad)
    assert from_spec(f"edges:{path}", 4) == t
    assert from_spec(f"edges:{path}", 4).name == f"edges:{path}"


def test_from_spec_forms() -> None:
    assert from_spec("ring", 5) == ring(5)
    assert from_spec(" Complete ", 4) == complete(4)
    assert from_spec("star", 6) == star(6)
    assert from_spec("er:0.3", 10, seed=7) == erdos_renyi(10, 0.3, 7)
    assert from_spec("erdos-renyi:0.3", 10, seed=7) == erdos_renyi(10, 0.3, 7)
    assert from_spec("torus", 12).name == "torus:3x4"
    assert from_spec("torus", 16).name == "torus:4x4"
    assert from_spec("torus", 7).name == "torus:1x7"
    assert from_spec("torus:2x4", 8) == torus(2, 4)


@pytest.mark.parametrize(
    "spec",
    ["", "mesh", "er", "er:x", "er:1.5", "torus:3x3", "torus:3", "ring:2", "edges:", "star:1"],
)
def test_from_spec_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="accepted forms") as info:
        from_spec(spec, 8)
    assert "torus:RxC" in str(info.value)


def test_from_spec_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match="n must be >= 1"):
        from_spec("ring", 0)


@FAST
@given(
    st.sampled_from(["ring", "complete", "star", "torus", "er:0.4", "er:1.0"]),
    st.integers(1, 20),
    st.integers(0, 1000),
)
def test_from_spec_round_trips_through_name(spec: str, n: int, seed: int) -> None:
    t = from_spec(spec, n, seed)
    again = from_spec(t.name, t.n, seed)
    assert again == t
    assert again.name == t.name


def write_edge_list(path: Path, content: str | bytes | None) -> None:
    """`path` as a case of a bad edge list: "folder" a folder, bytes or text written
    as given, None absent."""
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("folder", "is a folder"),
        (b"\xff\xfe\x00\x81", "is not a text file"),
        ("0 1\n1 9\n", "endpoint outside 0..3"),
        ("2 2\n", "self loop"),
    ],
)
def test_an_unreadable_or_impossible_edge_list_is_a_value_error(
    tmp_path: Path, content: str | bytes | None, match: str
) -> None:
    """`lab`/`simulate` turn a ValueError into a configuration error (exit 2); an
    OSError would be a traceback. Each names the file."""
    path = tmp_path / "graph.txt"
    write_edge_list(path, content)
    for build in (lambda: from_edge_list_file(path, n=4), lambda: from_spec(f"edges:{path}", 4)):
        with pytest.raises(ValueError, match=match) as info:
            build()
        assert str(path) in str(info.value)
