"""Compressed gossip (CHOCO-style) and the Dec-LoRA mixing step, for one node.

Every node i keeps a public copy x̂_i of its adapter, which all its neighbours also
hold. Each round it sends `codec(x_i - x̂_i)` and everyone holding x̂_i (itself
included) adds the decoded delta, so x̂ follows x with error feedback built in:
what rounding lost this round is still in x_i - x̂_i next round. The mixing step is

    x_i <- x_i + gamma * sum_j w_ij (x̂_j - x̂_i)

(or a robust variant of that step, `robust.make_robust`). With the exact fp32 codec
and gamma = 1 this is plain gossip x_i <- sum_j w_ij x_j, which mixes the LoRA
factors A and B (and the head) separately with the same weights, as Dec-LoRA does.
Coarse codecs (q2, top-k) are not contractions, so their decoded deltas are applied
scaled by `update_scale` (CHOCO's 1/(1+omega) factor) and they mix with a smaller
default gamma; without both, compressed gossip diverges.
The scale is a function of the codec spec, so every holder of x̂_i applies the same.
A keyframe (the full x̂_i in fp32) starts a neighbour that is new or out of step.
Nothing here does I/O; the simulator and the daemon both drive this class, so equal
inputs give equal adapters.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

import numpy as np

from declora.node.codecs import Codec, CodecError, decode, make_codec
from declora.node.robust import RobustMixer, make_robust

K = TypeVar("K", bound=Hashable)

KEYFRAME_CODEC = "fp32"


COARSE = ("q2", "topk")


def update_scale(codec_spec: str) -> float:
    """Factor applied to every decoded delta of `codec_spec` (same at all holders)."""
    return 0.5 if codec_spec.startswith(COARSE) else 1.0


def default_consensus_step(codec_spec: str) -> float:
    """A gamma that converges for `codec_spec` (measured on rings; see tests)."""
    return 0.5 if codec_spec.startswith(COARSE) else 1.0


class GossipError(ValueError):
    """A received message cannot be applied (unknown peer, wrong size, non-finite)."""


class GossipState(Generic[K]):
    """One node's public copy and its neighbours' public copies."""

    def __init__(
        self,
        x0: np.ndarray,
        codec: Codec | str,
        consensus_step: float | None = None,
        robust: RobustMixer | str = "none",
    ) -> None:
        self.codec = make_codec(codec) if isinstance(codec, str) else codec
        self.robust = make_robust(robust) if isinstance(robust, str) else robust
        if consensus_step is None:
            consensus_step = default_consensus_step(self.codec.spec)
        if not 0.0 < consensus_step <= 1.0:
            raise ValueError(f"consensus_step must be in (0, 1], got {consensus_step}")
        self.consensus_step = consensus_step
        self.update_scale = update_scale(self.codec.spec)
        self.public = np.array(x0, dtype=np.float32, copy=True)
        self.peers: dict[K, np.ndarray] = {}
        self.last_update_norm = 0.0  # ||change of x̂_i|| at the last encode_update

    @property
    def size(self) -> int:
        return int(self.public.shape[0])

    def encode_update(
        self, x: np.ndarray, rng: np.random.Generator, mask: np.ndarray | None = None
    ) -> bytes:
        """Compress x - x̂_i, advance x̂_i by what receivers will decode; return the payload.

        With a boolean `mask`, only the entries it selects (in order) are sent and
        advanced; the rest of x̂_i stays as it is."""
        sel = slice(None) if mask is None else mask
        payload = self.codec.encode(np.asarray(x, np.float32)[sel] - self.public[sel], rng)
        update = np.float32(self.update_scale) * decode(payload)
        self.public[sel] += update
        self.last_update_norm = float(np.linalg.norm(update))
        return payload

    def keyframe(self) -> bytes:
        """The full public copy x̂_i, exactly (fp32), for a new or out-of-step neighbour."""
        return make_codec(KEYFRAME_CODEC).encode(self.public, np.random.default_rng(0))

    def add_peer(self, peer: K, public: np.ndarray) -> None:
        """Start tracking `peer` from a known public copy (e.g. the shared seeded init)."""
        self.set_copy(peer, public)

    def drop_peer(self, peer: K) -> None:
        self.peers.pop(peer, None)

    def decode_checked(self, peer: K, payload: bytes, spec: str | None = None) -> np.ndarray:
        """Decode a payload from `peer` and validate it; raises GossipError, changes nothing.

        With `spec`, a payload written by any other codec is refused too.
        """
        try:
            vec = decode(payload, max_n=self.size, spec=spec)
        except CodecError as exc:
            raise GossipError(f"payload from {peer!r}: {exc}") from exc
        return self._checked(vec, peer)

    def apply_update(self, peer: K, payload: bytes) -> None:
        """Decode a delta (made with this node's codec) into peer's copy; unchanged on error."""
        self.add_delta(peer, self.decode_checked(peer, payload), self.update_scale)

    def add_delta(self, peer: K, delta: np.ndarray, scale: float) -> None:
        """Add `scale` x an already validated delta to peer's public copy.

        `scale` is `update_scale(spec)` of the codec the sender used.
        """
        if peer not in self.peers:
            raise GossipError(f"no public copy of {peer!r}: a keyframe must come first")
        new = self.peers[peer] + np.float32(scale) * self._checked(delta, peer)
        self.peers[peer] = self._checked(new, peer)

    def set_copy(self, peer: K, public: np.ndarray) -> None:
        """Replace peer's public copy with a validated full vector."""
        self.peers[peer] = self._checked(np.array(public, dtype=np.float32, copy=True), peer)

    def mix(self, x: np.ndarray, weights: Mapping[K, float]) -> np.ndarray:
        """x + gamma * sum_j w_j (x̂_j - x̂_i) over the given neighbours (a new array),
        or the robust rule's step in place of the sum."""
        for peer in weights:
            if peer not in self.peers:
                raise GossipError(f"no public copy of {peer!r} to mix")
        neighbours = [(w, self.peers[peer]) for peer, w in weights.items()]
        step = self.robust.step(self.public, neighbours, self.last_update_norm)
        return np.asarray(x, np.float32) + np.float32(self.consensus_step) * step

    def _checked(self, vec: np.ndarray, peer: K) -> np.ndarray:
        if vec.shape != self.public.shape:
            raise GossipError(
                f"payload from {peer!r} has {vec.shape[0] if vec.ndim else 0} values, "
                f"expected {self.size}"
            )
        if not np.isfinite(vec).all():
            raise GossipError(f"payload from {peer!r} has non-finite values")
        return vec


def consensus_distance(xs: list[np.ndarray]) -> tuple[float, float]:
    """(mean, max) over nodes of ||x_i - mean|| / ||mean|| (0 when all agree), in
    float64; one vector at a time, so a full model (DECA) needs no stacked copy."""
    total = np.zeros(np.shape(xs[0]), np.float64)
    for x in xs:
        total += x
    mean = total / len(xs)
    scale = max(float(np.linalg.norm(mean)), 1e-12)
    dist = np.empty(len(xs))
    for i, x in enumerate(xs):
        np.subtract(x, mean, out=total)
        dist[i] = np.sqrt(np.add.reduce(total * total))
    dist /= scale
    return float(dist.mean()), float(dist.max())
