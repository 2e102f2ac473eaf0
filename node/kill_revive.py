"""Kill-and-Revive active-module selection (DLoRA: Gao & Zhang, EMNLP 2024 Findings,
arXiv 2404.05182, "Halt and Proceed" in its final version), as a `DecLoraNode`.

Only a chosen subset of the LoRA modules trains and is sent each round. The paper's
exact scoring, budget and schedule were not available here; what is implemented:

- score of a module: ||B1 A1 - B0 A0||_F, the change of its update B·A over the last
  round in which it trained (from 2r x 2r Gram matrices, never the dense matrix);
- a module is every LoRA parameter of one adapted layer (`lora_names.lora_module`):
  A, B and, with DoRA, its magnitude vector;
- budget: the `KEEP_FRACTION` (1/8, at least one) highest-scoring modules are active;
  the others are killed: frozen during training (requires_grad off, so no gradient
  and no backward through their parameters), and not sent;
- revive: in rounds 1, 9, 17, ... (`revives`: every `REVIVE_EVERY`-th of the
  swarm-wide round number the simulator and the daemon pass to `train`, so
  neighbours revive together whatever rounds they skipped or jumped by a catch-up)
  every module is active and re-scored. Every exchange of a round (G of them with
  `gossip_steps`) sends and mixes that round's modules; the consensus finish
  (`begin_finish`) sends and mixes every module;
- state: the scores are all a node keeps beyond its adapter and gossip; `snapshot`
  and `restore` carry them (`NodeSnapshot.method_state`), so a rolled-back round
  leaves them as they were and a checkpoint resumes them;
- message: every adapter message is `MAGIC`, the module count (u16), the module mask
  (bits, little-endian), then the codec payload of the entries the mask selects (its
  modules' parameters and every non-LoRA entry, e.g. the head): a killed module sends
  no bytes. A state (the adapter, for a catch-up) carries every module. A keyframe
  (the public copy) carries every entry after `KEYFRAME` and the mask of the modules
  its sender mixes this exchange;
- mixing: module m of neighbour j enters node i's step only if both had m active this
  exchange (a keyframe says which j had); the self weight keeps the rest, so
  per entry the weights stay symmetric and doubly stochastic and the swarm's average
  is preserved (CHOCO's step with gamma and the public copies, as for Dec-LoRA).

The daemon needs nothing of its own: it sends `outgoing`, `keyframe` and `full_state`
and checks them with `check_payload` (a delta or a state: the full-size vector with
NaN at the entries the sender did not send, a value no valid delta holds;
`accept_delta` reads the sender's mask back from it) and `check_keyframe` (the
public copy and the sender's entries, passed on to `accept_keyframe`). A catch-up
(`take_state`) keeps this node's scores. Robust mixing is refused (`methods.combination_problem`).

Gradient tracking (`tracking.py`) works entry by entry: a killed module takes no
gradient, so no correction either (its c_i waits); the round's z carries the same
mask and the active entries only (`tracker_outgoing`), and c_i moves at an entry only
where both ends sent it, so sum_i c_i stays zero as in Dec-LoRA.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import numpy as np

from declora.node.codecs import CodecError, decode
from declora.node.dec_lora import DecLoraNode, NodeSnapshot, _check_bound
from declora.node.gossip import GossipError
from declora.node.lora_names import A_MARK, lora_module
from declora.node.product_mixing import LoraPair, lora_pairs
from declora.node.tracking import TrackingError
from declora.node.trainer import LocalTrainer

K = TypeVar("K", bound=Hashable)

KEEP_FRACTION = 1 / 8
REVIVE_EVERY = 8
MAGIC = b"KR1"  # a delta or a state: the mask says which entries follow
KEYFRAME = b"KRK"  # a keyframe: every entry follows; the mask is the round's modules
SCORES = "kill_revive_scores"  # the scores' key in `NodeSnapshot.method_state`
_HEAD = struct.Struct("<3sH")


def revives(round_number: int) -> bool:
    """Whether round `round_number` (1-based) trains and sends every module."""
    return (round_number - 1) % REVIVE_EVERY == 0


def update_change(a0: np.ndarray, b0: np.ndarray, a1: np.ndarray, b1: np.ndarray) -> float:
    """||B1 A1 - B0 A0||_F without forming either product."""
    x = np.concatenate([b1, -b0], axis=1).astype(np.float64)  # out x 2r
    y = np.concatenate([a1, a0], axis=0).astype(np.float64)  # 2r x in
    return math.sqrt(max(float(np.sum((x.T @ x) * (y @ y.T))), 0.0))


def pack_mask(modules: np.ndarray, magic: bytes = MAGIC) -> bytes:
    return _HEAD.pack(magic, len(modules)) + np.packbits(modules, bitorder="little").tobytes()


def unpack_mask(payload: bytes, count: int, magic: bytes = MAGIC) -> tuple[np.ndarray, bytes]:
    """(module mask, the codec payload after it) of a message that must start with
    `magic`; GossipError if malformed."""
    need = _HEAD.size + (count + 7) // 8
    if len(payload) < need:
        raise GossipError(f"kill-revive message of {len(payload)} bytes lacks its mask")
    got, n = _HEAD.unpack_from(payload)
    if got != magic:
        kind = "keyframe" if magic == KEYFRAME else "delta or state"
        raise GossipError(f"not a kill-revive {kind} message (its mask header is {got!r})")
    if n != count:
        raise GossipError(f"kill-revive mask for {n} modules, this adapter has {count}")
    bits = np.frombuffer(payload, np.uint8, need - _HEAD.size, _HEAD.size)
    mask = np.unpackbits(bits, bitorder="little").astype(bool)
    if mask[count:].any():
        raise GossipError("kill-revive mask has bits beyond its modules")
    return mask[:count], payload[need:]


class KillReviveNode(DecLoraNode[K]):
    """A Dec-LoRA node that trains, sends and mixes only its active LoRA modules."""

    def __init__(self, trainer: LocalTrainer, *args: Any, **kwargs: Any) -> None:
        super().__init__(trainer, *args, **kwargs)
        schema = trainer.lm.schema
        self.pairs: tuple[LoraPair, ...] = lora_pairs(schema)
        modules = [lora_module(n) for n in schema.names if A_MARK in n]  # the pairs' order
        index = {name: k for k, name in enumerate(modules)}
        # each tensor's module (len(modules) for a non-LoRA tensor, e.g. the head)
        owner = [index.get(lora_module(n), len(modules)) for n in schema.names]
        self._params = [  # each module's indices among the trainer's tensors
            tuple(i for i, o in enumerate(owner) if o == k) for k in range(len(modules))
        ]
        self._module = np.repeat(owner, [t.numel for t in schema.tensors])  # per entry
        m = len(self.pairs)
        self.keep = max(1, math.ceil(KEEP_FRACTION * m))
        self.scores = np.zeros(m)
        self.round = 0  # the round last trained
        self.active = np.ones(m, dtype=bool)  # this round's modules (after `train`)
        self.finishing = False  # in the consensus finish: every module travels
        self._own = np.ones(self.size, dtype=bool)  # entries of this round's message
        self._own_modules = np.ones(m, dtype=bool)  # ...and its module mask
        self._sent_in: dict[K, np.ndarray] = {}  # entries each neighbour sent this round

    # -------------------------------------------------------------- selection
    def choose(self, round_number: int) -> np.ndarray:
        """The modules round `round_number` trains: all on a revive round, else the
        `keep` highest scores (ties: the lower index)."""
        if revives(round_number):
            return np.ones(len(self.pairs), dtype=bool)
        mask = np.zeros(len(self.pairs), dtype=bool)
        mask[np.argsort(-self.scores, kind="stable")[: self.keep]] = True
        return mask

    def entries(self, modules: np.ndarray) -> np.ndarray:
        """The vector entries of `modules`, plus every non-LoRA entry (always active)."""
        return np.append(np.asarray(modules, dtype=bool), True)[self._module]

    def train(
        self,
        steps: int,
        should_stop: Callable[[], bool] | None = None,
        round_number: int | None = None,
    ) -> float:
        """K local steps of round `round_number` (by default the round after the last
        trained) on its active modules only (the killed ones frozen); then the active
        modules are re-scored."""
        self.round = self.round + 1 if round_number is None else round_number
        self.active = self.choose(self.round)
        self.finishing = False
        before = self.vector()
        params = self.trainer.lm.params
        for on, idx in zip(self.active, self._params, strict=True):
            for i in idx:
                params[i].requires_grad_(bool(on))
        try:
            loss = super().train(steps, should_stop, round_number)
        finally:
            for param in params:
                param.requires_grad_(True)
        after = self.vector()
        for k, p in enumerate(self.pairs):
            if self.active[k]:
                a0, a1 = before[p.a].reshape(p.a_shape), after[p.a].reshape(p.a_shape)
                b0, b1 = before[p.b].reshape(p.b_shape), after[p.b].reshape(p.b_shape)
                self.scores[k] = update_change(a0, b0, a1, b1)
        return loss

    def begin_finish(self) -> None:
        """The consensus finish: from here every message carries every module."""
        super().begin_finish()
        self.finishing = True

    # -------------------------------------------------------------- messages
    def outgoing(self, forged: np.ndarray | None = None) -> bytes:
        """The mask and the compressed change of the round's active entries (every
        entry in the consensus finish); the public copy advances on those only."""
        modules = self._every() if self.finishing else self.active
        self._own_modules, self._own = modules, self.entries(modules)
        x = self.trainer.vector() if forged is None else forged
        return pack_mask(modules) + self.gossip.encode_update(x, self._rng, self._own)

    def tracker_outgoing(self) -> bytes | None:
        """This exchange's z (gradient tracking) of the entries `outgoing` sent, under
        the same mask; None without tracking or without a z this exchange."""
        if self.tracker is None:
            return None
        payload = self.tracker.encode(self.gossip.codec, self._rng, self._own)
        return None if payload is None else pack_mask(self._own_modules) + payload

    def check_tracker(self, peer: K, payload: bytes, cap: float = float("inf")) -> np.ndarray:
        """A neighbour's z, full size with NaN where its mask sent nothing
        (GossipError if the mask, the sizes or the values are wrong)."""
        tracker = self.tracker
        if tracker is None:
            raise GossipError(f"{peer!r} sent a tracking message; this node does not track")

        def part(body: bytes, count: int) -> np.ndarray:
            try:
                return tracker.decode_checked(peer, body, count=count)
            except TrackingError as exc:
                raise GossipError(str(exc)) from exc

        return self._unmask(peer, payload, part, cap)

    def check_pair(self, peer: K, delta: np.ndarray, z: np.ndarray) -> None:
        """GossipError unless the z sent with a delta holds the delta's entries."""
        _same_entries(peer, np.isfinite(delta), z)

    def receive_tracker(self, peer: K, payload: bytes | np.ndarray) -> None:
        """Keep a neighbour's z (GossipError, nothing kept, if invalid or, after its
        delta this exchange, under another mask)."""
        if isinstance(payload, np.ndarray):
            super().receive_tracker(peer, payload)
            return
        z = self.check_tracker(peer, payload)
        if peer in self._sent_in:  # its delta of this exchange came first
            _same_entries(peer, self._sent_in[peer], z)
        super().receive_tracker(peer, z)
        self.bytes_received += len(payload)

    def keyframe(self) -> bytes:
        """The full public copy, headed by the modules this node mixes this exchange
        (those of its last `outgoing`), so that the receiver mixes the same ones; the
        daemon sends it by Push in place of that exchange's delta (a Pull serves states
        only, so no keyframe leaves between exchanges with a stale mask)."""
        return pack_mask(self._own_modules, KEYFRAME) + super().keyframe()

    def check_keyframe(
        self, peer: K, payload: bytes, spec: str | None = None, cap: float = float("inf")
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A keyframe's full public copy and the entries its sender mixes this
        exchange (GossipError if the mask, the sizes or the values are wrong)."""
        modules, body = unpack_mask(payload, len(self.pairs), KEYFRAME)
        return super().check_payload(peer, body, spec, cap), self.entries(modules)

    def full_state(self, vector: np.ndarray | None = None) -> bytes:
        """The full adapter, under a mask of every module."""
        return pack_mask(self._every()) + super().full_state(vector)

    def _every(self) -> np.ndarray:
        return np.ones(len(self.pairs), dtype=bool)

    def check_payload(
        self, peer: K, payload: bytes, spec: str | None = None, cap: float = float("inf")
    ) -> np.ndarray:
        """The full-size delta, NaN where the sender sent nothing (GossipError if
        the mask, the sizes or the values are wrong)."""

        def part(body: bytes, count: int) -> np.ndarray:
            try:
                values = decode(body, max_n=self.size, spec=spec)
            except CodecError as exc:
                raise GossipError(f"payload from {peer!r}: {exc}") from exc
            if values.shape != (count,) or not np.isfinite(values).all():
                raise GossipError(
                    f"payload from {peer!r} holds {values.size} values for a mask of {count}, "
                    "or non-finite ones"
                )
            return values

        return self._unmask(peer, payload, part, self.value_limit(cap))

    def _unmask(
        self,
        peer: K,
        payload: bytes,
        part: Callable[[bytes, int], np.ndarray],
        limit: float,
    ) -> np.ndarray:
        """A masked message as a full-size vector, NaN where the mask sent nothing:
        `part(body, count)` decodes and checks the masked values, each within `limit`."""
        modules, body = unpack_mask(payload, len(self.pairs))
        sent = self.entries(modules)
        values = part(body, int(sent.sum()))
        _check_bound(peer, values, limit)
        full = np.full(self.size, np.nan, dtype=np.float32)
        full[sent] = values
        return full

    def accept_delta(self, peer: K, delta: np.ndarray, scale: float) -> None:
        sent = np.isfinite(delta)
        super().accept_delta(peer, np.where(sent, delta, 0.0).astype(np.float32), scale)
        self._sent_in[peer] = sent

    def receive(self, peer: K, payload: bytes) -> None:
        self.accept_delta(peer, self.check_payload(peer, payload), self.gossip.update_scale)
        self.bytes_received += len(payload)

    def accept_keyframe(
        self, peer: K, public: np.ndarray, entries: np.ndarray | None = None
    ) -> None:
        super().accept_keyframe(peer, public)
        if entries is None:  # no round's modules said: mix this node's own
            self._sent_in.pop(peer, None)
        else:
            self._sent_in[peer] = np.asarray(entries, dtype=bool)

    def forget_peer(self, peer: K) -> None:
        super().forget_peer(peer)
        self._sent_in.pop(peer, None)

    # -------------------------------------------------------------- state
    def snapshot(self) -> NodeSnapshot:
        snap = super().snapshot()
        snap.method_state[SCORES] = self.scores.copy()
        return snap

    def restore(self, snap: NodeSnapshot) -> None:
        """Undo to `snap`, the module scores included (where it holds them)."""
        super().restore(snap)
        if SCORES in snap.method_state:
            self.scores = np.array(snap.method_state[SCORES], dtype=np.float64, copy=True)

    # -------------------------------------------------------------- mixing
    def mix(self, weights: Mapping[K, float]) -> None:
        """x_i + gamma * sum_j w_ij [entries active at both] (x̂_j - x̂_i); with
        tracking, c_i moves too (at the entries both z hold)."""
        g = self.gossip
        step = np.zeros(self.size, dtype=np.float32)
        for peer, w in weights.items():
            if peer not in g.peers:
                raise GossipError(f"no public copy of {peer!r} to mix")
            both = self._own & self._sent_in.get(peer, self._own)
            step += np.float32(w) * np.where(both, g.peers[peer] - g.public, np.float32(0))
        x = self.trainer.vector() + np.float32(g.consensus_step) * step
        self.trainer.set_vector(x)
        self._sent_in = {}
        if self.tracker is not None:
            self.tracker.update(weights, self._tracker_in)
            self._tracker_in = {}


def _same_entries(peer: object, sent: np.ndarray, z: np.ndarray) -> None:
    if not np.array_equal(sent, ~np.isnan(z)):
        raise GossipError(f"tracking message from {peer!r} under another mask than its delta")


def node_type(method: str) -> Callable[..., DecLoraNode[Any]]:
    """The node class of `method` (Kill-and-Revive's own, else `DecLoraNode`)."""
    return KillReviveNode if method == "kill-revive" else DecLoraNode
