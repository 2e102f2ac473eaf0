"""A daemon's lifecycle state and the progress its parts share.

`Progress` is the one mutable record of where this node is (rounds completed, payloads
produced, lifecycle state, stop request); every part reads it, and only the
orchestrator (`daemon`) and the round exchange (`exchange`) advance it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum


class NodeState(str, Enum):
    """Where a daemon is in its life; `status` shows the value."""

    STARTING = "starting"
    LOADING = "loading"
    CONNECTING = "connecting"
    TRAINING = "training"
    EXCHANGING = "exchanging"
    EVALUATING = "evaluating"
    CONSENSUS = "consensus"
    DONE = "done"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass
class Progress:
    """Rounds completed (mixed), payloads produced, state, and the wake-up event."""

    round: int = 0
    seq: int = 0
    state: NodeState = NodeState.STARTING
    stop_requested: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def in_round(self) -> bool:
        """Training or exchanging: a round is between its start and its mix."""
        return self.state in (NodeState.TRAINING, NodeState.EXCHANGING)

    @property
    def before_first_round(self) -> bool:
        """Loading or connecting: the node may still catch up to a neighbour."""
        return self.state in (NodeState.LOADING, NodeState.CONNECTING)

    def wake(self) -> None:
        """Wake a round waiting for payloads (a payload, a leave or a stop arrived)."""
        self.arrived.set()
