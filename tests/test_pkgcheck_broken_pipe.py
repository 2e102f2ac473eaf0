"""`declora-node status | head`: a reader that goes away early ends status quietly.

`status` answers without click (cli/fast.py), which hid a closed stdout as exit 1; the
fast path printed a BrokenPipeError traceback instead (or, with stdout buffered, the
exit's flush printed "Exception ignored ... BrokenPipeError" and exited 120).
"""

from __future__ import annotations

import os
import subprocess

import grpc
import pytest
from daemon_helpers import CLI, HOST, free_ports, serve_fake_peer

from declora.proto import pb, pb_grpc


class StatusOnly(pb_grpc.SwarmServicer):
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(node_id="n0", swarm_id="s", round=3)


@pytest.mark.parametrize("unbuffered", ["", "1"])  # a pipe: written at exit, or at once
def test_status_into_a_closed_pipe_is_no_traceback(unbuffered: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    (port,) = free_ports(1)
    server = serve_fake_peer(StatusOnly(), f"{HOST}:{port}")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: EPIPE, every time
    try:
        done = subprocess.run(
            [*CLI, "status", "--target", f"{HOST}:{port}", "--format", "json"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
            stdin=subprocess.DEVNULL, env={**env, "PYTHONUNBUFFERED": unbuffered},
        )  # fmt: skip
    finally:
        os.close(write)
        server.stop(None)
    assert (done.returncode, done.stderr) == (1, "")
