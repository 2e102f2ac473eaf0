"""Attacks not in the attack table, against real daemon processes (secleft2): a
stranger that opens many TCP connections to a node and never sends a byte (no TLS or
HTTP/2 handshake), and calls with 16 KB of metadata or 300 headers. Printed with -s."""

from __future__ import annotations

import os
import resource
import socket
from contextlib import suppress

import grpc
import pytest
from daemon_helpers import Cluster, live_ids

from declora.proto import pb, pb_grpc

STRANGER = "127.0.0.2"
CONNECTIONS = 2000
SOFT = 1024  # the soft limit of open files n0 starts with
START = 120.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def silent_connections(address: str, n: int, pid: int, peak: list[int]) -> list[socket.socket]:
    """`n` TCP connections to `address` from `STRANGER` that send nothing (fewer when
    one cannot be made); `peak` gets the open files of process `pid` every 100."""
    host, port = address.rsplit(":", 1)
    held = []
    for i in range(n):
        if i % 100 == 0:
            peak.append(open_fds(pid))
        s = socket.socket()
        s.bind((STRANGER, 0))
        s.settimeout(5)
        try:
            s.connect((host, int(port)))
        except OSError:
            s.close()
            break
        held.append(s)
    return held


def status_answered(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.SwarmStub(channel).Status(pb.StatusRequest(), timeout=5)
            return True
        except grpc.RpcError:
            return False


@pytest.mark.integration
@pytest.mark.slow
def test_silent_connections_from_a_stranger_keep_no_caller_out(cluster: Cluster) -> None:
    """n0 runs with a soft limit of 1,024 open files (most systems' default) and this
    machine's hard one. Before, 2,000 silent connections took every descriptor: Status
    answered 0 of 5, and n0 and n1 dropped each other (n0's soft limit is now raised
    to the hard one at start)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 2 * CONNECTIONS:
        pytest.skip(f"a hard limit of {hard} open files leaves no room above 1,024")
    a, b = cluster.static(2, [(0, 1)], ["--rounds", "0", "--eval-every", "0"])
    a.prefix = ["prlimit", f"--nofile={SOFT}:{hard}", "--"]
    a.start()
    b.start()
    cluster.wait_until("n0 and n1 live", lambda: live_ids(a.status()) == {"n1"}, START, [a, b])
    assert a.proc is not None
    pid = a.proc.pid
    before = open_fds(pid)
    # the most open at once: n0 may close a silent connection after 10 s
    # (`transport.HANDSHAKE_MS`), before the last is made on a busy machine
    peak = [before]

    def above_soft_limit() -> bool:
        peak.append(open_fds(pid))
        return max(peak) > SOFT

    held = silent_connections(a.address, CONNECTIONS, pid, peak)
    try:
        cluster.wait_until("n0 holding more than its old soft limit", above_soft_limit, 30)
        answered = [status_answered(a.address) for _ in range(5)]
        live = live_ids(a.status())
        print(
            f"\n{len(held)} silent connections from {STRANGER}: n0's open files {before} -> "
            f"{max(peak)} at most; Status answered {sum(answered)}/5; n0's live {sorted(live)}"
        )
        assert answered == [True] * 5 and live == {"n1"} and a.running()
    finally:
        for s in held:
            with suppress(OSError):
                s.close()


@pytest.mark.integration
@pytest.mark.slow
def test_calls_with_huge_metadata(cluster: Cluster) -> None:
    (a,) = cluster.static(1, [], ["--rounds", "0", "--eval-every", "0", "--solo"])
    a.start()
    cluster.wait_until("n0 answering", lambda: a.status(), START, [a])
    codes = []
    with grpc.insecure_channel(a.address) as channel:
        stub = pb_grpc.SwarmStub(channel)
        for metadata in (
            [("x-big", "a" * 16_384)],
            [(f"x-h{i}", "v") for i in range(300)],
            [("x-big-bin", b"\0" * 65_536)],
        ):
            try:
                stub.Status(pb.StatusRequest(), timeout=5, metadata=metadata)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)  # type: ignore[attr-defined]
    print(f"\nStatus with 16 KB, 300 headers, 64 KB binary metadata: {codes}")
    assert a.running() and a.status() is not None
