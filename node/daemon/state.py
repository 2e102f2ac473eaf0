"""A daemon's lifecycle state and the progress its parts share.

`Progress` is the one mutable record of where this node is (rounds completed, payloads
produced, lifecycle state, stop request); every part reads it, and only the
orchestrator (`daemon`) and the round exchange (`exchange`) advance it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from declora.node.adapter import AdapterSchema


class NodeState(str, Enum):  # noqa: UP042 (str() and format() keep their Enum form)
    """Where a daemon is in its life; `status` shows the value."""

    STARTING = "starting"
    LOADING = "loading"
    CONNECTING = "connecting"
    WAITING = "waiting"  # for a live neighbour, none being live (`rounds.Isolation`)
    TRAINING = "training"
    EXCHANGING = "exchanging"
    EVALUATING = "evaluating"
    CONSENSUS = "consensus"
    DONE = "done"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Progress:
    """Rounds completed (mixed), payloads produced, state, and the wake-up event.

    A polite stop (`stop_after_round`) lets the round in progress finish, its local
    steps and its mix included: `stop_requested` turns true when the round is
    `completed` (not when a catch-up or alignment moves `round`).
    Once the state has been CONSENSUS (the finish began), an exchange reads as
    CONSENSUS (what `status` shows) while `in_round` still sees it as one.
    """

    def __init__(self) -> None:
        self._round = 0
        self.seq = 0
        self._state = NodeState.STARTING
        self.finishing = False  # the consensus finish began: its exchanges read CONSENSUS
        self.stop_requested = False
        self.stop_pending = False
        self.arrived = asyncio.Event()

    @property
    def state(self) -> NodeState:
        if self.finishing and self._state is NodeState.EXCHANGING:
            return NodeState.CONSENSUS
        return self._state

    @state.setter
    def state(self, value: NodeState) -> None:
        if value is NodeState.CONSENSUS:
            self.finishing = True
        self._state = value

    @property
    def round(self) -> int:
        return self._round

    @round.setter
    def round(self, value: int) -> None:
        """Move the round (a resume, a catch-up, an alignment): a polite stop asked for
        meanwhile still waits for the round in progress (`completed`)."""
        self._round = value

    def completed(self, r: int) -> None:
        """Round `r` has mixed: the round is `r`, and a polite stop asked for while it
        ran stops now."""
        self._round = r
        if self.stop_pending:
            self.stop_now()

    def stop_after_round(self) -> None:
        """Stop once the round in progress has mixed."""
        self.stop_pending = True

    def stopping(self) -> bool:
        """Between rounds: whether to stop, a polite stop asked for (the round in
        progress has ended: a checkpoint or a record was being written) stopping now,
        so no new round starts."""
        if self.stop_pending:
            self.stop_now()
        return self.stop_requested

    def stop_now(self) -> None:
        """Stop at the next check (local steps stop, a round stops waiting)."""
        self.stop_requested = True
        self.wake()

    @property
    def in_round(self) -> bool:
        """Training or exchanging: a round is between its start and its mix."""
        return self._state in (NodeState.TRAINING, NodeState.EXCHANGING)

    @property
    def before_first_round(self) -> bool:
        """Loading or connecting: the node may still catch up to a neighbour."""
        return self._state in (NodeState.LOADING, NodeState.CONNECTING)

    def wake(self) -> None:
        """Wake a round waiting for payloads (a payload, a leave or a stop arrived)."""
        self.arrived.set()


@dataclass
class Identity:
    """What every payload header carries about this node and its adapter."""

    node_id: str
    swarm_id: str
    fingerprint: str
    schema: AdapterSchema
    codec: str
