"""A node restarted from an old checkpoint beside a neighbour `GAP` rounds on, on real
`declora-node` processes (make test-slow; the in-process check of the same holds:
tests/test_netleft_holds.py). With robust mixing and one neighbour the restarted
node moves at most 8 rounds a deadline (`catchup.LONE_SKIP_PACE`), so it stays
beyond the push window for several rounds: before, each re-join of it was pushed a
round it refused (`future_round`, 4 in the run this test was written from); now the
node ahead holds its pushes after the first (`push_held`, once) and the two still
end in step."""

from __future__ import annotations

import signal

import pytest
from daemon_helpers import HOST, Cluster, Node, free_ports, train_args

from declora.node.daemon.inbox import MAX_ROUNDS_AHEAD

# rounds the node ahead runs while the other is down: past the push window, so its
# first push after the restart is refused and held, and few enough that the restarted
# node comes in step within two deadlines (`catchup.LONE_SKIP_PACE` a deadline)
GAP = MAX_ROUNDS_AHEAD + 4
START = 2  # the round both reach first: the restarted node's checkpoint


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_node_restarted_far_behind_is_refused_once_and_comes_in_step(
    cluster: Cluster,
) -> None:
    p0, p1 = free_ports(2)
    common = [
        *train_args(cluster.data),
        *("--swarm-id", cluster.swarm_id, "--rounds", "400", "--robust-mixing", "clip"),
        *("--eval-every", "0", "--round-deadline", "5", "--checkpoint-every", str(START)),
        *("--startup-timeout", "300"),
    ]
    n0 = cluster.add("n0", p0, [*common, "--peers", f"{HOST}:{p1}", "--partition", "0/2"])
    n1 = cluster.add("n1", p1, [*common, "--peers", f"{HOST}:{p0}", "--partition", "1/2"])
    n0.args += ["--min-peers", "0"]  # runs on alone while n1 is down

    def rounds(node: Node) -> int:
        reply = node.status()
        return -1 if reply is None else int(reply.round)

    n1.start()
    n0.start()
    cluster.wait_until(f"both at round {START}", lambda: min(rounds(n0), rounds(n1)) >= START, 400)
    n1.signal(signal.SIGTERM)
    assert n1.proc is not None and n1.proc.wait(timeout=120) == 0
    cluster.wait_until(f"n0 {GAP} rounds on", lambda: rounds(n0) >= START + GAP, 400, [n0])
    n1.start(["--resume"])
    cluster.wait_until(
        "n1 in step with n0", lambda: rounds(n1) >= max(rounds(n0) - 1, START + GAP), 400, [n0, n1]
    )
    s0, s1 = n0.status(), n1.status()
    assert s0 is not None and s1 is not None
    assert s1.rejected.get("future_round", 0) <= 1, cluster.report()
    assert s0.rejected.get("push_held", 0) <= 1, cluster.report()
    assert "Traceback" not in n0.log() + n1.log(2), cluster.report()
