"""A node stopped (SIGTERM) while a caller holds a server stream open (a grpc.health.v1
Watch, a reflection stream, a neighbour's Pull that reads no further) stops cleanly:
exit 0, no traceback in its log. Real processes: node a is a `declora-node start`
alone (--min-peers 0); the caller is this test."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, Cluster, free_ports, live_ids, serve_fake_peer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from declora.node import PROTOCOL_VERSION
from declora.node.trainer import LoraModel
from declora.proto import pb, pb_grpc

pytestmark = pytest.mark.slow  # real daemons stopped mid-stream (guards); make test-slow

START = 240  # s for a node to load and run its first rounds (a loaded machine)


def watch(channel: grpc.Channel, first: threading.Event) -> grpc.Future:  # type: ignore[type-arg]
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=200)

    def read() -> None:
        for _ in call:
            first.set()

    threading.Thread(target=read, daemon=True).start()
    return call


def reflect(channel: grpc.Channel, first: threading.Event) -> grpc.Future:  # type: ignore[type-arg]
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    held = threading.Event()

    def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        held.wait(200)  # the stream stays open, asking nothing more

    call = stub.ServerReflectionInfo(requests(), timeout=200)

    def read() -> None:
        for _ in call:
            first.set()

    threading.Thread(target=read, daemon=True).start()
    return call


class AcceptAll(pb_grpc.SwarmServicer):
    """The neighbour's own server: takes every push node a sends it."""

    def Push(self, request_iterator, context):  # type: ignore[no-untyped-def]
        for _ in request_iterator:
            pass
        return pb.PushAck(accepted=True)


@pytest.mark.integration
@pytest.mark.timeout(360)
@pytest.mark.parametrize("open_stream", [watch, reflect], ids=["watch", "reflection"])
def test_a_stop_while_a_stream_is_open_is_clean(
    tmp_path: Path, synthetic_jsonl: Path, open_stream: object
) -> None:
    cluster = Cluster(tmp_path, synthetic_jsonl)
    try:
        run = ["--rounds", "100000", "--eval-every", "0", "--round-deadline", "5"]
        a, _ = cluster.static(2, [(0, 1)], [*run, "--min-peers", "0"])
        a.start()
        cluster.wait_until("a serving", a.status, START, running=[a])
        with grpc.insecure_channel(a.address) as channel:
            first = threading.Event()
            call = open_stream(channel, first)  # type: ignore[operator]
            assert first.wait(30)
            a.signal(signal.SIGTERM)
            [code] = cluster.wait_exit([a], 120)
            call.cancel()
        log = a.log()
        assert code == 0, cluster.report()
        assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        cluster.close()


@pytest.mark.integration
@pytest.mark.timeout(360)
def test_a_stop_while_a_pull_is_written_is_clean(
    tmp_path: Path, synthetic_jsonl: Path, tiny_lm: LoraModel
) -> None:
    """The neighbour's channel has a 1 KiB receive window and reads nothing: a's
    write of its state waits for window when the stop comes."""
    cluster = Cluster(tmp_path, synthetic_jsonl)
    [port] = free_ports(1)
    server = serve_fake_peer(AcceptAll(), f"{HOST}:{port}")
    options = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
    try:
        run = ["--rounds", "100000", "--eval-every", "0", "--round-deadline", "5"]
        a, _ = cluster.static(2, [(0, 1)], [*run, "--min-peers", "0"])
        a.start()
        cluster.wait_until("a serving", a.status, START, running=[a])
        with grpc.insecure_channel(a.address, options=options) as channel:
            stub = pb_grpc.SwarmStub(channel)
            hello = pb.Hello(
                protocol_version=PROTOCOL_VERSION,
                node_id="slow",
                swarm_id=cluster.swarm_id,
                fingerprint=tiny_lm.fingerprint,
                listen_address=f"{HOST}:{port}",
                seq=0,
            )
            joined = stub.Handshake(hello, timeout=10)
            assert joined.accepted, joined.reason
            cluster.wait_until("slow live at a", lambda: "slow" in live_ids(a.status()), START)
            request = pb.PullRequest(
                node_id="slow",
                swarm_id=cluster.swarm_id,
                kind=pb.PAYLOAD_KIND_STATE,
                session=joined.node.session,
                receiver_id=a.node_id,
            )
            call = stub.Pull(request, timeout=200)
            cluster.wait_until(
                "a writing the state",
                lambda: call.running() and a.status() is not None,
                30,
                running=[a],
            )
            a.signal(signal.SIGTERM)
            [code] = cluster.wait_exit([a], 120)
            with pytest.raises(grpc.RpcError) as cut:  # the stop came mid-write
                for _ in call:
                    pass
            assert cut.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        log = a.log()
        assert code == 0, cluster.report()
        assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        server.stop(grace=None)
        cluster.close()
