"""One Dec-LoRA participant: local training, compressed gossip, mixing.

`DecLoraNode` is the algorithm of one node with no I/O. A round is

    loss = node.train(K)            # K local AdamW steps on the node's data
    payload = node.outgoing()       # compressed delta of the adapter, sent to neighbours
    node.receive(peer, payload)     # for each neighbour's payload of this round
    node.mix(weights)               # x_i <- x_i + gamma * sum_j w_ij (x̂_j - x̂_i), or robust

The method (`methods.py`) is the trainer's model's: ConLoRA's frozen A simply is not
in the adapter vector; DeCAF's `mix` replaces each LoRA module's factor-wise mix by
the refactorised weighted sum of products (`product_mixing.py`); Kill-and-Revive is
the subclass `kill_revive.KillReviveNode` and DECA's block-wise full fine-tuning
`deca.DecaNode` (`Workload.node` picks the class).

With gradient tracking (`tracking=True`, `tracking.py`) every local step's gradient
is corrected by c_i, `tracker_outgoing()` (called right after `outgoing()`) gives the
exchange's z_i message (in each of a round's G exchanges), `receive_tracker` takes a
neighbour's, and `mix` also updates c_i with the same weights.

Chebyshev-accelerated gossip (`acceleration=` lambda) extrapolates each exchange's
mix against the one before; the step after mixing (`step_after_mixing=True`) holds a
round's optimizer step back until the round's last exchange has mixed tracking's z
(`acceleration.py`).

The daemon receives in two halves: `PeerChecks` (the base class) decodes and bounds a
neighbour's message off the event loop and changes nothing; `accept_delta`,
`accept_keyframe` and `receive_tracker` apply what passed. `options_problem` says
which option combinations a node refuses (its constructor raises ValueError).

The simulator and the daemon both call exactly this sequence, so for the same seeds
and the same live neighbour sets they produce the same adapters. The consensus finish is
announced by `begin_finish()`; its gossip-only rounds skip `train` and send no
tracking message.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from declora.node.acceleration import (
    ChebyshevSequence,
    acceleration_problem,
    extrapolate,
    step_after_mixing_problem,
)
from declora.node.codecs import make_codec
from declora.node.gossip import KEYFRAME_CODEC, GossipError, GossipState
from declora.node.methods import combination_problem
from declora.node.product_mixing import LoraPair, lora_pairs, product_mix
from declora.node.schedule import at_round
from declora.node.tracking import GradientTracker, TrackingError
from declora.node.trainer import LocalTrainer

K = TypeVar("K", bound=Hashable)

VALUE_RATIO = 100.0  # a peer's values may be this many times this node's largest
VALUE_FLOOR = 1.0  # ...and at least this large


@dataclass
class NodeSnapshot:
    """What a node's gossip needs to continue after a restart (see `checkpoint`)."""

    vector: np.ndarray  # the adapter x_i
    public: np.ndarray  # the public copy x̂_i every neighbour also holds
    correction: np.ndarray | None  # gradient tracking's c_i, when tracking
    # what the method keeps beside (Kill-and-Revive's module scores), by name
    method_state: dict[str, np.ndarray] = field(default_factory=dict, kw_only=True)


@dataclass
class TrainerSnapshot:
    """A node's gossip state and its optimizer's state, to roll back to (the daemon's
    undo of a round's steps, or of a mix that took a held-back step)."""

    node: NodeSnapshot
    optimizer: dict[str, Any] | None = None  # None: the optimizer is left as it is

    @classmethod
    def of(cls, node: DecLoraNode[Any]) -> TrainerSnapshot:
        return cls(node.snapshot(), copy.deepcopy(node.trainer.optimizer.state_dict()))

    def restore(self, node: DecLoraNode[Any]) -> None:
        node.restore(self.node)
        if self.optimizer is not None:
            node.trainer.optimizer.load_state_dict(self.optimizer)


def options_problem(
    method: str,
    codec: str,
    consensus_step: float | None,
    robust: str,
    tracking: bool,
    *,
    acceleration: float | None,
    step_after_mixing: bool,
    precision: str,
    block_rounds: int,
) -> str:
    """'' when a node can run `method` with these options (`codec` and `robust`: the
    gossip state's specs; gradient tracking, Chebyshev `acceleration`, the step after
    mixing at `precision`, DECA's `block_rounds`), else the one-line reason (the first
    problem found)."""
    if tracking and robust != "none":
        return (
            "gradient tracking trusts every neighbour's gradient message: "
            "it cannot be combined with robust mixing"
        )
    problem = combination_problem(
        method, codec, consensus_step, robust, tracking, block_rounds=block_rounds
    )
    if not problem and acceleration is not None:
        problem = acceleration_problem(method, robust)
    if not problem and step_after_mixing:
        problem = step_after_mixing_problem(method, tracking, 1, precision)
    return problem


class PeerChecks(Generic[K]):
    """The pure half of receiving, for the daemon: decode and validate a neighbour's
    message (off the event loop) while reading this node's state and changing
    nothing; `DecLoraNode`'s `accept_*` and `receive_tracker` apply what passed. Every
    value a peer sends is bounded (`value_limit`) before it may touch state; every
    failure is a GossipError. Method nodes override these checks with their own
    message formats (Kill-and-Revive's masks, DECA's blocks)."""

    gossip: GossipState[K]
    tracker: GradientTracker[K] | None
    _initial_max: float  # the largest |value| of the initial adapter (DECA: block)

    def value_limit(self, cap: float = float("inf")) -> float:
        """The largest |value| a peer's adapter or delta may hold: `VALUE_RATIO` times
        this node's largest (public copy or initial adapter), at least `VALUE_FLOOR`,
        at most `cap`."""
        own = max(float(np.abs(self.gossip.public).max(initial=0.0)), self._initial_max)
        return min(cap, max(VALUE_FLOOR, VALUE_RATIO * own))

    def check_payload(
        self, peer: K, payload: bytes, spec: str | None = None, cap: float = float("inf")
    ) -> np.ndarray:
        """Decode and validate an adapter message without applying it (GossipError):
        sizes, finite values, and every |value| within `value_limit(cap)`."""
        vec = self.gossip.decode_checked(peer, payload, spec)
        _check_bound(peer, vec, self.value_limit(cap))
        return vec

    def check_state(self, peer: K, payload: bytes, cap: float = float("inf")) -> np.ndarray:
        """A full state (`full_state`, for `take_state`), checked as `check_payload` in
        the fp32 codec states travel in; GossipError unless it holds every entry (a
        masked delta passed off as a state does not)."""
        vec = self.check_payload(peer, payload, KEYFRAME_CODEC, cap)
        if not np.isfinite(vec).all():
            raise GossipError(f"state from {peer!r} lacks entries: not a full state")
        return vec

    def check_keyframe(
        self, peer: K, payload: bytes, spec: str | None = None, cap: float = float("inf")
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A keyframe, checked as `check_payload`: the sender's full public copy, and
        the entries it mixes this exchange (None: every entry; Kill-and-Revive says)."""
        return self.check_payload(peer, payload, spec, cap), None

    def check_tracker(self, peer: K, payload: bytes, cap: float = float("inf")) -> np.ndarray:
        """Decode and validate a tracking message without keeping it (GossipError);
        every |value| within `cap`."""
        if self.tracker is None:
            raise GossipError(f"{peer!r} sent a tracking message; this node does not track")
        try:
            vec = self.tracker.decode_checked(peer, payload)
        except TrackingError as exc:
            raise GossipError(str(exc)) from exc
        _check_bound(peer, vec, cap)
        return vec

    def check_pair(self, peer: K, delta: np.ndarray, z: np.ndarray) -> None:
        """Raise GossipError if a checked delta and the z that came with it disagree
        (Kill-and-Revive: their entries); Dec-LoRA's always agree."""


class DecLoraNode(PeerChecks[K]):
    """A node's trainer plus its gossip state; `peers` are keyed by any hashable id."""

    full_model = False  # whether `model_vector` is more than the adapter (DECA's)
    takes_state = True  # whether `take_state` can go on from a neighbour's (catch-up)

    def __init__(
        self,
        trainer: LocalTrainer,
        codec: str,
        consensus_step: float | None,
        seed: int,
        robust: str = "none",
        tracking: bool = False,
        exchanges: int = 1,
        *,
        acceleration: float | None = None,
        step_after_mixing: bool = False,
    ) -> None:
        self.trainer = trainer
        x0 = trainer.vector()
        self.gossip: GossipState[K] = GossipState(x0, codec, consensus_step, robust)
        self.method = trainer.lm.spec.method
        problem = options_problem(
            self.method,
            self.gossip.codec.spec,
            consensus_step,
            self.gossip.robust.spec,
            tracking,
            acceleration=acceleration,
            step_after_mixing=step_after_mixing,
            precision=trainer.lm.precision,
            block_rounds=trainer.lm.spec.deca_block_rounds,
        )
        if problem:
            raise ValueError(problem)
        self.chebyshev = ChebyshevSequence(acceleration)
        self.step_after_mixing = step_after_mixing
        self._pairs: tuple[LoraPair, ...] | None = (
            lora_pairs(trainer.lm.schema) if self.method == "decaf" else None
        )
        self.tracker: GradientTracker[K] | None = (
            GradientTracker([t.shape for t in trainer.tensors], trainer.lm.device, exchanges)
            if tracking
            else None
        )
        self._tracker_in: dict[K, np.ndarray] = {}
        self.initial = x0
        self._initial_max = float(np.abs(x0).max(initial=0.0))
        self._rng = np.random.default_rng([seed, 0x5EED])
        self.bytes_sent = 0
        self.bytes_received = 0

    def add_peer(self, peer: K, public: np.ndarray | None = None) -> None:
        """Track a neighbour, from the shared seeded init unless `public` is given."""
        self.gossip.add_peer(peer, self.initial if public is None else public)

    def train(
        self,
        steps: int,
        should_stop: Callable[[], bool] | None = None,
        round_number: int | None = None,
    ) -> float:
        """K local steps (fewer if `should_stop()` turns true); the mean loss.

        `round_number` (1-based) places the steps on the lr schedule at
        `(round_number - 1) x steps`, so nodes at the same round use the same lr
        whatever rounds they skipped; without it, the trainer's own step count."""
        first = None if round_number is None else at_round(round_number, steps)
        self.chebyshev.restart()
        if self.tracker is None:
            return self.trainer.train_steps(steps, should_stop, first_step=first)
        self.apply_deferred_step()
        self.tracker.begin_round()
        if not self.step_after_mixing:
            return self.trainer.train_steps(steps, should_stop, self.tracker.correct, first)
        if steps != 1:
            raise ValueError(step_after_mixing_problem(self.method, True, steps, "fp32"))
        if should_stop is not None and should_stop():
            return 0.0
        return self.trainer.defer_step(self.tracker.correct, first)

    def begin_finish(self) -> None:
        """The consensus finish starts: every exchange from here on is gossip only.
        Tracking sends no more z; a method that sends part of its adapter in a training
        round (Kill-and-Revive) sends all of it from here. Chebyshev gossip starts a
        new sequence for the finish's exchanges."""
        self.end_round()

    def end_round(self) -> None:
        """Send no more of the current round's tracking z (the finish, a skip ahead, a
        state taken or rolled back): it starts again with the next local steps. A step
        held back for after mixing is taken now, along the correction as it stands."""
        self.apply_deferred_step()
        self.chebyshev.restart()
        if self.tracker is not None:
            self.tracker.end_round()

    def apply_deferred_step(self) -> None:
        """Take the optimizer step held back by `--step-after-mixing` (none: nothing)."""
        if self.tracker is not None and self.trainer.deferred is not None:
            self.trainer.apply_deferred(self.tracker.correction_tensors())

    def outgoing(self, forged: np.ndarray | None = None) -> bytes:
        """This round's payload: the compressed change of the adapter since the last one
        (of `forged` instead, for a Byzantine node in the simulator)."""
        x = self.trainer.vector() if forged is None else forged
        return self.gossip.encode_update(x, self._rng)

    def tracker_outgoing(self) -> bytes | None:
        """This exchange's tracking message z_i (None without tracking, and after the G
        exchanges that follow a round's local steps)."""
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
        self._tracker_in[peer] = self.check_tracker(peer, payload)
        self.bytes_received += len(payload)

    def receive(self, peer: K, payload: bytes) -> None:
        """Apply a neighbour's payload; raises GossipError and changes nothing if invalid."""
        self.gossip.apply_update(peer, payload)
        self.bytes_received += len(payload)

    def mix(self, weights: Mapping[K, float]) -> None:
        """Mix with the neighbours in `weights` (the self weight is implied) by the
        gossip state's rule (plain or robust); with tracking, update c_i too. DeCAF
        mixes each LoRA module in product space (`product_mixing`) instead; without
        neighbours it leaves the adapter as it is. With Chebyshev gossip the mix is
        extrapolated (`acceleration.py`); with the step after mixing, the round's last
        exchange takes the step held back."""
        x = self.trainer.vector()
        mixed = self.gossip.mix(x, weights)
        if self._pairs is not None and weights:
            neighbours = [(w, self.gossip.peers[p]) for p, w in weights.items()]
            mixed = product_mix(self._pairs, x, mixed, neighbours)
        omega, older = self.chebyshev.advance(x)
        self.trainer.set_vector(extrapolate(mixed, older, omega))
        if self.tracker is not None:
            self.tracker.update(weights, self._tracker_in, omega)
            self._tracker_in = {}
            if not self.tracker.carrying:
                self.apply_deferred_step()

    def vector(self) -> np.ndarray:
        return self.trainer.vector()

    def model_vector(self) -> np.ndarray:
        """What `lm.evaluate` and `lm.save_adapter` take for this node: the adapter
        (DECA: every block, `deca.DecaNode`)."""
        return self.trainer.vector()

    def agreement_vector(self) -> np.ndarray:
        """What the consensus finish compares across nodes: the adapter (DECA: the
        whole model's change from the shared base, `deca.DecaNode`)."""
        return self.trainer.vector()

    # ------------------------------------------------------------ the daemon's API
    # A networked node receives payloads concurrently and checks them off the event
    # loop before they may touch state; `receive` is split into a pure check (the
    # `PeerChecks` base) and the applies here, so nothing outside the core touches
    # gossip internals.

    @property
    def codec_spec(self) -> str:
        return self.gossip.codec.spec

    @property
    def robust_spec(self) -> str:
        return self.gossip.robust.spec

    @property
    def size(self) -> int:
        """Number of values in the adapter vector."""
        return self.gossip.size

    def keyframe(self) -> bytes:
        """The full public copy x̂_i (fp32), for a neighbour that is new or out of step."""
        return self.gossip.keyframe()

    def full_state(self, vector: np.ndarray | None = None) -> bytes:
        """The adapter x_i in full (fp32), for a neighbour catching up (`take_state`);
        `vector`: a copy of it taken earlier (reads nothing else of the node)."""
        vec = self.vector() if vector is None else vector
        return make_codec(KEYFRAME_CODEC).encode(vec, np.random.default_rng(0))

    def forget_peer(self, peer: K) -> None:
        """Drop `peer`'s public copy: its next message must be a keyframe."""
        self.gossip.drop_peer(peer)
        self._tracker_in.pop(peer, None)

    def accept_delta(self, peer: K, delta: np.ndarray, scale: float) -> None:
        """Add a checked delta (sent with a codec of update scale `scale`) to peer's copy."""
        self.gossip.add_delta(peer, delta, scale)

    def accept_keyframe(
        self, peer: K, public: np.ndarray, entries: np.ndarray | None = None
    ) -> None:
        """Replace peer's public copy with a checked full vector (`check_keyframe`:
        `entries` are those its sender mixes this exchange)."""
        self.gossip.set_copy(peer, public)

    def take_state(self, vector: np.ndarray) -> None:
        """Continue from another node's full state (catch-up): adapter and public copy
        become `vector`; every neighbour's copy is forgotten (keyframes follow)."""
        self.trainer.deferred = None  # the state replaced is the one it would step
        self.trainer.set_vector(vector)
        self.gossip.public = np.array(vector, dtype=np.float32, copy=True)
        self.end_round()
        for peer in list(self.gossip.peers):
            self.forget_peer(peer)

    def snapshot(self) -> NodeSnapshot:
        """Copies of the state a checkpoint keeps beside the trainer's."""
        correction = None if self.tracker is None else self.tracker.correction()
        return NodeSnapshot(self.vector(), self.gossip.public.copy(), correction)

    def restore(self, snap: NodeSnapshot) -> None:
        """Undo to `snap` (the trainer's vector, public copy and correction); a step
        held back for after mixing is dropped with the state it came from."""
        self.trainer.deferred = None
        self.trainer.set_vector(snap.vector)
        self.gossip.public = np.array(snap.public, dtype=np.float32, copy=True)
        if self.tracker is not None and snap.correction is not None:
            self.tracker.set_correction(snap.correction)
        self.end_round()  # a z mixed from the undone state is not sent

    def is_finite(self) -> bool:
        """Whether the adapter (and the tracking correction) hold finite values only."""
        ok = bool(np.isfinite(self.vector()).all())
        if self.tracker is not None:
            ok = ok and bool(np.isfinite(self.tracker.correction()).all())
        return ok

    def disagreement(self, peers: Iterable[K]) -> float:
        """max over `peers` of ||x̂_j - x_i|| / ||x_i|| (0 without copies)."""
        x = self.vector()
        scale = max(float(np.linalg.norm(x)), 1e-12)
        dists = [
            float(np.linalg.norm(self.gossip.peers[p] - x)) / scale
            for p in peers
            if p in self.gossip.peers
        ]
        return max(dists, default=0.0)

    def digest(self, h: hashlib._Hash | None = None) -> hashlib._Hash:
        """SHA-256 fed with the adapter, the public copies, the correction, a step held
        back and Chebyshev's place."""
        h = h or hashlib.sha256()
        h.update(self.vector().tobytes())
        h.update(self.gossip.public.tobytes())
        for pid in sorted(self.gossip.peers, key=repr):
            h.update(repr(pid).encode() + b"\0" + self.gossip.peers[pid].tobytes())
        if self.tracker is not None:
            h.update(self.tracker.correction().tobytes())
        if self.trainer.deferred is not None:
            for g in self.trainer.deferred[0]:
                h.update(g.detach().to("cpu").numpy().tobytes())
        self.chebyshev.feed(h)
        return h


def _check_bound(peer: object, vec: np.ndarray, limit: float) -> None:
    biggest = float(np.abs(vec).max(initial=0.0))
    if not biggest <= limit:  # NaN too
        raise GossipError(
            f"payload from {peer!r} holds |value| {biggest:.3g}, above the bound {limit:.3g} "
            "(100x this node's largest, or --max-value)"
        )
