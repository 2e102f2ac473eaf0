"""Gradient tracking for Dec-LoRA's local steps: each node follows the swarm's gradient.

Under label skew a node's own gradient points at its own few classes; K local steps
along it pull the nodes apart faster than gossip brings them together, and the
average of the drifted adapters is a poor model. Gradient tracking (K-GT, Liu et al.
2023; SCAFFOLD's control variates without a server) gives every node a correction
c_i, zero at the start, that is added to each local stochastic gradient before the
optimizer sees it:

    g~ = grad f_i(x_i; batch) + c_i                  (every local step)
    z_i = mean of g~ over the round's local steps    (sent beside the adapter)
    c_i <- c_i + sum_j w_ij (z^_j - z^_i)            (after the exchange)

with the round's mixing weights w_ij and z^ what the codec delivers (every holder
of z_i decodes the same z^_i, the sender included). A round of G exchanges
(`exchanges`, the recipe's gossip steps) mixes z in every one of them, as the model
is (multi-consensus tracking, as in DeTAG: Lu & De Sa, ICML 2021): exchange g sends
z^(g), c_i grows by sum_j w_ij (z^(g)^_j - z^(g)^_i) and z^(g+1)_i is z^(g)^_i plus that
growth, so over the round c_i grows by (W^G z)_i - z_i (without compression) and the
correction is near mean_j z_j - z_i after one round instead of after many. What
callers may rely on:

- with symmetric weights (Metropolis-Hastings over the same live sets) sum_i c_i
  stays exactly what it was, zero, so the corrections do not move the average model:
  each edge adds w (z^_j - z^_i) at i and w (z^_i - z^_j) at j. An edge whose far
  end sent no z this round (it did not train, or its message is missing) is skipped
  at both ends, which keeps the sum; so is, entry by entry, a value that either end
  left out of its z (Kill-and-Revive sends its active modules' entries only);
- at a fixed point c_i = mean_j g_j - g_i: every node steps along the swarm's mean
  gradient instead of its own, which is what removes the drift (with `--weighting
  examples` the trainer hands over g_i times the node's training examples, so the
  mean is the union's gradient up to a common scale);
- z travels in the G exchanges that follow a round's local steps and no others:
  gossip-only rounds (the consensus finish) carry no z and leave c unchanged.

The price is one more vector in each of those messages (the size of the adapter
message before error feedback; with fp32 messages, twice the bytes). A neighbour's z
moves c_i linearly, so gradient tracking trusts every neighbour: it is not combined
with robust mixing. Each z sent after the first is a convex mix of checked ones, so it
stays within their bounds (with Chebyshev mixing an extrapolation, omega < 2: a
receiver bounds every z it takes, `DecLoraNode.check_tracker`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch

from declora.node.codecs import Codec, CodecError, decode

K = TypeVar("K", bound=Hashable)


class TrackingError(ValueError):
    """A tracking message that cannot be used (wrong size, non-finite, corrupt)."""


class GradientTracker(Generic[K]):
    """One node's correction c_i and this round's z_i; `size` values, schema order."""

    def __init__(
        self,
        shapes: Sequence[torch.Size],
        device: torch.device | str = "cpu",
        exchanges: int = 1,
    ) -> None:
        if exchanges < 1:
            raise ValueError("a round has at least one exchange")
        self.exchanges = exchanges  # the exchanges a round's z is mixed in
        self.shapes = [torch.Size(s) for s in shapes]
        self.size = int(sum(s.numel() for s in self.shapes))
        self.device = torch.device(device)
        self._correction = [torch.zeros(s, device=self.device) for s in self.shapes]
        self._sums = [torch.zeros(s, device=self.device) for s in self.shapes]
        self._steps = 0
        self.sent: np.ndarray | None = None  # z^_i of the round in progress, once encoded
        self._next: np.ndarray | None = None  # z^(g+1)_i, for the round's next exchange
        self._left = 0  # the round's exchanges still to carry z
        self._growth: np.ndarray | None = None  # c_i's growth in the exchange before

    # ------------------------------------------------------------- local steps
    def begin_round(self) -> None:
        """Start collecting this round's corrected gradients."""
        for s in self._sums:
            s.zero_()
        self.end_round()

    def end_round(self) -> None:
        """Send no more z until the next local steps (a new round, the consensus
        finish, a state rolled back): local steps collected and not yet sent are
        dropped too (a rolled-back round's, which `restore` undid)."""
        self._steps = 0
        self.sent = None
        self._next = None
        self._left = 0
        self._growth = None

    @property
    def carrying(self) -> bool:
        """Whether this round's z still has exchanges to go (or is not sent yet)."""
        return self._steps > 0 or self._left > 0

    def correct(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Add c_i to one step's gradients in place (the trainer's gradient hook); a
        frozen tensor's (None: Kill-and-Revive's killed modules) stays untouched."""
        for g, c, s in zip(grads, self._correction, self._sums, strict=True):
            if g is not None:
                g.add_(c)
                s.add_(g)
        self._steps += 1

    @property
    def steps(self) -> int:
        """Local steps corrected since `begin_round` and not yet sent by `encode`."""
        return self._steps

    # ------------------------------------------------------------- messages
    def encode(
        self, codec: Codec, rng: np.random.Generator, entries: np.ndarray | None = None
    ) -> bytes | None:
        """This exchange's z compressed with `codec`: the round's mean corrected
        gradient right after local steps, then what the last `update` mixed it into,
        for `exchanges` exchanges in all; else None. Remembers z^_i (what every
        receiver decodes) for `update`. With `entries` (a boolean mask) only those
        values are sent, and z^_i is NaN at the others (Kill-and-Revive)."""
        if self._steps > 0:
            z = torch.cat([s.reshape(-1) for s in self._sums]).div_(self._steps)
            z_np = z.to("cpu", torch.float32).numpy()
            self._steps = 0
            self._left = self.exchanges
            self._growth = None
        elif self._next is not None and self._left > 0:
            z_np = self._next
        else:
            self.end_round()
            return None
        self._next = None
        self._left -= 1
        if entries is None:
            payload = codec.encode(z_np, rng)
            self.sent = decode(payload)
            return payload
        payload = codec.encode(np.ascontiguousarray(z_np[entries], dtype=np.float32), rng)
        self.sent = np.full(self.size, np.nan, dtype=np.float32)
        self.sent[entries] = decode(payload)
        return payload

    def decode_checked(
        self, peer: K, payload: bytes, spec: str | None = None, count: int | None = None
    ) -> np.ndarray:
        """A neighbour's z^_j, validated (`count` values, by default `size`; finite;
        codec); raises TrackingError."""
        count = self.size if count is None else count
        try:
            z = decode(payload, max_n=self.size, spec=spec)
        except CodecError as exc:
            raise TrackingError(f"tracking message from {peer!r}: {exc}") from exc
        if z.shape != (count,):
            raise TrackingError(
                f"tracking message from {peer!r} has {z.shape[0]} values, expected {count}"
            )
        if not np.isfinite(z).all():
            raise TrackingError(f"tracking message from {peer!r} has non-finite values")
        return z

    def update(
        self, weights: Mapping[K, float], received: Mapping[K, np.ndarray], omega: float = 1.0
    ) -> None:
        """c_i += sum_j w_j (z^_j - z^_i) over the neighbours in both mappings, per
        entry only where both z hold a value (not NaN: an entry a Kill-and-Revive node
        did not send); the round's next exchange sends z^_i plus the same sum. With
        Chebyshev's `omega` != 1 (`acceleration.py`) c_i (and so z) grows by omega x
        that sum plus (omega - 1) x its growth in the exchange before: the
        semi-iteration's extrapolation written in growths, which keeps sum_i c_i at zero
        under any codec (each growth sums to zero over the nodes).

        Does nothing in an exchange where this node sent no z (it did not train)."""
        if self.sent is None:
            return
        own = self.sent
        step = np.zeros_like(own)
        for peer, w in weights.items():
            z = received.get(peer)
            if z is not None:
                diff = z - own
                step += np.float32(w) * np.where(np.isnan(diff), np.float32(0), diff)
        if omega != 1.0 and self._growth is not None:
            step = (np.float32(omega) * step + np.float32(omega - 1.0) * self._growth).astype(
                np.float32
            )
        self._growth = step
        self.set_correction(self.correction() + step)
        self.sent = None
        self._next = (own + step).astype(np.float32) if self._left > 0 else None

    def correction_tensors(self) -> list[torch.Tensor]:
        """c_i as the trainer's tensors (schema order; read only)."""
        return self._correction

    # ------------------------------------------------------------- state
    def correction(self) -> np.ndarray:
        """A float32 copy of c_i (schema order)."""
        return torch.cat([c.reshape(-1) for c in self._correction]).to("cpu").numpy().copy()

    def set_correction(self, vec: np.ndarray) -> None:
        """Replace c_i (a checkpoint's); raises TrackingError on a wrong size or NaN."""
        vec = np.asarray(vec, dtype=np.float32)
        if vec.shape != (self.size,) or not np.isfinite(vec).all():
            raise TrackingError(f"a correction must be {self.size} finite values")
        offset = 0
        for c in self._correction:
            n = c.numel()
            c.copy_(torch.from_numpy(vec[offset : offset + n]).reshape(c.shape))
            offset += n
