"""An mDNS swarm whose only neighbour finishes and leaves first: this node finishes too.

Real `declora-node` processes found by real mDNS on 127.0.0.1 (as test_daemon.py's
mDNS test): `early` trains 2 rounds with no consensus finish, says goodbye and exits;
`late` trains its other rounds alone (each waits a round deadline for a neighbour:
`rounds.Isolation`), runs its consensus finish with nobody live and exits 0 with its
final adapter, as a `--peers` node does. A guard: it passed before this stop too."""

from __future__ import annotations

import pytest
from daemon_helpers import HOST, Cluster, free_ports, train_args

# ~50 s (three 10 s isolation waits); test_daemon.py keeps real mDNS in make test
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(360)]

START = 150.0  # seconds: bounds, not expectations (see test_daemon.py)
RUN = 150.0


def test_mdns_node_finishes_after_its_only_neighbour_finished(cluster: Cluster) -> None:
    ports = free_ports(2)
    common = [*train_args(cluster.data), "--mdns", "--mdns-interface", HOST]
    common += ["--swarm-id", cluster.swarm_id, "--eval-every", "0", "--min-peers", "1"]
    common += ["--round-deadline", "10", "--startup-timeout", "600"]
    short = ["--partition", "0/2", "--rounds", "2", "--consensus-rounds", "0"]
    early = cluster.add("early", ports[0], [*common, *short])
    late = cluster.add("late", ports[1], [*common, "--partition", "1/2", "--rounds", "5"])
    early.start()
    late.start()
    assert cluster.wait_exit([early], START + RUN) == [0], cluster.report()
    assert cluster.wait_exit([late], RUN) == [0], cluster.report()
    log = late.log()
    assert "neighbour early" in log and "joined the live set" in log, cluster.report()
    assert "mixed with 1 neighbours" in log, cluster.report()  # they did gossip
    assert (late.ckpt / "adapter" / "adapter_model.safetensors").is_file(), cluster.report()
