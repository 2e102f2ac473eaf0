"""mDNS neighbour choice at size: the live graph ends up the chosen one, connected.

Nodes that start in waves hear only their own wave at first, choose all of it (at most
`--max-neighbors`) and fill their slots with it: cliques. Before, once every node
heard everyone, the dials of the peers `select_neighbors` chose across cliques were
refused ("node has its maximum of neighbours": every live peer was a discovered, so
configured, one) and the swarm stayed split for good, training one adapter a clique
and saying nothing. Now a configured newcomer this node chose takes the slot of a
live peer it did not choose (`PeerTable.displaced`). These checks run real
`PeerTable`s in one process; `bench/bench_scale.py --mode mdns --stagger S` measures
real daemons.
"""

from __future__ import annotations

from types import SimpleNamespace

from declora.node.daemon.peers import PeerTable
from declora.node.daemon.state import Progress
from declora.node.discovery import PeerInfo, select_neighbors
from declora.node.metrics import NodeMetrics
from declora.proto import pb


def table(max_neighbors: int) -> PeerTable:
    node = SimpleNamespace(add_peer=lambda pid: None, forget_peer=lambda pid: None)
    return PeerTable(node, Progress(), None, NodeMetrics(), max_neighbors, 1.0)  # type: ignore[arg-type]


def address(i: int) -> str:
    return f"127.0.0.1:{7000 + i}"


def hello(i: int) -> pb.Hello:
    return pb.Hello(node_id=f"n{i:02d}", listen_address=address(i))


def components(n: int, edges: set[tuple[int, int]]) -> int:
    """Connected components of the graph on nodes 0..n-1."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in edges:
        parent[find(i)] = find(j)
    return len({find(i) for i in range(n)})


class Swarm:
    """`n` peer tables; each node hears `heard[i]` (indices) and chooses among them as
    an mDNS node does (`select_neighbors`)."""

    def __init__(self, n: int, k: int) -> None:
        self.n, self.k = n, k
        self.tables = [table(k) for _ in range(n)]
        self.heard: list[set[int]] = [set() for _ in range(n)]
        for i, t in enumerate(self.tables):
            t.chosen = lambda i=i: {p.address for p in self.choice(i)}  # type: ignore[misc]

    def choice(self, i: int) -> list[PeerInfo]:
        seen = [PeerInfo(address(j), f"n{j:02d}") for j in self.heard[i]]
        return select_neighbors(seen, f"n{i:02d}", self.k)

    def dial(self, i: int, j: int) -> None:
        """i dials j (a discovered address: configured on both sides); a side that
        does not take the other in leaves the other without it (its push fails)."""
        a, b = self.tables[i], self.tables[j]
        if b.admit(hello(i), configured=True) is None:
            return
        if a.admit(hello(j), dialled=address(j), configured=True) is None:
            b.drop(b.peers[f"n{i:02d}"], "not taken in", quiet=True)

    def settle(self) -> None:
        """Each node dials the chosen peers it is not live with; links kept by one side
        only are dropped there (as a refused push would); until nothing changes."""
        for _ in range(4 * self.n):
            before = self.edges()
            for i in range(self.n):
                live = {p.address for p in self.tables[i].live}
                for peer in self.choice(i):
                    if peer.address not in live:
                        self.dial(i, int(peer.address.rsplit(":", 1)[1]) - 7000)
            for i, t in enumerate(self.tables):
                for p in t.live:
                    other = self.tables[int(p.node_id[1:])].get(f"n{i:02d}")
                    if other is None or not other.live:
                        t.drop(p, "its push failed", quiet=True)
            if self.edges() == before:
                return

    def edges(self) -> set[tuple[int, int]]:
        return {
            (min(i, j), max(i, j))
            for i, t in enumerate(self.tables)
            for j in (int(p.node_id[1:]) for p in t.live)
        }

    def components(self) -> int:
        return components(self.n, self.edges())


def test_cliques_of_early_waves_join_once_everyone_is_heard() -> None:
    n, k = 16, 4
    swarm = Swarm(n, k)
    waves = [range(w, min(w + k + 1, n)) for w in range(0, n, k + 1)]
    for wave in waves:  # each wave hears only itself and fills its slots with it
        for i in wave:
            swarm.heard[i] = set(wave) - {i}
        swarm.settle()
    assert swarm.components() == len(waves)  # cliques, every node full
    for i in range(n):  # now everyone hears everyone
        swarm.heard[i] = set(range(n)) - {i}
    swarm.settle()
    assert swarm.components() == 1  # the old code: 4, for good
    for i, t in enumerate(swarm.tables):
        assert len(t.live) <= k
        assert {p.address for p in t.live} == {p.address for p in swarm.choice(i)}


def test_a_chosen_address_takes_a_slot_only_when_configured() -> None:
    """A Hello merely stating a chosen address (`configured` false: the admission did
    not vouch for it) finds no room; a configured one takes the slot of the peer not
    chosen, never one of a chosen peer."""
    t = table(2)
    t.chosen = lambda: {address(1), address(2)}
    assert t.admit(hello(1), configured=True) is not None  # chosen
    assert t.admit(hello(3), configured=True) is not None  # heard first, not chosen
    assert t.admit(hello(2)) is None  # not configured: no slot taken
    assert {p.node_id for p in t.live} == {"n01", "n03"}
    assert t.admit(hello(2), configured=True) is not None  # the old code: None
    assert {p.node_id for p in t.live} == {"n01", "n02"}
    t.chosen = lambda: {address(1), address(2), address(4)}
    assert t.admit(hello(4), configured=True) is None  # every live peer is chosen


def test_static_peers_only_keep_the_old_rule() -> None:
    """Without a choice (`chosen` empty) a full table refuses a configured newcomer
    here; the handshake's own rule (an unlisted neighbour's slot) is unchanged."""
    t = table(1)
    assert t.admit(hello(1), configured=True) is not None
    assert t.admit(hello(2), configured=True) is None
    assert [p.node_id for p in t.live] == ["n01"]


def test_the_choice_of_identical_views_is_connected_and_bounded() -> None:
    """`select_neighbors` over the same view on every node: a connected graph of
    degree at most k (k even: symmetric) for every size from 2 to 40 (a guard)."""
    for k in (2, 4, 6):
        for n in range(2, 41):
            swarm = Swarm(n, k)
            for i in range(n):
                swarm.heard[i] = set(range(n)) - {i}
            chosen = {
                (min(i, j), max(i, j))
                for i in range(n)
                for j in (int(p.address.rsplit(":", 1)[1]) - 7000 for p in swarm.choice(i))
            }
            degree = [sum(i in e for e in chosen) for i in range(n)]
            assert max(degree) <= k, (n, k)
            assert components(n, chosen) == 1, (n, k)
