"""How a swarm of real daemons wires itself at size: dozens of nodes, not 2-8.

Starts `--nodes` real `declora-node start` processes on 127.0.0.1 (tiny-bert, one
thread each) that find each other one of two ways:

* `seed`: every node is given `--peers` naming only node 0 (bootstrap from one seed;
  node 0 itself names node 1);
* `mdns`: no `--peers`, mDNS on the loopback interface.

It polls every node's Status each second and prints, as the run goes, the live graph
(an edge where either end lists the other live): nodes up, edges, degree min/mean/max,
the seed's degree, components and each node's round. At the end: the round at which
the graph first was one component with every node up (`rounds to connect`, `never`
if it did not), the most live neighbours any node ever had against `--max-neighbors`,
and the final consensus distance: max_i |x_i - mean| / |mean| over the nodes' saved
adapters (mean |x_i - mean| in brackets). `--churn F` SIGKILLs and restarts a fraction
F of the nodes (never the seed) one at a time once the graph is up; `--stagger S`
starts the nodes in waves of max-neighbors + 1, S seconds apart (each wave could fill
its own slots: a clique).

Nothing is asserted; memory: about 300 MB a node.

    python bench/bench_scale.py --nodes 16 --max-neighbors 4 --mode seed
    python bench/bench_scale.py --nodes 16 --max-neighbors 4 --mode mdns --churn 0.25
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from benchlib import free_ports, load_average, parse_args, stop_processes

from declora.cli.client import StatusError, fetch_status
from declora.cli.lab import LabConfig, node_config

HOST = "127.0.0.1"


@dataclass
class Member:
    index: int
    address: str
    folder: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        cmd = ["nice", sys.executable, "-m", "declora.cli", "start", "--config", str(self.config)]
        if self.log is not None:
            self.log.close()
        self.log = (self.folder.parent / f"node-{self.index}.log").open("ab")
        self.process = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Sample:
    """One poll: each answering node's live neighbours and round."""

    live: dict[int, set[int]] = field(default_factory=dict)
    rounds: dict[int, int] = field(default_factory=dict)
    weights: int = 0  # live neighbour entries checked against the MH formula
    off: int = 0  # ...of which off it: w_ij != 1 / (1 + max(d_i, d_j)) or row sum != 1


def components(n: int, edges: set[tuple[int, int]], up: set[int]) -> int:
    """Connected components of the graph on `up` (nodes 0..n-1) with `edges`."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        if i in up and j in up:
            parent[find(i)] = find(j)
    return len({find(i) for i in up})


def graph(sample: Sample) -> set[tuple[int, int]]:
    """Undirected live edges: either end lists the other live."""
    return {(min(i, j), max(i, j)) for i, js in sample.live.items() for j in js if i != j}


def degrees(n: int, edges: set[tuple[int, int]], up: set[int]) -> list[int]:
    deg = dict.fromkeys(up, 0)
    for i, j in edges:
        if i in up and j in up:
            deg[i] += 1
            deg[j] += 1
    return [deg[i] for i in sorted(up)] or [0]


def poll(members: list[Member], ids: dict[str, int]) -> Sample:
    sample = Sample()
    for m in members:
        if not m.running():
            continue
        try:
            reply = fetch_status(m.address, timeout=2.0, secret="")
        except StatusError:
            continue
        live = {ids[nb.node_id] for nb in reply.neighbors if nb.live and nb.node_id in ids}
        mine = [nb for nb in reply.neighbors if nb.live]
        if mine and reply.self_weight:  # mixed at least once
            row = reply.self_weight + sum(nb.weight for nb in mine)
            for nb in mine:
                mh = 1.0 / (1 + max(len(mine), nb.degree))
                sample.weights += 1
                sample.off += abs(nb.weight - mh) > 1e-6 or abs(row - 1.0) > 1e-6
        sample.live[m.index] = live
        sample.rounds[m.index] = int(reply.round)
    return sample


def write_configs(args: argparse.Namespace, out: Path) -> list[Member]:
    cfg = LabConfig(
        model="tiny-bert",
        nodes=args.nodes,
        rounds=args.rounds,
        max_eval=0,
        eval_every=0,
        consensus_rounds=0,
        centralized=False,
        partition_scheme="iid",
        local_steps=1,
        batch_size=4,
        max_length=16,
        validation_fraction=0.0,
        round_deadline=args.round_deadline,
    )
    swarm = f"scale-{uuid.uuid4().hex[:8]}"
    addresses = [f"{HOST}:{p}" for p in free_ports(args.nodes)]
    members = []
    for i, address in enumerate(addresses):
        folder = out / f"node-{i}"
        folder.mkdir(parents=True)
        # the seed is given node 1, as someone has to be (`start` refuses no peers)
        peers = [addresses[1 if i == 0 else 0]] if args.mode == "seed" else []
        conf = node_config(cfg, i, address, peers, folder, swarm)
        conf.pop("solo", None)
        conf.update(
            node_id=f"n{i:02d}",
            max_neighbors=args.max_neighbors,
            min_peers=1,
            startup_timeout=args.timeout,
            advertise=address,
            resume="auto",  # a node the churn restarts goes on from its checkpoint
        )
        if args.mode == "mdns":
            conf.update(mdns=True, mdns_interface=HOST)
        path = folder / "node.json"
        path.write_text(json.dumps(conf, indent=1))
        members.append(Member(i, address, folder, path))
    return members


def consensus_distance(members: list[Member]) -> tuple[float, float] | None:
    """(max, mean) over nodes of |x_i - mean| / |mean| of the saved adapters."""
    from safetensors.numpy import load_file

    vectors = []
    for m in members:
        path = m.folder / "adapter" / "adapter_model.safetensors"
        if not path.is_file():
            return None
        tensors = load_file(str(path))
        vectors.append(np.concatenate([tensors[k].ravel() for k in sorted(tensors)]))
    x = np.stack(vectors).astype(np.float64)
    mean = x.mean(axis=0)
    scale = float(np.linalg.norm(mean)) or 1.0
    gaps = np.linalg.norm(x - mean, axis=1) / scale
    return float(gaps.max()), float(gaps.mean())


def run(args: argparse.Namespace, out: Path) -> None:
    members = write_configs(args, out)
    ids = {f"n{i:02d}": i for i in range(args.nodes)}
    n, began = args.nodes, time.monotonic()
    batch = args.max_neighbors + 1  # a batch could fill its own slots: a clique
    waves = [members[i : i + batch] for i in range(0, n, batch)] if args.stagger else [members]
    for m in waves.pop(0):  # a wave at once: they load in parallel
        m.start()
    next_wave, last_start, connected_after = began + args.stagger, began, 0.0
    connected_round: int | None = None
    most_live, seed_most, weights, off = 0, 0, 0, 0
    churn = sorted(range(1, n), key=lambda i: (i * 7919) % n)[: round(args.churn * n)]
    next_kill = 0.0
    try:
        while time.monotonic() - began < args.timeout:
            if not any(m.running() for m in members):
                break
            sample = poll(members, ids)
            up = set(sample.live)
            edges = graph(sample)
            deg = degrees(n, edges, up)
            comps = components(n, edges, up)
            weights, off = weights + sample.weights, off + sample.off
            most_live = max([most_live, *(len(v) for v in sample.live.values())])
            seed_most = max(seed_most, len(sample.live.get(0, ())))
            top = max(sample.rounds.values(), default=0)
            if connected_round is None and not waves and len(up) == n and comps == 1:
                connected_round, connected_after = top, time.monotonic() - last_start
            print(
                f"t={time.monotonic() - began:5.0f}s up={len(up):2d}/{n} edges={len(edges):3d}"
                f" degree min/mean/max={min(deg)}/{statistics.fmean(deg):.1f}/{max(deg)}"
                f" seed={len(sample.live.get(0, ()))} components={comps}"
                f" rounds={min(sample.rounds.values(), default=0)}..{top}",
                flush=True,
            )
            now = time.monotonic()
            if waves and now >= next_wave:
                for m in waves.pop(0):
                    m.start()
                next_wave, last_start = now + args.stagger, now
            if churn and connected_round is not None and now >= next_kill:
                m = members[churn.pop(0)]
                if m.process is not None:
                    m.process.kill()
                    m.process.wait()
                    m.restarts += 1
                    print(f"churn: killed and restarted n{m.index:02d}", flush=True)
                    m.start()
                next_kill = now + args.churn_every
            time.sleep(1.0)
    finally:
        stop_processes([m.process for m in members if m.process is not None], grace=60)
        for m in members:
            if m.log is not None:
                m.log.close()
    gap = consensus_distance(members)
    print(f"nodes: {n}, mode: {args.mode}, max-neighbors: {args.max_neighbors}")
    print(
        "rounds to connect: "
        + ("never" if connected_round is None else f"{connected_round}")
        + ("" if connected_round is None else f" ({connected_after:.0f} s after the last start)")
    )
    print(f"most live neighbours of any node: {most_live} (bound {args.max_neighbors})")
    print(f"most live neighbours of node 0: {seed_most}")
    print(f"restarts (churn): {sum(m.restarts for m in members)}")
    print(
        f"MH weights off 1/(1+max(d_i,d_j)) or rows not summing to 1: {off} of {weights}"
        " polled live entries (a degree that changed since the last mix counts)"
    )
    print(
        "final consensus distance: "
        + ("n/a (an adapter is missing)" if gap is None else f"{gap[0]:.4f} ({gap[1]:.4f})")
    )
    print(f"wall: {time.monotonic() - began:.0f} s; load: {load_average()}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--max-neighbors", type=int, default=4)
    ap.add_argument("--mode", choices=["seed", "mdns"], default="seed")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--round-deadline", type=float, default=30.0)
    ap.add_argument("--churn", type=float, default=0.0, help="fraction of nodes restarted")
    ap.add_argument("--churn-every", type=float, default=10.0, help="seconds between kills")
    ap.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="seconds between waves of max-neighbors + 1 nodes (0: all at once)",
    )
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep logs in")
    # the smoke run's seed keeps 2 of 3 nodes: the third joins through peer exchange
    smoke = {"nodes": 4, "max_neighbors": 2, "rounds": 100, "timeout": 120.0}
    args = parse_args(ap, smoke, argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, Path(tempfile.mkdtemp(dir=args.keep)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run(args, Path(tmp))


if __name__ == "__main__":
    main()
