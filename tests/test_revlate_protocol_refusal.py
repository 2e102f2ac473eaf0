"""A protocol-version refusal read where it matters: the dialler logs a peer's refusal
cut to its first 300 characters (`safe_text(welcome.reason, 300)` in handshake and
startup). With long node ids the refusal ran past 300 and the dialler's copy cut the
one new thing it says, the id of the node to upgrade, which it named last."""

from __future__ import annotations

import pytest

from declora.node import PROTOCOL_VERSION
from declora.node.daemon.admission import check_hello
from declora.node.logs import safe_text
from declora.proto import pb

DIALLER_KEEPS = 300  # what handshake.py and startup.py keep of a refusal
OLD, NEW = "gpu-box-03.lab.example.org:7070", "gpu-box-04.lab.example.org:7070"
RULE = {"swarm_id": "s", "fingerprint": "f" * 16, "gradient_tracking": False}


def test_the_dialler_reads_the_whole_id_of_the_node_to_upgrade() -> None:
    """The dialler (64 characters, the most a node id may have) runs the older protocol:
    the refuser's words name it in full within what the dialler keeps (the old wording
    put it last, cut to 'nnnnnnnnnnnnnnnnnn...'); its release is 40 characters."""
    hello = pb.Hello(
        protocol_version=PROTOCOL_VERSION + 1, package_version="9" * 60, node_id="o" * 64
    )
    got = check_hello(hello, node_id="n" * 64, **RULE)  # type: ignore[arg-type]
    assert f"upgrade {'n' * 64!r}" in safe_text(got, DIALLER_KEEPS), got


@pytest.mark.parametrize(
    ("theirs", "upgrade"),
    [(PROTOCOL_VERSION - 1, OLD), (PROTOCOL_VERSION + 1, NEW)],
    ids=["peer-older", "peer-newer"],
)
def test_hostname_ids_keep_the_action(theirs: int, upgrade: str) -> None:
    """Guard: ids derived from hostname:port (31 characters)."""
    hello = pb.Hello(protocol_version=theirs, package_version="0.1.0", node_id=OLD)
    got = check_hello(hello, node_id=NEW, **RULE)  # type: ignore[arg-type]
    assert f"upgrade {upgrade!r}" in safe_text(got, DIALLER_KEEPS), got
