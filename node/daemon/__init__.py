"""The networked shell of the core: one daemon per machine (`declora-node start`).

`daemon` is the orchestrator; each other module owns one concern: `transport`
(gRPC server, channels, health), `peers` (the peer table and live set), `handshake`
(identity, Hellos, dialling), `exchange` (one round: push, accept, wait, mix),
`service` (the RPCs, handed to their owners), `status` (Status, digest, history),
`state` (the lifecycle enum and shared progress).
"""

from declora.node.daemon.daemon import Daemon, serve

__all__ = ["Daemon", "serve"]
