"""One Dec-LoRA participant: local training, compressed gossip, mixing.

`DecLoraNode` is the algorithm of one node with no I/O. A round is

    loss = node.train(K)            # K local AdamW steps on the node's data
    payload = node.outgoing()       # compressed delta of the adapter, sent to neighbours
    node.receive(peer, payload)     # for each neighbour's payload of this round
    node.mix(weights)               # x_i <- x_i + gamma * sum_j w_ij (x̂_j - x̂_i), or robust

With gradient tracking (`tracking=True`, `tracking.py`) every local step's gradient
is corrected by c_i, `tracker_outgoing()` (called right after `outgoing()`) gives the
round's z_i message, `receive_tracker` takes a neighbour's, and `mix` also updates
c_i with the same weights.

The simulator and the daemon both call exactly this sequence, so for the same seeds
and the same live neighbour sets they produce the same adapters. A gossip-only round
(the consensus finish) skips `train` and sends no tracking message.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import numpy as np

from declora.node.gossip import GossipError, GossipState
from declora.node.tracking import GradientTracker, TrackingError
from declora.node.trainer import LocalTrainer

K = TypeVar("K", bound=Hashable)


class DecLoraNode(Generic[K]):
    """A node's trainer plus its gossip state; `peers` are keyed by any hashable id."""

    def __init__(
        self,
        trainer: LocalTrainer,
        codec: str,
        consensus_step: float | None,
        seed: int,
        robust: str = "none",
        tracking: bool = False,
    ) -> None:
        self.trainer = trainer
        x0 = trainer.vector()
        self.gossip: GossipState[K] = GossipState(x0, codec, consensus_step, robust)
        if tracking and self.gossip.robust.spec != "none":
            raise ValueError(
                "gradient tracking trusts every neighbour's gradient message: "
                "it cannot be combined with robust mixing"
            )
        self.tracker: GradientTracker[K] | None = (
            GradientTracker([t.shape for t in trainer.tensors], trainer.lm.device)
            if tracking
            else None
        )
        self._tracker_in: dict[K, np.ndarray] = {}
        self.initial = x0
        self._rng = np.random.default_rng([seed, 0x5EED])
        self.bytes_sent = 0
        self.bytes_received = 0

    def add_peer(self, peer: K, public: np.ndarray | None = None) -> None:
        """Track a neighbour, from the shared seeded init unless `public` is given."""
        self.gossip.add_peer(peer, self.initial if public is None else public)

    def train(self, steps: int, should_stop: Callable[[], bool] | None = None) -> float:
        """K local steps (fewer if `should_stop()` turns true); the mean loss."""
        if self.tracker is None:
            return self.trainer.train_steps(steps, should_stop)
        self.tracker.begin_round()
        return self.trainer.train_steps(steps, should_stop, self.tracker.correct)

    def outgoing(self, forged: np.ndarray | None = None) -> bytes:
        """This round's payload: the compressed change of the adapter since the last one
        (of `forged` instead, for a Byzantine node in the simulator)."""
        x = self.trainer.vector() if forged is None else forged
        return self.gossip.encode_update(x, self._rng)

    def tracker_outgoing(self) -> bytes | None:
        """This round's tracking message z_i (None without tracking or local steps)."""
        if self.tracker is None:
            return None
        return self.tracker.encode(self.gossip.codec, self._rng)

    def receive_tracker(self, peer: K, payload: bytes | np.ndarray) -> None:
        """Keep a neighbour's tracking message (bytes, or an already checked vector) for
        this round's `mix`; raises GossipError and keeps nothing if invalid."""
        if self.tracker is None:
            raise GossipError(f"{peer!r} sent a tracking message; this node does not track")
        if isinstance(payload, np.ndarray):
            self._tracker_in[peer] = payload
            return
        try:
            self._tracker_in[peer] = self.tracker.decode_checked(peer, payload)
        except TrackingError as exc:
            raise GossipError(str(exc)) from exc
        self.bytes_received += len(payload)

    def receive(self, peer: K, payload: bytes) -> None:
        """Apply a neighbour's payload; raises GossipError and changes nothing if invalid."""
        self.gossip.apply_update(peer, payload)
        self.bytes_received += len(payload)

    def mix(self, weights: Mapping[K, float]) -> None:
        """Mix with the neighbours in `weights` (the self weight is implied) by the
        gossip state's rule (plain or robust); with tracking, update c_i too."""
        self.trainer.set_vector(self.gossip.mix(self.trainer.vector(), weights))
        if self.tracker is not None:
            self.tracker.update(weights, self._tracker_in)
            self._tracker_in = {}

    def vector(self) -> np.ndarray:
        return self.trainer.vector()
