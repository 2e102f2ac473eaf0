"""A rolling upgrade: a node of another wire protocol version is refused with a reason
that reads right on both sides (each node named by its id, with its protocol and
release) and says which node to upgrade; the Hello of the previous release (950ddf3,
the same protocol) still joins. The old node's Hello is built by hand: the fields
that release sends."""

from __future__ import annotations

import pytest

from declora.node import PROTOCOL_VERSION, __version__, protocol_note
from declora.node.daemon.admission import check_hello
from declora.proto import pb

RULE = {"node_id": "new", "swarm_id": "s", "fingerprint": "f" * 16, "gradient_tracking": False}


def released_hello(**changes: object) -> pb.Hello:
    """A Hello as declora 950ddf3 sends it (every field it knows; no field was added to
    Hello since), from node 'old'."""
    fields: dict[str, object] = {
        "protocol_version": PROTOCOL_VERSION,
        "package_version": "0.1.0",
        "node_id": "old",
        "swarm_id": "s",
        "fingerprint": "f" * 16,
        "round": 7,
        "live_degree": 1,
        "listen_address": "127.0.0.1:7401",
        "seq": 2,
        "receiver": "127.0.0.1:7402",
    }
    return pb.Hello(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_previous_release_hello_joins() -> None:
    """Guard: 950ddf3 speaks this protocol; its Hello passes the rule."""
    assert check_hello(released_hello(), **RULE) == ""  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("theirs", "upgrade"),
    [(PROTOCOL_VERSION - 1, "'old'"), (PROTOCOL_VERSION + 1, "'new'")],
    ids=["peer-older", "peer-newer"],
)
def test_a_protocol_refusal_names_both_nodes_and_which_to_upgrade(
    theirs: int, upgrade: str
) -> None:
    """Read by the dialler too, where "this node" meant the other one: each side by
    id, protocol and release, and the node of the older protocol to upgrade."""
    got = check_hello(released_hello(protocol_version=theirs), **RULE)  # type: ignore[arg-type]
    assert got.startswith(f"protocol version {theirs} != {PROTOCOL_VERSION}: ")
    assert f"'old' runs declora '0.1.0' (protocol {theirs})" in got
    assert f"'new' declora {__version__!r} (protocol {PROTOCOL_VERSION})" in got
    assert f"upgrade {upgrade}," in got
    assert "this node" not in got and "peer runs" not in got


def test_a_protocol_refusal_bounds_what_the_peer_says() -> None:
    """The peer's id and release are its words: escaped and cut, never as sent (a
    guard); a Hello without a release says "(unknown)" (it said "?")."""
    long = released_hello(
        protocol_version=PROTOCOL_VERSION + 1, node_id="x\n" * 5000, package_version="9" * 10_000
    )
    got = check_hello(long, **RULE)  # type: ignore[arg-type]
    assert "\n" not in got and len(got) < 400
    bare = released_hello(protocol_version=PROTOCOL_VERSION + 1, package_version="")
    assert "'old' runs declora (unknown)" in check_hello(bare, **RULE)  # type: ignore[arg-type]


def test_a_dialler_says_its_protocol_beside_an_older_release_refusal() -> None:
    """950ddf3 words a refusal from its own side ("peer" is the dialler): the dialler
    adds its protocol; this release's words, and other reasons, get nothing."""
    older = (
        f"protocol version {PROTOCOL_VERSION} != {PROTOCOL_VERSION - 1} "
        "(peer runs declora '0.1.0', this node 0.1.0)"
    )
    assert f"its peer is this node, of protocol {PROTOCOL_VERSION}]" in protocol_note(older)
    ours = check_hello(released_hello(protocol_version=PROTOCOL_VERSION + 1), **RULE)  # type: ignore[arg-type]
    assert protocol_note(ours) == ""
    assert protocol_note("swarm 'a' != 'b'") == ""
