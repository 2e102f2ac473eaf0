"""The networked shell of the core: one daemon per machine (`declora-node start`).

`daemon` is the orchestrator; each other module owns one concern: `parts` (build
and wire a node), `rounds` (the train loop, roll-back), `persistence` (checkpoints,
final adapter, history), `transport` (gRPC server, channels, health), `peers` (the
peer table and live set), `handshake` (identity, Hellos, dialling), `inbox`
(receiving and checking pushes), `exchange` (one round: push, wait, mix, align),
`catchup` (full states: Pull and catch-up), `service` (the RPCs, handed to their
owners), `status` (Status, digest, history lines), `state` (the lifecycle enum and
shared progress), `launch` (bind first, then load), `gate` (the servicer while
loading), `startup` (user errors, dial outcomes).

`Daemon` and `serve` are imported on first use, so the light modules (`launch`,
`transport`) load without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from declora.node.daemon.daemon import Daemon, serve

__all__ = ["Daemon", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from declora.node.daemon import daemon

        return getattr(daemon, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
