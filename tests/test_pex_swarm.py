"""Six in-process daemons over real gRPC, each given only the seed's address, with
--max-neighbors 2: the seed keeps two neighbours and refuses the rest as full; the
others learn members' addresses from the Status of the peers they reach (peer
exchange), so all end in one component, every degree within the bound, and train.
Without it, three of the six never had a neighbour."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from daemon_helpers import HOST, POLL, InProcess, free_ports, node_settings, train_args

from declora.proto import pb

NODES = 6
MAX_NEIGHBORS = 2


def components(replies: dict[str, pb.StatusReply]) -> list[set[str]]:
    """The live graph's components (an edge where either end says it is live)."""
    edges = {i: set() for i in replies}
    for i, r in replies.items():
        for n in r.neighbors:
            if n.live and n.node_id in edges:
                edges[i].add(n.node_id)
                edges[n.node_id].add(i)
    seen: set[str] = set()
    out = []
    for i in edges:
        if i in seen:
            continue
        part, todo = set(), [i]
        while todo:
            j = todo.pop()
            if j not in part:
                part.add(j)
                todo.extend(edges[j] - part)
        seen |= part
        out.append(part)
    return out


@pytest.mark.timeout(600)
def test_nodes_given_only_a_seed_join_one_component_and_train(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    ports = free_ports(NODES)
    seed = f"{HOST}:{ports[0]}"
    flags = [
        *train_args(synthetic_jsonl),
        *("--local-steps", "1", "--rounds", "200", "--eval-every", "0"),
        *("--max-neighbors", str(MAX_NEIGHBORS), "--min-peers", "1"),
        *("--round-deadline", "20", "--startup-timeout", "400"),
    ]
    swarm = InProcess()
    nodes = []
    state = "no status yet"
    try:
        # the seed last: a node built while another trains gets other base weights
        # (`InProcess`), and the others wait for the seed before they train
        for i in [*range(1, NODES), 0]:
            port = ports[i]
            nodes.append(
                swarm.start(
                    node_settings(
                        flags,
                        node_id=f"n{i}",
                        swarm_id="pex",
                        listen=f"{HOST}:{port}",
                        peers=[seed] if i else [],
                        checkpoint_dir=tmp_path / f"n{i}",
                    )
                )
            )
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and swarm.running():
            replies = {n.node_id: n.status() for n in nodes}
            if all(replies.values()):
                got = {i: r for i, r in replies.items() if r is not None}
                parts = components(got)
                degrees = {i: sum(n.live for n in r.neighbors) for i, r in got.items()}
                rounds = {i: r.round for i, r in got.items()}
                state = f"components {parts}, degrees {degrees}, rounds {rounds}"
                if len(parts) == 1 and min(rounds.values()) >= 2:
                    break
            time.sleep(POLL)
        else:
            raise AssertionError(f"{state}\n{nodes[0].log()[-4000:]}")
    finally:
        swarm.close()
    assert len(parts) == 1, state
    assert max(degrees.values()) <= MAX_NEIGHBORS, state
    assert min(rounds.values()) >= 2, state
    assert "Traceback" not in nodes[0].log(), nodes[0].log()[-4000:]
    assert "peer exchange: learnt" in nodes[0].log()
