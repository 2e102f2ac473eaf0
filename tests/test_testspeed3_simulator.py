"""test_daemon.py's daemon-equals-simulator check for q8, gradient tracking and 2
exchanges a round, on three in-process daemons (an in-memory transport, torch loaded
once): the same flags as the real nodes', each daemon's round loop run as the real
one, bit-identical to the simulator's virtual nodes. The trainers take turns (a lock):
two training in threads would share torch's global seed, which real daemons, each a
process, never do. The real `declora-node start` version: test_daemon.py's
test_daemons_match_simulator (make test-slow)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from daemon_helpers import node_settings, sim_config, simulate, train_args
from memory_transport import MemoryNetwork, MemoryTransport

from declora.node.daemon import Daemon
from declora.node.daemon.daemon import Parts
from declora.node.daemon.service import SwarmService

NODES, ROUNDS, GOSSIP, CODEC, SCHEME = 3, 3, 2, "q8", "dirichlet:1.0"


def swarm(data: Path, root: Path) -> tuple[list[Daemon], list[Parts]]:
    """Three daemons on a ring (each the others' neighbour) with test_daemon.py's
    flags, served on one in-memory network, not yet introduced."""
    flags = (
        train_args(data)
        + (
            f"--rounds {ROUNDS} --consensus-rounds 0 --codec {CODEC} --partition-scheme {SCHEME} "
            f"--eval-every 0 --round-deadline 60 --swarm-size {NODES} --gossip-steps {GOSSIP} "
            "--gradient-tracking"
        ).split()
    )
    addresses = [f"127.0.0.1:{7500 + i}" for i in range(NODES)]
    network = MemoryNetwork()
    daemons, parts = [], []
    for i in range(NODES):
        s = node_settings(
            flags,
            node_id=f"n{i}",
            swarm_id="sim",
            listen=addresses[i],
            peers=[a for a in addresses if a != addresses[i]],
            partition=f"{i}/{NODES}",
            checkpoint_dir=root / f"n{i}",
        )
        d = Daemon(s, MemoryTransport(network, s, None))
        p = d.build()
        network.serve(s.advertise, SwarmService(p))
        daemons.append(d)
        parts.append(p)
    return daemons, parts


def one_at_a_time(parts: list[Parts]) -> None:
    """Each node's training holds one lock: the trainers take turns."""
    turn = threading.Lock()
    for p in parts:
        train = p.node.train

        def locked(*args: Any, _train: Any = train, **kwargs: Any) -> float:
            with turn:
                return float(_train(*args, **kwargs))

        p.node.train = locked  # type: ignore[method-assign]


def test_in_process_daemons_match_the_simulator_q8_tracking_2_gossip_steps(
    synthetic_jsonl: Path, tmp_path: Path
) -> None:
    threads = torch.get_num_threads()
    try:
        daemons, parts = swarm(synthetic_jsonl, tmp_path)
        one_at_a_time(parts)
        exchanges = ROUNDS * GOSSIP

        async def go() -> None:
            for i, p in enumerate(parts):
                for j in range(i + 1, NODES):
                    assert await p.handshaker.dial(parts[j].settings.advertise) is not None
            for r in range(1, exchanges + 1):
                trained = await asyncio.gather(
                    *(d.run_round(p, train=True) for d, p in zip(daemons, parts, strict=True))
                )
                assert trained == [r % GOSSIP == 1] * NODES, (r, trained)  # the first of 2
                for p in parts:  # counts payloads mixed, as the log line does
                    assert len(p.exchange.last_contributors) == NODES - 1, (r, p.settings.node_id)
                    assert len(p.peers.live) == NODES - 1  # nobody was dropped

        asyncio.run(go())
        cfg = sim_config(
            synthetic_jsonl,
            NODES,
            partition_scheme=SCHEME,
            rounds=ROUNDS,
            codec=CODEC,
            consensus_rounds=0,
            gradient_tracking=True,
            swarm_size=NODES,
            gossip_steps=GOSSIP,
        )
        sim = simulate(cfg)
    finally:
        torch.set_num_threads(threads)
    for p, virtual in zip(parts, sim.nodes, strict=True):
        assert p.progress.round == exchanges
        np.testing.assert_array_equal(p.node.vector(), virtual.vector(), p.settings.node_id)
        assert np.abs(virtual.vector() - virtual.initial).max() > 1e-2, "the adapter never trained"
        assert p.node.tracker is not None and virtual.tracker is not None
        assert np.abs(virtual.tracker.correction()).max() > 0, "never corrected"
        np.testing.assert_array_equal(p.node.tracker.correction(), virtual.tracker.correction())
        # with tracking each node weighs its own share's examples (`--weighting`)
        weight = float(len(virtual.trainer.data))
        assert p.node.trainer.grad_weight == virtual.trainer.grad_weight == weight
    # unequal shares (Dirichlet 1.0), so the weights matter
    assert len({n.trainer.grad_weight for n in sim.nodes}) > 1
