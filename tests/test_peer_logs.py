"""What a peer sends cannot flood the log, grow the node's memory or forge a log line.

A stranger (no swarm secret needed: the header is checked before any mac) pushes
streams whose only chunk is a header with a random 900 kB swarm id, over real gRPC, to
a servicer that refuses as the daemon's does (`read_stream`, then `Counters.refused`
and an abort with the reason). Each answer and each log line stays short, and at most
`REFUSALS_LOGGED` refusals a minute are written in full, the rest summed up in one
line. A neighbour's free text (an ack's reason, an error's details) with a newline and
a terminal escape stays on one line of the text log and one valid JSON line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import grpc
import pytest
from daemon_helpers import HOST, Cluster, free_ports, train_args

from declora.node import logs
from declora.node.adapter import AdapterSchema, TensorSpec
from declora.node.daemon.peers import WHY, Peer, PeerTable
from declora.node.daemon.state import Progress
from declora.node.daemon.status import Counters
from declora.node.logs import MAX_MESSAGE, REFUSALS_LOGGED
from declora.node.metrics import NodeMetrics
from declora.node.wire import WireError, check_header, make_header, read_stream
from declora.proto import pb, pb_grpc

SWARM, FINGERPRINT = "lab", "f" * 64
SCHEMA = AdapterSchema((TensorSpec("layer.lora_A", (2, 4)), TensorSpec("layer.lora_B", (4, 2))))
FORGED = "\n2026-12-05 02:00:00,000 WARNING [victim r9] FORGED: the node was compromised\x1b[2J"


@pytest.fixture
def log_text(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The daemon's `declora` log (text format) into a string; restored after."""
    yield from _configured(monkeypatch, "text")


@pytest.fixture
def log_json(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    yield from _configured(monkeypatch, "json")


def _configured(monkeypatch: pytest.MonkeyPatch, fmt: str) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    logger = logs.configure("victim", fmt, "INFO")
    try:
        yield out
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def header(swarm_id: str = SWARM, **change: str) -> pb.PayloadHeader:
    h = make_header(
        sender_id="x",
        swarm_id=swarm_id,
        fingerprint=FINGERPRINT,
        round=1,
        sender_degree=1,
        kind=pb.PAYLOAD_KIND_DELTA,
        codec="fp32",
        seq=1,
        data=b"\0" * 8,
        schema=SCHEMA,
    )
    for k, v in change.items():
        setattr(h, k, v)
    return h


class Refuser(pb_grpc.SwarmServicer):
    """Push as the daemon's servicer answers a bad one: read, count, log, abort."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    async def Push(
        self, request_iterator: AsyncIterator[pb.Chunk], context: grpc.aio.ServicerContext
    ) -> pb.PushAck:
        try:
            await read_stream(
                request_iterator,
                swarm_id=SWARM,
                fingerprint=FINGERPRINT,
                schema=SCHEMA,
                max_bytes=1 << 20,
                idle_seconds=10.0,
            )
        except WireError as exc:
            self.counters.refused(exc)
            await context.abort(exc.code, exc.reason)
        return pb.PushAck(accepted=True)


async def flood(counters: Counters, pushes: int, size: int) -> list[tuple[str, int]]:
    """`pushes` header-only streams with a random `size`-character swarm id each, over
    real gRPC; each answer's (status, length of its details)."""
    address = f"{HOST}:{free_ports(1)[0]}"
    server = grpc.aio.server()
    pb_grpc.add_SwarmServicer_to_server(Refuser(counters), server)
    server.add_insecure_port(address)
    await server.start()
    answers = []
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.SwarmStub(channel)
            for _ in range(pushes):
                junk = os.urandom(8).hex() + "A" * size
                try:
                    await stub.Push(iter([pb.Chunk(header=header(junk))]), timeout=30)
                    answers.append(("OK", 0))
                except grpc.aio.AioRpcError as exc:
                    answers.append((exc.code().name, len(exc.details() or "")))
    finally:
        await server.stop(None)
    return answers


@pytest.mark.timeout(120)
def test_a_strangers_huge_swarm_ids_cost_a_bounded_log(log_text: io.StringIO) -> None:
    """Before: each refusal logged the whole 900 kB id (1,561 MB of log in 20 s)."""
    pushes, size = 40, 900_000
    clock = Clock()
    counters = Counters(NodeMetrics(), clock=clock)
    answers = asyncio.run(flood(counters, pushes, size))
    assert {code for code, _ in answers} == {"PERMISSION_DENIED"}
    assert max(n for _, n in answers) < 300  # the echoed reason is bounded too
    assert counters.rejected["wrong_swarm"] == pushes  # every one still counted
    written = log_text.getvalue()
    lines = written.splitlines()
    assert len(lines) == REFUSALS_LOGGED  # in full, the rest held back this minute
    assert len(written) < REFUSALS_LOGGED * 400  # bytes: about 250 a line, not 900 kB
    assert all("is not this node's swarm" in line and "..." in line for line in lines)
    clock.now = 61.0
    counters.flush_refusals()
    [summary] = log_text.getvalue().splitlines()[REFUSALS_LOGGED:]
    assert (
        f"{pushes - REFUSALS_LOGGED} more refused messages (wrong_swarm) not logged in the "
        "last 61 s" in summary
    )


def test_short_random_ids_are_written_at_most_20_a_minute(log_text: io.StringIO) -> None:
    """Before: 4,455 WARNING lines in 15 s, each different, none held back."""
    clock = Clock()
    counters = Counters(NodeMetrics(), clock=clock)
    full, lines = [], []
    for minute in range(3):
        before = log_text.getvalue().splitlines()
        for i in range(3000):  # 50 refusals a second for a minute
            clock.now = minute * 60 + i / 50
            try:
                check_header(
                    header(os.urandom(8).hex()),
                    swarm_id=SWARM,
                    fingerprint=FINGERPRINT,
                    schema=SCHEMA,
                    max_bytes=1 << 20,
                )
            except WireError as exc:
                counters.refused(exc)
        new = log_text.getvalue().splitlines()[len(before) :]
        lines.append(len(new))
        full.append(sum("is not this node's swarm" in line for line in new))
    assert counters.rejected["wrong_swarm"] == 9000
    assert full == [REFUSALS_LOGGED] * 3  # in full: 20 a minute
    # and the summary of the minute before (the same line twice within the real 30 s
    # of the test: the repeat filter holds the second back)
    assert lines[0] == REFUSALS_LOGGED and all(n <= REFUSALS_LOGGED + 1 for n in lines)
    assert "2980 more refused messages (wrong_swarm) not logged" in log_text.getvalue()


@pytest.mark.parametrize(
    "change, counter",
    [
        ({"fingerprint": "\x1b[2J" + "F" * 900_000}, "wrong_fingerprint"),
        ({"codec": "fp32\n" + "C" * 900_000}, "unknown_codec"),
        ({"codec": "q8:block=\n7"}, "unknown_codec"),
    ],
)
def test_every_peer_string_in_a_refusal_is_bounded_and_escaped(
    change: dict[str, str], counter: str
) -> None:
    with pytest.raises(WireError) as info:
        check_header(
            header(**change),
            swarm_id=SWARM,
            fingerprint=FINGERPRINT,
            schema=SCHEMA,
            max_bytes=1 << 20,
        )
    assert info.value.counter == counter
    assert len(info.value.reason) < 400
    assert "\n" not in info.value.reason and "\x1b" not in info.value.reason


def test_a_tensor_name_in_a_schema_diff_is_bounded_and_escaped() -> None:
    h = header()
    h.tensors[0].name = "layer.lora_A\n" + "N" * 900_000
    with pytest.raises(WireError) as info:
        check_header(h, swarm_id=SWARM, fingerprint=FINGERPRINT, schema=SCHEMA, max_bytes=1 << 20)
    assert info.value.counter == "wrong_schema"
    assert len(info.value.reason) < 500 and "\n" not in info.value.reason


def test_a_peers_forged_line_stays_on_its_own_line(log_text: io.StringIO) -> None:
    """A neighbour's reason (an ack's, an error's details) with a newline, a forged
    log line, a terminal escape and 1 MB: one line, escaped, cut."""
    log = logging.getLogger("declora.node.daemon.exchange")
    reason = FORGED + "A" * 1_000_000
    log.warning("neighbour %s left the live set: %s", "b", f"push failed: UNAVAILABLE {reason}")
    log.info("%s refused a keyframe: %s", "b", reason)
    lines = log_text.getvalue().splitlines()
    assert len(lines) == 2  # the forged line did not start a line of its own
    for line in lines:
        assert "\x1b" not in line and "FORGED" in line and "\\n2026-12-05" in line
        assert "\\x1b[2J" in line
        assert len(line) < MAX_MESSAGE + 150
        assert line.endswith("more characters cut]")


def test_a_forged_line_stays_one_json_line(log_json: io.StringIO) -> None:
    log = logging.getLogger("declora.node.daemon.rounds")
    log.warning("could not take a neighbour's state (%s)", FORGED + "\u2028" + "A" * 1_000_000)
    [line] = log_json.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "WARNING" and record["node"] == "victim"
    assert "\n" not in record["message"] and "\x1b" not in record["message"]
    assert "\u2028" not in record["message"] and "\\u2028" in record["message"]
    assert len(line) < MAX_MESSAGE + 400


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_quoting_a_peer_cannot_forge_a_line(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception whose message quotes a peer (a forged line, a terminal escape) and
    is logged with its traceback: every traceback line is indented and escaped, and a
    traceback deeper than `MAX_TRACEBACK_LINES` keeps its last lines."""

    def deep(n: int) -> None:
        if n == 0:
            raise ValueError(f"bad payload from b: {FORGED}")
        deep(n - 1)

    for depth in (1, 300):
        out = io.StringIO()
        monkeypatch.setattr(sys, "stderr", out)
        logs.configure("victim", fmt, "INFO")
        try:
            deep(depth)
        except ValueError:
            logging.getLogger("declora.node.daemon.exchange").exception("mixing failed")
        logging.getLogger("declora").handlers.clear()
        text = out.getvalue()
        assert "\x1b" not in text and "FORGED" in text
        if fmt == "json":
            [line] = text.splitlines()
            traceback = json.loads(line)["exc"]
        else:
            line, *rest = text.splitlines()
            assert line.endswith("mixing failed")
            traceback = "\n".join(rest)
        lines = traceback.splitlines()
        assert all(t.startswith("  ") for t in lines), lines  # none starts a record
        assert lines[-2:] == [
            "  ValueError: bad payload from b: ",
            "  2026-12-05 02:00:00,000 WARNING [victim r9] FORGED: the node was compromised"
            "\\x1b[2J",
        ]
        assert len(lines) <= logs.MAX_TRACEBACK_LINES + 1


def test_distinct_warnings_of_one_template_are_capped_and_memory_is_bounded() -> None:
    """A future mistake (a peer string logged raw at WARNING on every message) still
    costs at most `PER_TEMPLATE` lines a window, each bounded, and bounded memory."""
    clock = Clock()
    safe, repeat = logs.SafeFilter(), logs.RepeatFilter(window=30.0, clock=clock)
    written = []
    for i in range(2000):
        clock.now = i / 100  # 2,000 in 20 s
        record = logging.LogRecord(
            "declora.x",
            logging.WARNING,
            __file__,
            1,
            "refused: %s",
            (os.urandom(8).hex() + "A" * 100_000,),
            None,
        )
        if safe.filter(record) and repeat.filter(record):
            written.append(record.getMessage())
    assert len(written) == logs.PER_TEMPLATE
    assert max(map(len, written)) < MAX_MESSAGE + 60
    kept = sum(len(r.getMessage()) for _, _, r in repeat._seen.values())
    assert kept < logs.MAX_TRACKED * (MAX_MESSAGE + 60)  # not 1,000 x 100 kB
    clock.now = 25.0
    [held] = repeat.pending()
    assert held.getMessage().endswith(
        f"({2000 - logs.PER_TEMPLATE} like it held back in the last 25 s; this is the last)"
    )
    # a new window: written again
    clock.now = 56.0
    record = logging.LogRecord(
        "declora.x", logging.WARNING, __file__, 1, "refused: %s", ("z",), None
    )
    assert safe.filter(record) and repeat.filter(record)


def test_why_a_neighbour_left_is_escaped_and_bounded(log_text: io.StringIO) -> None:
    """`PeerTable.drop` with an error's details the neighbour chose (exchange.py's
    "push failed: CODE details"): one line, escaped, at most `WHY` characters of it."""
    forgotten: list[str] = []
    node = SimpleNamespace(forget_peer=forgotten.append)
    table = PeerTable(node, Progress(), None, NodeMetrics(), 4, 1.0)
    peer = Peer(node_id="b", address=f"{HOST}:1", live=True)
    table.peers["b"] = peer
    table.drop(peer, f"push failed: UNKNOWN {FORGED}" + "A" * 1_000_000)
    [line] = log_text.getvalue().splitlines()
    assert "neighbour b left the live set: push failed: UNKNOWN \\n2026-12-05" in line
    assert "\\x1b[2J" in line and "\x1b" not in line
    assert len(line) < WHY + 150 and line.endswith("more characters cut]")
    assert not peer.live and forgotten == ["b"]


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.slow  # ~17 s of a process; test_testspeed3_flood_log.py: the same in-process
def test_a_stranger_without_the_secret_cannot_flood_a_real_nodes_log(cluster: Cluster) -> None:
    """A real `declora-node start` with a swarm secret; a stranger without it pushes
    header-only streams with random 900 kB swarm ids (the header is checked before
    any mac). Before: 1,561 MB of log in 20 s and RSS 510 -> 3,940 MiB. Now: every
    push refused and counted, 20 lines logged in full, each a few hundred bytes, and
    the rest summed up in one line when the node stops. make test checks the same on
    an in-process daemon served over real gRPC (test_testspeed3_flood_log.py)."""
    closed, port = free_ports(2)
    args = [*train_args(cluster.data), "--peers", f"{HOST}:{closed}"]
    node = cluster.add("victim", port, [*args, "--startup-timeout", "600"])
    node.start(env={"DECLORA_SWARM_SECRET": "s3cret-" + "x" * 32})
    cluster.wait_until("the node to serve", node.status, 150.0, running=[node])
    before = len(node.log())
    pushes = 60
    with grpc.insecure_channel(node.address) as channel:
        stub = pb_grpc.SwarmStub(channel)
        codes = set()
        for _ in range(pushes):
            junk = os.urandom(8).hex() + "A" * 900_000
            try:
                stub.Push(iter([pb.Chunk(header=header(junk))]), timeout=30)
            except grpc.RpcError as exc:
                codes.add(exc.code())
                assert len(exc.details() or "") < 300
    assert codes == {grpc.StatusCode.PERMISSION_DENIED}
    reply = node.status()
    assert reply is not None and reply.rejected["wrong_swarm"] == pushes
    grown = node.log()[before:]
    refusals = [line for line in grown.splitlines() if "is not this node's swarm" in line]
    assert len(refusals) == REFUSALS_LOGGED, grown[:5000]
    assert len(grown) < REFUSALS_LOGGED * 500, len(grown)  # not 60 x 900 kB
    node.signal(signal.SIGTERM)
    assert cluster.wait_exit([node], 60.0) == [0], cluster.report()
    assert (
        f"{pushes - REFUSALS_LOGGED} more refused messages (wrong_swarm) not logged" in node.log()
    ), node.log()[-3000:]
