"""declora.node: the Dec-LoRA core (pure algorithm), its simulator, and the node daemon."""

from declora.node.version import VERSION

__version__ = VERSION  # the source's, not an install's metadata (stale in an editable one)

PROTOCOL_VERSION = 3  # 3: Kill-and-Revive keyframes name their modules (`KRK`)
"""Wire protocol version; peers with another version are refused at handshake."""


def protocol_note(reason: str) -> str:
    """What a dialling node adds to refusal `reason` from a peer: for a protocol-version
    refusal worded by an older release (from the refuser's side: its "peer" is this
    node, its "this node" the refuser), this node's own protocol; '' for any other
    reason, and for one worded by this release (it names both nodes' protocols)."""
    if reason.startswith("protocol version ") and f"(protocol {PROTOCOL_VERSION})" not in reason:
        return f" [the refuser's words: its peer is this node, of protocol {PROTOCOL_VERSION}]"
    return ""
