"""What every discovery hands the daemon: `PeerInfo` (a peer to dial) and the
`Discovery` interface (rules: `node/discovery.py`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PeerInfo:
    """A peer to dial."""

    address: str  # "host:port" to dial
    node_id: str = ""  # empty for static entries (learned at handshake)
    swarm_id: str = ""
    fingerprint: str = ""
    protocol_version: int = 0


class Discovery(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def peers(self) -> list[PeerInfo]:
        """Current candidates, never including this node."""
        ...

    def dialled(self, address: str, joined: bool) -> None:
        """How a dial of candidate `address` ended (`joined`: a handshake both accepted)."""
        ...


def peer_key(peer: PeerInfo) -> tuple[str, str, str, str, int]:
    """The order of peers: node id, then address, swarm, fingerprint, protocol."""
    return (peer.node_id, peer.address, peer.swarm_id, peer.fingerprint, peer.protocol_version)
