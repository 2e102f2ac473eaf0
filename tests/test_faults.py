"""Faults with real processes: kill -9 at every phase of a round, a straggler, a polite
leave, restarts with --resume, and a network partition between network namespaces.

A 4-node ring of real daemons (tiny-bert, `--rounds 0`) lives through a sequence of
faults. Crashes are real SIGKILLs that a daemon sends itself at a named point
(`DECLORA_CRASH_AT`, see `declora.node.faults`), so each phase is hit exactly. After
every fault the test checks what the issue asks of the swarm:

- the survivors keep completing rounds while the victim is gone, and no round of
  theirs waited past the deadline (round time <= deadline + training + a handshake);
- the victim's latest checkpoint on disk is complete and finite (`LATEST` never names
  a half-written one);
- the victim restarts with `--resume`, takes the swarm's state from a neighbour, and
  every node is back in the live sets of its ring neighbours;
- the swarm returns to consensus (each node's disagreement with its neighbours back
  under a bound) with finite losses.

Each fault prints one row of the table the README reports (`pytest -s -k faults`).
"""

from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_helpers import Cluster, Node, free_ports, live_ids, read_adapter, train_args, uid

from declora.cli.lab_summary import read_rounds
from declora.node import checkpoint
from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(600)]

DEADLINE = 3.0  # --round-deadline of every node
CKPT_EVERY = 3
# A survivor's round: local steps, at most one deadline, one renewed handshake; the
# margin covers a loaded 2-core machine (measured rounds are well under a second).
ROUND_BOUND = DEADLINE + 10.0
START = 150.0  # seconds for a daemon to import torch, build tiny-bert and find peers
RECOVER = 120.0  # seconds for the swarm to exclude a victim, or take it back
ADVANCE = 3  # rounds the survivors must complete while the victim is out
MAX_DISAGREEMENT = 0.05  # relative, to each live neighbour's public copy
STOP = 60.0
ARGS = [
    "--rounds",
    "0",
    "--eval-every",
    "0",
    "--round-deadline",
    str(DEADLINE),
    "--checkpoint-every",
    str(CKPT_EVERY),
    "--chunk-kib",
    "1",  # several chunks per push (1,189 values), so a crash can fall mid-stream
    "--startup-timeout",
    "120",
]


@dataclass
class Row:
    fault: str
    survivors_advanced: int
    max_round_s: float
    checkpoint: str
    rejoined: str
    disagreement: float

    def line(self) -> str:
        return (
            f"| {self.fault} | +{self.survivors_advanced} rounds, max {self.max_round_s:.2f}s "
            f"| {self.checkpoint} | {self.rejoined} | {self.disagreement:.1e} |"
        )


def ring_neighbours(nodes: list[Node]) -> dict[str, set[str]]:
    n = len(nodes)
    return {
        nodes[i].node_id: {nodes[(i - 1) % n].node_id, nodes[(i + 1) % n].node_id} for i in range(n)
    }


T0 = time.monotonic()


def note(what: str) -> None:
    """A progress line (shown with `pytest -s`): where a slow or failed run spent time."""
    print(f"[{time.monotonic() - T0:7.1f}s] {what}", flush=True)


def history(node: Node) -> list[dict[str, object]]:
    return read_rounds(node.ckpt)


def last_round(node: Node) -> int:
    h = history(node)
    return int(h[-1]["round"]) if h else 0  # type: ignore[call-overload]


def max_round_seconds(nodes: list[Node], since: float) -> float:
    return max(
        (float(e["seconds"]) for n in nodes for e in history(n) if float(e["time"]) >= since),  # type: ignore[arg-type]
        default=0.0,
    )


def check_checkpoint(node: Node) -> int:
    """The round of the latest checkpoint; fails unless it is complete and finite."""
    path = checkpoint.latest(node.ckpt)
    assert path is not None, f"{node.node_id}: no complete checkpoint in {node.ckpt}"
    raw = torch.load(path / "state.pt", weights_only=False)
    assert torch.isfinite(raw["public"]).all(), f"{path}: non-finite public copy"
    tensors = read_adapter(path / "adapter")
    assert tensors and all(np.isfinite(t).all() for t in tensors.values()), path
    assert int(raw["round"]) == int(path.name.removeprefix("ckpt-"))
    return int(raw["round"])


def wait_ring(cluster: Cluster, nodes: list[Node], min_round: int = 0) -> None:
    """Until every node has exactly its ring neighbours live and `min_round` done."""
    want = ring_neighbours(nodes)

    def ok() -> bool:
        for node in nodes:
            reply = node.status()
            if reply is None or live_ids(reply) != want[node.node_id] or reply.round < min_round:
                return False
        return True

    cluster.wait_until(f"the ring, round >= {min_round}", ok, START, running=nodes)


def wait_consensus(cluster: Cluster, nodes: list[Node], since: float) -> float:
    """Until each node's last 3 rounds after `since` are close to its neighbours'."""

    def worst() -> float | None:
        values = []
        for node in nodes:
            recent = [e for e in history(node) if float(e["time"]) >= since][-3:]  # type: ignore[arg-type]
            if len(recent) < 3 or any(len(e["live_neighbors"]) < 2 for e in recent):  # type: ignore[arg-type]
                return None
            for e in recent:
                assert e["loss"] is None or math.isfinite(float(e["loss"])), (node.node_id, e)  # type: ignore[arg-type]
            gaps = [e["disagreement"] for e in recent]  # null: not yet measured (DECA)
            values.append(max(math.inf if g is None else float(g) for g in gaps))  # type: ignore[arg-type]
        top = max(values)
        return top if top <= MAX_DISAGREEMENT else None

    return cluster.wait_until("consensus again", worst, RECOVER, running=nodes)


def wait_excluded(cluster: Cluster, survivors: list[Node], victim: Node) -> int:
    """Until every survivor has the victim out of its live set and ADVANCE more rounds."""
    base = {n.node_id: last_round(n) for n in survivors}

    def ok() -> int | None:
        for node in survivors:
            reply = node.status()
            if reply is None or victim.node_id in live_ids(reply):
                return None
            if reply.round < base[node.node_id] + ADVANCE:
                return None
        return min(last_round(n) - base[n.node_id] for n in survivors)

    return cluster.wait_until(f"survivors to go on without {victim.node_id}", ok, RECOVER)


def crash_env(victim: Node, crash: str) -> dict[str, str] | None:
    """The victim's crash plan, counted only once `arm(victim)` has run."""
    if not crash:
        return None
    return {"DECLORA_CRASH_AT": crash, "DECLORA_CRASH_ARM_FILE": str(arm_file(victim))}


def arm_file(victim: Node) -> Path:
    return victim.workdir / "crash-armed"


def arm(victim: Node) -> None:
    arm_file(victim).touch()


def rejoin(cluster: Cluster, nodes: list[Node], victim: Node, crash: str = "") -> str:
    """Restart `victim` with --resume (its next crash disarmed); wait for the ring again."""
    swarm_round = max(last_round(n) for n in nodes if n is not victim)
    arm_file(victim).unlink(missing_ok=True)
    victim.start(["--resume"], env=crash_env(victim, crash))
    wait_ring(cluster, nodes, min_round=swarm_round)
    log = victim.log()
    resumed = re.search(r"resumed from \S+ at round (\d+)", log)
    caught = re.search(r"caught up from (\S+): starting after its round (\d+)", log)
    assert resumed is not None, cluster.report()
    assert caught is not None and int(caught.group(2)) >= swarm_round, cluster.report()
    return f"resumed r{resumed.group(1)}, took r{caught.group(2)} from {caught.group(1)}"


# (the table's words, DECLORA_CRASH_AT). A restarted victim is armed for the next
# crash only once the test has seen it rejoin and the swarm agree again (the arm
# file); counting rounds instead raced the consensus check on a fast machine.
CRASHES = [
    ("kill -9 before sending", "before_send@2"),
    ("kill -9 mid-stream", "mid_stream@2"),
    ("kill -9 after sending", "after_send@2"),
    ("kill -9 writing a checkpoint", "checkpoint@1"),
    ("kill -9 replacing LATEST", "checkpoint_pointer@1"),
]


def test_faults_crash_every_phase_straggle_leave_resume(cluster: Cluster) -> None:
    nodes = cluster.static(4, [(i, (i + 1) % 4) for i in range(4)], ARGS)
    victim = nodes[1]
    for node in nodes:
        node.start(env=crash_env(victim, CRASHES[0][1]) if node is victim else None)
    wait_ring(cluster, nodes, min_round=1)
    # The first crash must find a checkpoint to check and resume from (the daemon
    # writes its first one at round CKPT_EVERY); arming earlier raced that write.
    cluster.wait_until(
        f"{victim.node_id}'s first checkpoint",
        lambda: checkpoint.latest(victim.ckpt),
        RECOVER,
        running=nodes,
    )
    arm(victim)
    survivors = [n for n in nodes if n is not victim]
    rows: list[Row] = []

    for i, (fault, _) in enumerate(CRASHES):
        note(f"waiting for: {fault}")
        t0 = time.time()
        [code] = cluster.wait_exit([victim], RECOVER)
        assert code == -signal.SIGKILL, f"{fault}: exit {code}\n{cluster.report()}"
        advanced = wait_excluded(cluster, survivors, victim)
        saved = check_checkpoint(victim)
        interrupted = last_round(victim)  # recorded just before its checkpoint began
        if fault.endswith("checkpoint"):  # a half-built directory, LATEST the one before
            assert list(victim.ckpt.glob(f".ckpt-{interrupted:08d}.*")), cluster.report()
            assert saved < interrupted
        if fault.endswith("LATEST"):  # complete, but LATEST still names the one before
            assert (victim.ckpt / ".LATEST.tmp").is_file(), cluster.report()
            assert (victim.ckpt / f"ckpt-{interrupted:08d}" / "state.pt").is_file()
            assert saved < interrupted
        following = CRASHES[i + 1][1] if i + 1 < len(CRASHES) else ""
        note(f"{fault}: survivors went on {advanced} rounds; restarting the victim")
        rejoined = rejoin(cluster, nodes, victim, following)
        note(f"{fault}: {rejoined}")
        worst = wait_consensus(cluster, nodes, since=time.time())
        note(f"{fault}: consensus again ({worst:.1e})")
        if following:
            arm(victim)
        rows.append(
            Row(
                fault,
                advanced,
                max_round_seconds(survivors, t0),
                f"ckpt r{saved} ok",
                rejoined,
                worst,
            )
        )

    # A straggler: stopped for three deadlines, then continued (no restart).
    straggler = nodes[2]
    others = [n for n in nodes if n is not straggler]
    t0 = time.time()
    note("straggler: SIGSTOP")
    straggler.signal(signal.SIGSTOP)
    try:
        time.sleep(3 * DEADLINE)
        advanced = wait_excluded(cluster, others, straggler)
    finally:
        straggler.signal(signal.SIGCONT)
    wait_ring(cluster, nodes, min_round=max(last_round(n) for n in others))
    worst = wait_consensus(cluster, nodes, since=time.time())
    jumped = "skipping ahead" in straggler.log()
    rows.append(
        Row(
            f"straggler (SIGSTOP {3 * DEADLINE:g}s)",
            advanced,
            max_round_seconds(others, t0),
            "-",
            "skipped ahead, rejoined" if jumped else "rejoined",
            worst,
        )
    )

    # A polite leave: SIGTERM, a checkpoint at the last round, then --resume.
    leaver = nodes[3]
    others = [n for n in nodes if n is not leaver]
    t0 = time.time()
    note("polite leave: SIGTERM")
    leaver.signal(signal.SIGTERM)
    [code] = cluster.wait_exit([leaver], STOP)
    assert code == 0, cluster.report()
    advanced = wait_excluded(cluster, others, leaver)
    saved = check_checkpoint(leaver)
    assert f"stopped after round {saved}" in leaver.log(), cluster.report()
    note("polite leave: restarting")
    rejoined = rejoin(cluster, nodes, leaver)
    worst = wait_consensus(cluster, nodes, since=time.time())
    rows.append(
        Row(
            "polite leave (SIGTERM)",
            advanced,
            max_round_seconds(others, t0),
            f"ckpt r{saved} ok",
            rejoined,
            worst,
        )
    )

    for node in nodes:
        node.signal(signal.SIGTERM)
    assert cluster.wait_exit(nodes, STOP) == [0] * 4, cluster.report()
    finals = [read_adapter(n.ckpt / "adapter") for n in nodes]
    for f in finals:
        assert all(np.isfinite(t).all() for t in f.values())
    print("\n| fault | survivors | victim's checkpoint | rejoin | disagreement after |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row.line())
        assert row.max_round_s <= ROUND_BOUND, f"{row.fault}: a round took {row.max_round_s:.1f}s"
        assert row.survivors_advanced >= ADVANCE


# ---------------------------------------------------------------- network partition


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass
class Netns:
    """Two network namespaces joined by veth pairs to a bridge in the root namespace."""

    names: tuple[str, str]
    bridge: str
    veths: tuple[str, str]
    hosts: tuple[str, str]

    def exec_prefix(self, side: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[side]]

    def cut(self) -> None:
        _ip("link", "set", self.veths[1], "down")

    def heal(self) -> None:
        _ip("link", "set", self.veths[1], "up")


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip netns`)")
    tag = uid()[:6]
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:4], 16)}"
    ns = Netns(
        names=(f"dl-{tag}-a", f"dl-{tag}-b"),
        bridge=f"dlbr{tag}",
        veths=(f"dlva{tag}", f"dlvb{tag}"),
        hosts=(f"{subnet}.1", f"{subnet}.2"),
    )
    try:
        _ip("link", "add", ns.bridge, "type", "bridge")
    except (subprocess.CalledProcessError, PermissionError) as exc:
        pytest.skip(f"cannot create network namespaces here: {exc}")
    try:
        _ip("addr", "add", f"{subnet}.254/24", "dev", ns.bridge)
        _ip("link", "set", ns.bridge, "up")
        for name, veth, host in zip(ns.names, ns.veths, ns.hosts, strict=True):
            inner = veth + "i"
            _ip("netns", "add", name)
            _ip("link", "add", veth, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", name)
            _ip("link", "set", veth, "master", ns.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", name, "addr", "add", f"{host}/24", "dev", inner)
            _ip("-n", name, "link", "set", inner, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield ns
    finally:
        for name in ns.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", ns.bridge], capture_output=True, timeout=20)


def test_partition_between_namespaces_heals(cluster: Cluster, netns: Netns) -> None:
    # Ring a0 - a1 - b0 - b1 - a0; a* live in namespace A, b* in namespace B, so the
    # cut of B's link splits the ring into the pairs (a0, a1) and (b0, b1).
    ports = free_ports(4)
    places = [(0, ports[0]), (0, ports[1]), (1, ports[2]), (1, ports[3])]
    addresses = [f"{netns.hosts[side]}:{port}" for side, port in places]
    nodes = []
    for i, (side, port) in enumerate(places):
        peers = ",".join(addresses[j] for j in ((i - 1) % 4, (i + 1) % 4))
        swarm = ["--swarm-id", cluster.swarm_id, "--peers", peers, "--partition", f"{i}/4"]
        slower = ["--local-steps", "15"] if side else []  # the halves drift apart in rounds
        args = [*train_args(cluster.data), *swarm, *ARGS, *slower]
        name = f"{'ab'[side]}{i % 2}"
        nodes.append(cluster.add(name, port, args, netns.hosts[side], netns.exec_prefix(side)))
    for node in nodes:
        node.start()
    wait_ring(cluster, nodes, min_round=2)

    halves = (nodes[:2], nodes[2:])
    t_cut = time.time()
    netns.cut()
    for half in halves:  # each half goes on as a pair: only rounds.jsonl is reachable
        base = {n.node_id: last_round(n) for n in half}

        def pair_only(half: list[Node] = half, base: dict[str, int] = base) -> bool:
            return all(
                last_round(n) >= base[n.node_id] + ADVANCE
                and len(history(n)[-1]["live_neighbors"]) == 1  # type: ignore[arg-type]
                for n in half
            )

        cluster.wait_until("each half to go on alone", pair_only, RECOVER, running=nodes)

    def beyond_the_window() -> bool:  # the slower half must take a state, not skip
        return min(map(last_round, halves[0])) > max(map(last_round, halves[1])) + (
            MAX_ROUNDS_AHEAD + 2
        )

    cluster.wait_until("the halves to drift apart", beyond_the_window, RECOVER, running=nodes)
    during = max_round_seconds(nodes, t_cut)
    rounds_at_heal = {n.node_id: last_round(n) for n in nodes}
    netns.heal()
    t_heal = time.time()
    wait_ring(cluster, nodes, min_round=max(rounds_at_heal.values()))
    worst = wait_consensus(cluster, nodes, since=time.time())
    rounds = {n.node_id: last_round(n) for n in nodes}
    assert max(rounds.values()) - min(rounds.values()) <= 2, rounds
    # the slower half took the faster's state (a skip within the window cannot reach it)
    assert all("caught up from" in n.log() for n in halves[1]), cluster.report()
    for node in nodes:
        node.signal(signal.SIGTERM)
    assert cluster.wait_exit(nodes, STOP) == [0] * 4, cluster.report()
    after = max_round_seconds(nodes, t_heal)
    print(
        f"\n| network partition (2+2, netns) | halves went on as pairs, max round "
        f"{during:.2f}s | rounds at heal {rounds_at_heal} | healed: max round "
        f"{after:.2f}s | {worst:.1e} |"
    )
    assert during <= ROUND_BOUND and after <= ROUND_BOUND
