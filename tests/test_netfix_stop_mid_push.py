"""A node stopped (SIGTERM, Ctrl-C) while a neighbour's push is still arriving stops
cleanly: exit 0, no traceback (before: a `CancelledError` traceback was logged for the
push being read). Real processes: node a is a `declora-node start`; the neighbour is
this test, which shook hands with it and holds a push open, its header and first data
chunk sent, the rest not yet."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from daemon_helpers import HOST, Cluster, free_ports, live_ids, serve_fake_peer

from declora.node import PROTOCOL_VERSION
from declora.node.trainer import LoraModel
from declora.node.wire import chunks, make_header
from declora.proto import pb, pb_grpc

pytestmark = pytest.mark.slow  # real daemons stopped mid-push; make test-slow

START = 240  # s for a node to load and run its first rounds (a loaded machine)
EVERY = 0.5  # s between the trickled push's chunks


class AcceptAll(pb_grpc.SwarmServicer):
    """The neighbour's own server: takes every push node a sends it."""

    def Push(self, request_iterator: Iterator[pb.Chunk], context: object) -> pb.PushAck:
        for _ in request_iterator:
            pass
        return pb.PushAck(accepted=True)


def trickled(stream: Iterator[pb.Chunk], sent: threading.Event, release: threading.Event):  # type: ignore[no-untyped-def]
    """The chunks of `stream`, one every `EVERY` s after the first two, until `release`:
    never idle, within the pace a receiver allows for the first `PUSH_PACE.min_seconds`."""
    for i, chunk in enumerate(stream):
        if i == 2:
            sent.set()
        if i >= 2 and release.wait(EVERY):
            return
        yield chunk


@pytest.mark.integration
@pytest.mark.timeout(360)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stop_while_a_push_arrives_is_clean(
    tmp_path: Path, synthetic_jsonl: Path, tiny_lm: LoraModel, sig: int
) -> None:
    cluster = Cluster(tmp_path, synthetic_jsonl)
    [port] = free_ports(1)
    server = serve_fake_peer(AcceptAll(), f"{HOST}:{port}")
    release = threading.Event()
    try:
        # the stop finishes the round in progress first, waiting at most 5 s for the
        # neighbour's payload: the push (1 MB at 8 KiB/s) still arrives after that
        run = ["--rounds", "100000", "--eval-every", "0", "--round-deadline", "5"]
        # n1 is never started: a begins alone (--min-peers 0) and the test joins it
        a, _ = cluster.static(2, [(0, 1)], [*run, "--min-peers", "0"])
        a.start()
        cluster.wait_until("a serving", a.status, START, running=[a])
        with grpc.insecure_channel(a.address) as channel:
            stub = pb_grpc.SwarmStub(channel)
            joined = stub.Handshake(
                pb.Hello(
                    protocol_version=PROTOCOL_VERSION,
                    node_id="slow",
                    swarm_id=cluster.swarm_id,
                    fingerprint=tiny_lm.fingerprint,
                    listen_address=f"{HOST}:{port}",
                    seq=0,
                ),
                timeout=10,
            )
            assert joined.accepted, joined.reason
            cluster.wait_until("slow live at a", lambda: "slow" in live_ids(a.status()), START)
            reply = a.status()
            assert reply is not None
            data = b"\0" * 1_000_000
            header = make_header(
                sender_id="slow",
                swarm_id=cluster.swarm_id,
                fingerprint=tiny_lm.fingerprint,
                round=reply.round + 2,
                sender_degree=1,
                kind=pb.PAYLOAD_KIND_KEYFRAME,
                codec="fp32",
                seq=0,
                data=data,
                schema=tiny_lm.schema,
                session=joined.node.session,
                receiver_id=a.node_id,
            )
            sent = threading.Event()
            stream = trickled(chunks(header, data, 4096), sent, release)
            call = stub.Push.future(stream, timeout=120)
            assert sent.wait(30)
            # the header and a chunk are in: a reads the push (it is not refused)
            cluster.wait_until(
                "a reading the push",
                lambda: call.running() and a.status() is not None,
                30,
                running=[a],
            )
            a.signal(sig)
            [code] = cluster.wait_exit([a], 120)
            # the push was answered, not cut: not accepted, saying why
            ack = call.result(timeout=30)
            release.set()
            assert not ack.accepted and "stopping" in ack.reason, ack
        log = a.log()
        assert code == 0, cluster.report()
        assert "Traceback" not in log and "CancelledError" not in log, log
    finally:
        release.set()
        server.stop(grace=None)
        cluster.close()
