"""The daemon end to end: real `declora-node` processes talking gRPC on 127.0.0.1.

Each test starts `python -m declora.cli start ...` subprocesses (tiny-bert, one torch
thread, the shared synthetic JSONL set from conftest) and waits only by polling the
Status RPC or process exit with a deadline; a failed wait shows every node's log tail.
Fixtures kill any process a test leaves running. Every daemon pays for importing torch
and transformers (several CPU seconds), so tests share nodes where that changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from daemon_helpers import (
    CLI,
    HOST,
    MODEL,
    RANK,
    SEED,
    Cluster,
    Node,
    free_ports,
    known_ids,
    live_ids,
    read_adapter,
    serve_fake_peer,
    sim_config,
    simulate,
    status_or_none,
    train_args,
    uid,
)

from declora.node import PROTOCOL_VERSION, __version__
from declora.proto import pb, pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

# Bounds, not expectations: on an idle 2-core machine a node starts in ~10 s and a test
# takes well under a minute; other jobs on the machine can make starts 5x slower.
START = 150.0  # seconds for nodes to import torch, build tiny-bert and find their peers
RUN = 120.0  # seconds for a short run to finish once started
STOP = 60.0  # seconds from SIGTERM to exit
CHANCE = 1 / 5  # five balanced classes
MIN_ACCURACY = 0.9  # measured 1.0 on every node (50 test examples, 2 and 4 nodes, iid)
MAX_DISAGREEMENT = 3e-4  # relative; measured 1e-9 (pair) and 2.6e-5 (ring of 4)


@pytest.fixture
def data(synthetic_jsonl: Path) -> Path:
    """The shared 5-class synthetic set (conftest): 200 train, 50 test after the split."""
    return synthetic_jsonl


def ring(n: int) -> list[tuple[int, int]]:
    return [(i, (i + 1) % n) for i in range(n)] if n > 2 else [(0, 1)]


def final_adapter(node: Node) -> Path:
    path = node.ckpt / "adapter"
    assert (path / "adapter_model.safetensors").is_file(), f"{node.node_id}: no final adapter"
    return path


def stop_all(cluster: Cluster, nodes: list[Node]) -> None:
    for node in nodes:
        node.signal(signal.SIGTERM)
    codes = cluster.wait_exit(nodes, STOP)
    if codes != [0] * len(nodes):
        cluster.fail(f"exit codes after SIGTERM {codes}, expected all 0")


def wait_mixing(cluster: Cluster, nodes: list[Node], rounds: int) -> None:
    """Until every node has all the others live and at least `rounds` rounds done."""
    ids = {n.node_id for n in nodes}

    def ok() -> bool:
        for node in nodes:
            reply = node.status()
            if reply is None or live_ids(reply) != ids - {node.node_id} or reply.round < rounds:
                return False
        return True

    cluster.wait_until(f"{sorted(ids)} mixing, {rounds} rounds done", ok, START, running=nodes)


def vector(adapter: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([adapter[k].ravel() for k in sorted(adapter)])


# ---------------------------------------------------------------- 1, 2: static swarms


@pytest.mark.parametrize(
    "n", [2, pytest.param(4, marks=pytest.mark.slow)], ids=["pair", "ring4"]
)  # ring4: make test-slow
def test_static_swarm_trains_agrees_and_saves_peft(cluster: Cluster, n: int) -> None:
    rounds = 10
    nodes = cluster.static(
        n,
        ring(n),
        f"--rounds {rounds} --consensus-rounds 30 --consensus-tol 1e-4 --eval-every 0 "
        "--round-deadline 60".split(),
    )
    for node in nodes:
        node.start()
    codes = cluster.wait_exit(nodes, START + RUN)
    if codes != [0] * n:
        cluster.fail(f"exit codes {codes}, expected all 0")

    adapters = [read_adapter(final_adapter(node)) for node in nodes]
    assert all(sorted(a) == sorted(adapters[0]) for a in adapters)
    first = vector(adapters[0])
    for node, adapter in zip(nodes[1:], adapters[1:], strict=True):
        rel = float(np.linalg.norm(vector(adapter) - first) / np.linalg.norm(first))
        assert rel < MAX_DISAGREEMENT, f"{node.node_id} differs from n0 by {rel:.2e} (relative)"
    for node in nodes:
        # The last training round mixed with every neighbour (nobody missed a deadline).
        done = rf"round {rounds} done in \S+: loss \S+, mixed with {min(n - 1, 2)} neighbours"
        assert re.search(done, node.log()), cluster.report()
        info = json.loads((final_adapter(node) / "declora.json").read_text())
        assert info["node_id"] == node.node_id and info["round"] >= rounds
        accuracy = info["eval"]["accuracy"]
        assert accuracy >= MIN_ACCURACY, f"{node.node_id}: accuracy {accuracy} (chance {CHANCE})"

    from peft import PeftModel

    from declora.node.models import load_base

    base = load_base(MODEL, "cls", 5, SEED).model
    model = PeftModel.from_pretrained(base, final_adapter(nodes[0]))
    loaded = {k: v.detach().numpy() for k, v in model.state_dict().items() if "lora_" in k}
    assert loaded and len(loaded) == sum("lora_" in k for k in adapters[0])
    for key, value in loaded.items():
        np.testing.assert_array_equal(value, adapters[0][key.replace(".default.", ".")], key)


# ---------------------------------------------------------------- 3: simulator == daemon


@pytest.mark.parametrize(
    ("codec", "tracking", "gossip_steps"),
    [  # all make test-slow; make test runs the one that combines the most (q8, tracking,
        # 2 exchanges) in-process: test_testspeed3_simulator.py
        pytest.param("fp32", False, 1, marks=pytest.mark.slow),
        pytest.param("q8", False, 1, marks=pytest.mark.slow),
        pytest.param("q8", True, 1, marks=pytest.mark.slow),
        pytest.param("q8", True, 2, marks=pytest.mark.slow),
    ],
    ids=["fp32", "q8", "q8+gt", "q8+gt+2-gossip-steps"],
)
def test_daemons_match_simulator(
    cluster: Cluster, data: Path, codec: str, tracking: bool, gossip_steps: int
) -> None:
    """Same seed, data, partition and flags: each daemon ends with its virtual node's
    adapter (measured bit-identical for fp32 and q8, whose rounding rngs are per node),
    with gradient tracking too (its z messages share that rng), and with 2 exchanges a
    training round (the daemons' round numbers count exchanges)."""
    from safetensors.torch import load_file

    from declora.node.checkpoint import peft_tensors_to_vector

    rounds, scheme = 6 // gossip_steps, "dirichlet:1.0"
    nodes = cluster.static(
        3,
        ring(3),
        f"--rounds {rounds} --consensus-rounds 0 --codec {codec} --partition-scheme {scheme} "
        f"--eval-every 0 --round-deadline 60 --swarm-size 3 --gossip-steps {gossip_steps}".split()
        + (["--gradient-tracking"] if tracking else ["--no-gradient-tracking"]),
    )
    for node in nodes:
        node.start()
    cfg = sim_config(
        data,
        3,
        partition_scheme=scheme,
        rounds=rounds,
        codec=codec,
        consensus_rounds=0,
        gradient_tracking=tracking,
        swarm_size=3,
        gossip_steps=gossip_steps,
    )
    sim = simulate(cfg)  # runs while the daemons start
    codes = cluster.wait_exit(nodes, START + RUN)
    if codes != [0, 0, 0]:
        cluster.fail(f"exit codes {codes}, expected all 0")
    exchanges = rounds * gossip_steps  # the daemon's round numbers
    for i, node in enumerate(nodes):
        text = node.log()
        for k in range(1, exchanges + 1):  # counts payloads mixed, not the live set after
            done = rf"round {k} done in \S+: loss \S+, mixed with 2 neighbours"
            assert re.search(done, text), cluster.report()
        assert f"round {exchanges} done in" in text, cluster.report()
        # nobody was dropped: a neighbour may only have left politely after the last round
        lefts = re.findall(r"left the live set: (.*)", text.split(f"round {exchanges} done")[0])
        assert all(why == f"it left after round {exchanges}" for why in lefts), cluster.report()
        tensors = load_file(str(final_adapter(node) / "adapter_model.safetensors"))
        got = peft_tensors_to_vector(tensors, sim.lm.schema)
        want = sim.nodes[i].vector()
        diff = np.max(np.abs(got - want))
        case = f"{codec} tracking={tracking} gossip_steps={gossip_steps}"
        print(f"{case} {node.node_id}: max |daemon - sim| = {diff:.3e}")
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=node.node_id)
        assert np.abs(want - sim.nodes[i].initial).max() > 1e-2, "the adapter never trained"
        tracker = sim.nodes[i].tracker
        assert (tracker is not None) == tracking
        assert tracker is None or np.abs(tracker.correction()).max() > 0, "never corrected"
        # with tracking each node weighs its own share's examples (`--weighting`)
        weight = float(len(sim.nodes[i].trainer.data)) if tracking else 1.0
        assert sim.nodes[i].trainer.grad_weight == weight
        assert re.search(rf"weighting \S+ \(gradient x {weight:g}\)", node.log())
    if tracking:  # unequal shares (Dirichlet 1.0), so the weights matter
        assert len({n.trainer.grad_weight for n in sim.nodes}) > 1


# ---------------------------------------------------------------- 4: mDNS


@pytest.mark.slow  # ~25 s; test_discovery.py keeps real mDNS in make test
def test_mdns_swarm_forms_and_ignores_other_swarm(cluster: Cluster) -> None:
    ports = free_ports(4)
    common = [*train_args(cluster.data), "--mdns", "--mdns-interface", HOST, "--rounds", "0"]
    common += ["--eval-every", "0", "--round-deadline", "60", "--startup-timeout", "600"]
    nodes = [
        cluster.add(
            f"m{i}",
            ports[i],
            [*common, "--swarm-id", cluster.swarm_id, "--partition", f"{i}/3", "--min-peers", "2"],
        ).start()
        for i in range(3)
    ]
    other_swarm = f"other-{uid()}"
    # It waits (idle, no training) for a neighbour that must never come.
    loner = cluster.add(
        "m3-other",
        ports[3],
        [*common, "--swarm-id", other_swarm, "--min-peers", "1", "--startup-timeout", "600"],
    ).start()
    everyone = [*nodes, loner]
    wait_mixing(cluster, nodes, 2)
    # The loner has heard all three announce themselves, so it had every chance to dial.
    cluster.wait_until(
        "the other swarm's node to ignore all three by mDNS",
        lambda: all(
            re.search(rf"ignoring mDNS peer {n.node_id} at \S+: .*swarm", loner.log())
            for n in nodes
        ),
        START,
        running=everyone,
    )
    before = {n.node_id: n.status().round for n in nodes}  # type: ignore[union-attr]
    wait_mixing(cluster, nodes, max(before.values()) + 2)
    for node in nodes:
        reply = node.status()
        assert reply is not None and reply.swarm_id == cluster.swarm_id
        assert loner.node_id not in known_ids(reply), cluster.report()
    lone = loner.status()
    assert lone is not None and lone.swarm_id == other_swarm and lone.state == "connecting"
    assert known_ids(lone) == set() and lone.round == 0, cluster.report()
    assert "joined the live set" not in loner.log()
    stop_all(cluster, everyone)


# ---------------------------------------------------------------- 5, 7: an idle pair


@pytest.fixture(scope="module")
def idle_pair(
    tmp_path_factory: pytest.TempPathFactory, synthetic_jsonl: Path
) -> Iterator[tuple[Cluster, Node, Node]]:
    """Two nodes live with each other that never train: each waits for a second peer."""
    c = Cluster(tmp_path_factory.mktemp("idle"), synthetic_jsonl)
    try:
        a, b = c.static(2, ring(2), ["--min-peers", "2", "--startup-timeout", "600"])
        a.start()
        b.start()
        wait_mixing(c, [a, b], 0)
        yield c, a, b
        stop_all(c, [a, b])
    finally:
        c.close()


def health(node: Node) -> str:
    """The node's gRPC health status for the Swarm service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(node.address) as channel:
        request = health_pb2.HealthCheckRequest(service="declora.v1.Swarm")
        reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def cli(*args: str, columns: int = 200) -> subprocess.CompletedProcess[str]:
    """`declora-node ARGS` in a terminal `columns` wide (rich wraps a table to fit it)."""
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


def test_status_cli(idle_pair: tuple[Cluster, Node, Node]) -> None:
    cluster, a, b = idle_pair
    out = cli("status", "--target", a.address, "--format", "json")
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["node_id"] == a.node_id and reply["swarm_id"] == cluster.swarm_id
    assert int(reply["round"]) == 0 and reply["state"] == "connecting"
    assert reply["listen_address"] == a.address
    tracking = bool(reply.get("gradient_tracking", False))
    assert reply["weighting"] == ("examples" if tracking else "nodes")  # resolved, never auto
    [peer] = reply["neighbors"]
    assert peer["node_id"] == b.node_id and peer["address"] == b.address and peer["live"]

    text = cli("status", "--target", b.address)
    assert text.returncode == 0, text.stderr
    assert b.node_id in text.stdout and "round 0" in text.stdout
    assert f"weighting {reply['weighting']}" in text.stdout
    [row] = [line for line in text.stdout.splitlines() if a.node_id in line]
    assert a.address in row and "yes" in row, text.stdout

    [closed] = free_ports(1)
    down = cli("status", "--target", f"{HOST}:{closed}", "--timeout", "2")
    assert down.returncode == 1 and not down.stdout
    assert f"error: cannot get status from {HOST}:{closed}: connection refused" in down.stderr
    assert "hint: is the node running" in down.stderr


# The status checks of test_startup.py share this file's idle pair (one pair to start).


def test_status_json_keeps_types(idle_pair: tuple[Cluster, Node, Node]) -> None:
    _, a, b = idle_pair
    res = cli("status", "--target", a.address, "--format", "json", columns=80)
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    for key in ("round", "step", "bytes_sent", "bytes_received", "total_rounds"):
        assert type(reply[key]) is int, (key, reply[key])
    assert type(reply["started_unix"]) is float and reply["loss"] is None  # NaN: no loss yet
    assert reply["state"] == "connecting"
    [peer] = reply["neighbors"]
    assert peer["node_id"] == b.node_id and peer["live"] is True
    assert type(peer["bytes_received"]) is int and type(peer["round"]) is int


def test_status_table_fits_80_columns(idle_pair: tuple[Cluster, Node, Node]) -> None:
    _, a, b = idle_pair
    res = cli("status", "--target", a.address, columns=80)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, res.stdout
    [row] = [line for line in lines if b.node_id in line.split()]
    assert b.address in row.split() and "yes" in row.split(), res.stdout
    assert "…" not in res.stdout, res.stdout


def test_status_answers_without_building_the_cli(idle_pair: tuple[Cluster, Node, Node]) -> None:
    """`status` skips the typer app, which imports pydantic and builds every command:
    most of the 0.3-0.5 s of CPU it took (over a second of wall time on a loaded
    machine; the RPC itself takes milliseconds)."""
    _, a, _ = idle_pair
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-X", "importtime", *CLI[1:], "status", "--target", a.address,
         "--format", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    print(f"status --format json: {wall:.2f}s wall, {cpu:.2f}s CPU (with -X importtime)")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["node_id"] == a.node_id
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in res.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "pydantic" not in imported and "rich" not in imported, sorted(imported)


@pytest.mark.slow  # ~12 s of processes; test_daemon_parts.py: check_hello's reasons
def test_handshake_refuses_other_fingerprint_and_swarm(
    idle_pair: tuple[Cluster, Node, Node],
) -> None:
    cluster, host, peer = idle_pair
    before = host.status()
    assert before is not None
    # Each intruder tries for a few seconds, then exits 1 naming why the host refused it.
    intruder = ["--peers", host.address, "--min-peers", "1", "--startup-timeout", "3"]
    intruder += ["--rounds", "1", "--eval-every", "0"]
    rank_port, swarm_port = free_ports(2)
    other_rank = cluster.add(
        "other-rank",
        rank_port,
        [*train_args(cluster.data), "--swarm-id", cluster.swarm_id, "--rank", str(2 * RANK)],
    )
    other_swarm = cluster.add(
        "other-swarm",
        swarm_port,
        [*train_args(cluster.data), "--swarm-id", f"x-{cluster.swarm_id}"],
    )
    intruders = [other_rank.start(intruder), other_swarm.start(intruder)]
    codes = cluster.wait_exit(intruders, START)
    assert codes == [1, 1], cluster.report()
    for node in intruders:
        assert "joined the live set" not in node.log(), cluster.report()
        assert "error: 0 of 1 wanted neighbours after 3 s" in node.log(), cluster.report()
        why = re.search(
            rf"^  {re.escape(host.address)}: refused the handshake: (.+)$", node.log(), re.M
        )
        assert why is not None, cluster.report()
        assert "swarm" in why.group(1) or "recipe" in why.group(1) or "fingerprint" in why.group(1)
    assert re.search(
        rf"{host.address} refused the handshake: the swarm's recipe differs: "
        rf"--rank is '{2 * RANK}' at '{other_rank.node_id}', '{RANK}' at '{host.node_id}'",
        other_rank.log(),
    ), cluster.report()
    assert (
        f"{host.address} refused the handshake: swarm 'x-{cluster.swarm_id}' != "
        f"'{cluster.swarm_id}'" in other_swarm.log()
    ), cluster.report()
    assert "refused handshake from 'other-rank': the swarm's recipe differs" in host.log()
    assert "refused handshake from 'other-swarm': swarm" in host.log()
    after = host.status()
    assert after is not None
    assert known_ids(after) == live_ids(after) == {peer.node_id}, "an intruder became a neighbour"
    assert after.rejected["handshake"] >= before.rejected["handshake"] + 2


# ---------------------------------------------------------------- 6: SIGTERM and --resume


@pytest.mark.slow  # ~20 s; test_resume_in_process.py keeps a resume in make test
def test_sigterm_checkpoints_leaves_and_resumes(cluster: Cluster) -> None:
    # Longer rounds (the last --local-steps wins) make b, training alone while a restarts,
    # push less often: fewer pushes land in a rejoin's few-millisecond handshake gap.
    args = ["--rounds", "0", "--eval-every", "0", "--local-steps", "20"]
    a, b = cluster.static(2, ring(2), args)
    a.start()
    b.start()
    wait_mixing(cluster, [a, b], 3)
    assert health(a) == "SERVING"

    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    [code] = cluster.wait_exit([a], STOP)
    assert code == 0, cluster.report()
    print(f"SIGTERM to exit: {time.monotonic() - t0:.1f}s")
    latest = (a.ckpt / "LATEST").read_text().strip()
    assert re.fullmatch(r"ckpt-\d{8}", latest), latest
    assert (a.ckpt / latest / "state.pt").is_file()
    assert (a.ckpt / latest / "adapter" / "adapter_model.safetensors").is_file()
    saved = int(latest.removeprefix("ckpt-"))
    assert saved >= 3 and f"stopped after round {saved}" in a.log(), cluster.report()
    # A polite leave: a finished the round in progress, its mix with b included (MH
    # weights 1/2 each: b's payload arrived), and only then said goodbye.
    last = rf"round {saved} done in \S+: loss \S+, mixed with 1 neighbours, self weight 0\.500"
    assert re.search(last, a.log()), cluster.report()
    cluster.wait_until(
        "b to see a leave",
        lambda: a.node_id in known_ids(r := b.status()) and a.node_id not in live_ids(r),
        30,
        running=[b],
    )
    why = re.search(rf"neighbour {a.node_id} left the live set: (.*)", b.log())
    assert why is not None, cluster.report()
    assert why.group(1) == f"it left after round {saved}", cluster.report()
    assert "push failed" not in b.log() and "Connection refused" not in b.log(), cluster.report()
    b_log_before = len(b.log())
    gone = b.status()
    assert gone is not None
    received = {n.node_id: n.bytes_received for n in gone.neighbors}[a.node_id]

    a.start(["--resume"])
    cluster.wait_until(
        "the restarted node to resume",
        lambda: re.search(r"resumed from \S+ at round (\d+)", a.log()),
        START,
        running=[a, b],
    )
    resumed = re.search(r"resumed from (\S+) at round (\d+)", a.log())
    assert resumed is not None and resumed.group(1).endswith(latest), cluster.report()
    assert int(resumed.group(2)) == saved
    first = cluster.wait_until("a's status", a.status, START, running=[a, b])
    assert first.round >= saved, f"restarted at round {first.round}, saved {saved}"
    wait_mixing(cluster, [a, b], first.round + 3)

    def b_hears_a() -> bool:
        reply = b.status()
        sizes = {} if reply is None else {n.node_id: n.bytes_received for n in reply.neighbors}
        return sizes.get(a.node_id, 0) > received

    cluster.wait_until("b to receive from the restarted node", b_hears_a, START, running=[a, b])
    assert "push failed" not in a.log() + b.log()[b_log_before:], cluster.report()
    stop_all(cluster, [a, b])


# ---------------------------------------------------------------- 7: a leave during a push


class LeavingPeer(pb_grpc.SwarmServicer):
    """A fake neighbour that, on the node's first push, says goodbye and holds that push
    open until the node has dropped it; it refuses any handshake after that."""

    node_id = "leaver"

    def __init__(self, address: str) -> None:
        self.address = address
        self.node_address = ""
        self.swarm_id = ""
        self.session, self.node_id_there = b"", ""
        self.left = threading.Event()

    def Handshake(self, request: pb.Hello, context: grpc.ServicerContext) -> pb.Welcome:
        if self.left.is_set():
            return pb.Welcome(accepted=False, reason="gone")
        self.node_address, self.swarm_id = request.listen_address, request.swarm_id
        self.session, self.node_id_there = request.session, request.node_id
        hello = pb.Hello(
            protocol_version=PROTOCOL_VERSION,
            package_version=__version__,
            node_id=self.node_id,
            swarm_id=request.swarm_id,
            fingerprint=request.fingerprint,
            listen_address=self.address,
        )
        return pb.Welcome(accepted=True, node=hello)

    def Push(
        self, request_iterator: Iterator[pb.Chunk], context: grpc.ServicerContext
    ) -> pb.PushAck:
        for _ in request_iterator:
            pass
        if not self.left.is_set():
            self.left.set()
            notice = pb.LeaveNotice(
                node_id=self.node_id,
                swarm_id=self.swarm_id,
                round=3,  # finished (the node's --rounds 3): it trains on alone at full speed
                session=self.session,  # the token the node gave us in its Hello
                receiver_id=self.node_id_there,
            )
            with grpc.insecure_channel(self.node_address) as channel:
                pb_grpc.SwarmStub(channel).Leave(notice, timeout=30)
            deadline = time.monotonic() + 30
            while self.node_id in live_ids(status_or_none(self.node_address)):
                assert time.monotonic() < deadline, "the node never dropped the leaver"
                time.sleep(0.05)  # polling the node's Status, not waiting for time to pass
        return pb.PushAck(accepted=True)


@pytest.mark.slow  # ~16 s of a process; test_testspeed3_leaving.py: the same in-process
def test_a_neighbour_leaving_during_a_push_does_not_stop_the_node(cluster: Cluster) -> None:
    """Dropping a neighbour closes its channel while this round's push to it is in flight;
    a cancelled grpc.aio call raises CancelledError, which once ended the node (exit 1).
    make test checks it on an in-process daemon over real gRPC (test_testspeed3_leaving.py)."""
    f_port, d_port = free_ports(2)
    fake = LeavingPeer(f"{HOST}:{f_port}")
    server = serve_fake_peer(fake, fake.address)
    try:
        args = [*train_args(cluster.data), "--swarm-id", cluster.swarm_id, "--peers"]
        args += [fake.address, "--rounds", "3", "--eval-every", "0", "--round-deadline", "30"]
        node = cluster.add("d", d_port, args).start()
        [code] = cluster.wait_exit([node], START + RUN)
    finally:
        server.stop(grace=None)
    assert fake.left.is_set(), cluster.report()
    log = node.log()
    assert "neighbour leaver left the live set: it left after round 3" in log, cluster.report()
    assert "every neighbour has finished" in log, cluster.report()  # no wait for it
    assert code == 0, cluster.report()
    assert "round 3 done" in log and "Traceback" not in log, cluster.report()
