"""A rolling upgrade across wire protocol versions: a node whose missing peers all
refused its protocol exits with a hint that says so (it said to start the missing
peers, which run, or to wait longer, which changes nothing)."""

from __future__ import annotations

from declora.node import PROTOCOL_VERSION
from declora.node.daemon.admission import check_hello
from declora.node.daemon.startup import startup_failure
from declora.node.settings import load_settings
from declora.proto import pb

PEERS = ["127.0.0.1:1", "127.0.0.1:2"]


def refusal(theirs: int) -> str:
    """How `DialLog` records a dial refused for its protocol by a node of this release
    (the words are the same whichever side is older)."""
    hello = pb.Hello(protocol_version=theirs, node_id="me", package_version="x")
    reason = check_hello(hello, node_id="p", swarm_id="", fingerprint="", gradient_tracking=False)
    return "refused the handshake: " + reason


def test_peers_of_another_protocol_get_the_upgrade_hint() -> None:
    settings = load_settings({"model": "tiny-bert", "peers": ",".join(PEERS)})
    # the words of this release's refusal, and of 950ddf3's (read from the refuser's side)
    old_words = f"refused the handshake: protocol version {PROTOCOL_VERSION} != 2 (peer runs x)"
    outcomes = {PEERS[0]: refusal(PROTOCOL_VERSION + 1), PEERS[1]: old_words}
    failure = startup_failure(settings, 2, PEERS, set(), outcomes)
    assert "never mix" in failure.hint and "upgrade" in failure.hint
    assert "--startup-timeout waits longer" not in failure.hint


def test_a_peer_down_beside_keeps_the_start_hint() -> None:
    """Guard: a missing peer that may still come keeps the hint to start it or wait."""
    settings = load_settings({"model": "tiny-bert", "peers": ",".join(PEERS)})
    down = "connection refused: nothing listens on that port"
    outcomes = {PEERS[0]: refusal(PROTOCOL_VERSION + 1), PEERS[1]: down}
    failure = startup_failure(settings, 2, PEERS, set(), outcomes)
    assert "--startup-timeout waits longer" in failure.hint


def test_the_exit_line_of_an_older_release_refusal_says_this_node_protocol() -> None:
    """950ddf3 words its refusal from its side; the line the exit message shows adds
    this node's protocol (`DialLog` records what the interceptor made of the Welcome)."""
    import asyncio

    from declora.node.daemon.startup import DialLog, _HandshakeWatch

    older = f"protocol version {PROTOCOL_VERSION} != 2 (peer runs declora '0.1.0', this node 0.1.0)"

    class Call:
        def __await__(self):  # type: ignore[no-untyped-def]
            yield from ()
            return pb.Welcome(accepted=False, reason=older)

    class Details:
        method = "/declora.v1.Swarm/Handshake"

    async def continuation(details: object, request: object) -> Call:
        return Call()

    dials = DialLog()
    interceptor = _HandshakeWatch(dials, PEERS[0])
    asyncio.run(interceptor.intercept_unary_unary(continuation, Details(), pb.Hello()))
    line = dials.outcomes[PEERS[0]]
    assert line.startswith(f"refused the handshake: {older} [the refuser's words")
    assert f"of protocol {PROTOCOL_VERSION}]" in line
