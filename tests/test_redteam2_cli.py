"""The CLI against a hostile node (a fake Status server on 127.0.0.1, real gRPC): odd
numbers (NaN, infinities, 1e308, 2^64-1) are shown bounded, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from daemon_helpers import free_ports, serve_fake_peer
from typer.testing import CliRunner

from declora.cli.app import app
from declora.proto import pb, pb_grpc

runner = CliRunner()
WIDEST_LINE = 400  # columns: the longest honest line is far below, 1e308 at .2f is 312


class OddNumbers(pb_grpc.SwarmServicer):
    """Answers Status with every float a node could send but should not."""

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        reply = pb.StatusReply(
            node_id="evil",
            swarm_id="s",
            state="training",
            round=2**64 - 1,
            loss=float("nan"),
            self_weight=float("inf"),
            last_round_seconds=-1e308,
            started_unix=float("nan"),
        )
        reply.last_eval["acc"] = 1e308
        for i, weight in enumerate((float("nan"), float("-inf"), 1e308)):
            reply.neighbors.add(
                node_id=f"x{i}",
                address="127.0.0.9:1",
                weight=weight,
                last_seen_unix=float("nan"),
                round=2**64 - 1,
                bytes_sent=2**64 - 1,
            )
        return reply


def rows(output: str) -> list[list[str]]:
    """The neighbour rows of a table (boxed or not), split into cells."""
    lines = (line.replace("\u2502", " ").split() for line in output.splitlines())
    return [cells for cells in lines if cells and cells[0].startswith("x")]


@pytest.fixture
def odd_node() -> Iterator[str]:
    address = f"127.0.0.1:{free_ports(1)[0]}"
    server = serve_fake_peer(OddNumbers(), address)
    try:
        yield address
    finally:
        server.stop(None)


def test_inspect_target_shows_a_nodes_nan_weight_without_a_traceback(odd_node: str) -> None:
    # before: TypeError (unsupported format string passed to NoneType.__format__)
    res = runner.invoke(app, ["inspect", "--target", odd_node])
    assert res.exit_code == 0, res.output
    assert res.exception is None
    assert [row[3] for row in rows(res.stdout)] == ["-", "-", "1e+308"], res.stdout


def test_status_bounds_a_nodes_huge_and_odd_numbers(odd_node: str) -> None:
    res = runner.invoke(app, ["status", "--target", odd_node])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.stdout.splitlines()) < WIDEST_LINE, res.stdout
    assert "last round -1e+308s" in res.stdout and "acc 1e+308" in res.stdout
    assert "loss nan" in res.stdout and "self weight inf" in res.stdout
    shown = [(row[3], row[5]) for row in rows(res.stdout)]
    assert shown == [("nan", "-"), ("-inf", "-"), ("1e+308", "-")], res.stdout
