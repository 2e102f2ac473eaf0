"""Chebyshev-accelerated gossip and the step after mixing: two options that bring a
sparse graph's nodes closer to one AdamW step on the swarm's mean gradient.

**Chebyshev gossip** (`--gossip-acceleration chebyshev[:LAMBDA]`). Within a sequence
of exchanges (a training round's G, or the consensus finish) exchange k mixes a
vector (the adapter x, and tracking's z) by the Chebyshev semi-iteration

    x^k = omega_k (W x^(k-1)) + (1 - omega_k) x^(k-2)
    omega_1 = 1, omega_2 = 1 / (1 - lambda^2 / 2), omega_k = 1 / (1 - lambda^2 omega_(k-1) / 4)

with W x the plain mixing step and lambda the mixing matrix's second-largest
|eigenvalue|. Over G exchanges the disagreement shrinks by 1 / T_G(1 / lambda)
instead of lambda^G (star of 6, G = 4: 0.16 instead of 0.48) for the same bytes.
What callers may rely on:

- nodes in step use the same omega_k at the same exchange, also a node with no
  neighbours in it (its W row is the identity: it extrapolates its own last change),
  so a symmetric, doubly stochastic W keeps the average of x (CHOCO's public copies
  included) and, with tracking, the corrections' zero sum, to float rounding, under
  any codec;
- a node whose exchange count broke off (a state rolled back or taken, a skip ahead)
  restarts its sequence with a plain exchange; its omega then differs from its
  neighbours' for the rest of that round, which moves the average and leaves the
  corrections' sum off zero by the difference (a fault path; it never happens in the
  simulator).

lambda is a property of the whole graph: `simulate`, `lab` and `experiment` compute it
from the topology (`chebyshev`); `start` needs it given (`chebyshev:LAMBDA`).
`simulate` and `lab` use both options by default where `accelerated_by_default` allows
them; `start` does not (it cannot know lambda; `lab` hands its nodes both, resolved). A lambda
off the live graph's (neighbours lost, or the adapter's (1 - gamma) I + gamma W under
a consensus step gamma < 1) shrinks the slow directions less than 1 / T_G(1 / lambda),
but a fixed W's polynomial never amplifies any of them. It is refused with robust
mixing and with the methods whose mixing is not a linear map of the whole vector
(DeCAF, Kill-and-Revive, DECA).

**Step after mixing** (`--step-after-mixing`). With gradient tracking and K = 1 a
round's gradient g_i is sent as z_i = g_i + c_i but applied only after the round's
exchanges have mixed z: the AdamW step takes g_i + c_i with c_i after mixing, i.e.
the mixed z_i (W^G z, or its Chebyshev polynomial), the neighbours' mixed corrected
gradient, instead of the node's own. The
sequence of operations is the same as stepping at the start of the next round, so
nothing is pending at a round boundary (where checkpoints are taken).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from declora.node.methods import Namer, flag

if TYPE_CHECKING:
    from declora.node.recipe import Recipe

NO_ACCELERATION = "none"
CHEBYSHEV = "chebyshev"
AUTO = "auto"  # the default: `Recipe.fill_swarm_defaults` or `fill_daemon_defaults` resolve it
LAMBDA_DECIMALS = 12  # a lambda computed from a topology is rounded to this many decimals
MEASURED_CODECS = ("fp32", "fp16", "bf16", "q8", "q4")  # no coarser than the study's q4
# both options off: `start`'s defaults, and every run made before `simulate` and `lab`
# accelerated by default (the studies, benchmarks and tests that pin it)
UNACCELERATED: dict[str, Any] = {
    "gossip_acceleration": NO_ACCELERATION,
    "step_after_mixing": False,
}


class AccelerationError(ValueError):
    """A `--gossip-acceleration` value that cannot be used."""


def parse_acceleration(spec: str) -> float | None:
    """The lambda of a `--gossip-acceleration` value: None for `none`, -1.0 for a bare
    `chebyshev` (lambda still to come from the topology), else the given lambda."""
    spec = spec.strip().lower()
    if spec == NO_ACCELERATION:
        return None
    name, _, value = spec.partition(":")
    if name != CHEBYSHEV:
        raise AccelerationError(
            f"--gossip-acceleration must be none, chebyshev or chebyshev:LAMBDA, not {spec!r}"
        )
    if not value:
        return -1.0
    try:
        lam = float(value)
    except ValueError:
        raise AccelerationError(f"chebyshev:{value}: lambda must be a number") from None
    if not 0.0 <= lam < 1.0:
        raise AccelerationError(
            f"chebyshev:{value}: lambda (the mixing matrix's second eigenvalue) must be in [0, 1)"
        )
    return lam


def chebyshev_omega(lam: float, k: int) -> float:
    """omega_k of the semi-iteration (k = 1, 2, ...) for second eigenvalue `lam`."""
    omega = 1.0
    for j in range(2, k + 1):
        omega = 1.0 / (1.0 - lam * lam / 2.0) if j == 2 else 1.0 / (1.0 - lam * lam * omega / 4.0)
    return omega


def extrapolate(mixed: np.ndarray, older: np.ndarray | None, omega: float) -> np.ndarray:
    """omega x mixed + (1 - omega) x older (float32); `mixed` itself for omega 1 or no
    `older`."""
    if omega == 1.0 or older is None:
        return mixed
    return (np.float32(omega) * mixed + np.float32(1.0 - omega) * older).astype(np.float32)


class ChebyshevSequence:
    """One node's place in the semi-iteration: the exchange index since the last
    restart and x^(k-2), the adapter before the previous exchange. With `lam` None
    (no acceleration) every exchange is a plain one: omega 1, nothing kept."""

    def __init__(self, lam: float | None) -> None:
        if lam is not None and not 0.0 <= lam < 1.0:
            raise AccelerationError(f"lambda must be in [0, 1), got {lam}")
        self.lam = lam
        self.k = 0
        self.older: np.ndarray | None = None

    def restart(self) -> None:
        """The next exchange is a sequence's first (a plain one)."""
        self.k = 0
        self.older = None

    def advance(self, before: np.ndarray) -> tuple[float, np.ndarray | None]:
        """Enter the next exchange with the adapter `before` it: (omega_k, x^(k-2))."""
        if self.lam is None:
            return 1.0, None
        self.k += 1
        older, self.older = self.older, np.array(before, dtype=np.float32, copy=True)
        return chebyshev_omega(self.lam, self.k), older

    def feed(self, h: hashlib._Hash) -> None:
        """Add (k, x^(k-2)) to a state digest (nothing without acceleration)."""
        if self.lam is not None:
            h.update(self.k.to_bytes(8, "little"))
            h.update(b"" if self.older is None else self.older.tobytes())


def acceleration_problem(method: str, robust: str, name: Namer = flag) -> str:
    """'' when Chebyshev gossip works with `method` and `robust`, else the reason, each
    option named by `name` (`methods.Namer`: as the user gave it)."""
    cheb = f"{name('gossip_acceleration')} chebyshev cannot be combined with"
    if robust != "none":
        return (
            f"{cheb} {name('robust_mixing')}: a robust rule is not a linear mixing step "
            "to extrapolate"
        )
    if method in ("decaf", "kill-revive", "deca"):
        return (
            f"{cheb} {name('method')} {method}: its mixing is not one linear step of the "
            "whole vector"
        )
    return ""


def step_after_mixing_problem(
    method: str, tracking: bool, local_steps: int, precision: str, name: Namer = flag
) -> str:
    """'' when `--step-after-mixing` works with these options, else the reason, each
    option named by `name`."""
    sam = name("step_after_mixing")
    if not tracking:
        return f"{sam} needs {name('gradient_tracking')}: the step follows the mixed z"
    if local_steps != 1:
        return f"{sam} needs {name('local_steps')} 1 (one step a round), not {local_steps}"
    if method in ("kill-revive", "deca"):
        return f"{sam} cannot be combined with {name('method')} {method}"
    if precision == "fp16":
        return f"{sam} cannot be combined with {name('precision')} fp16 (its grad scaler)"
    return ""


def accelerated_by_default(r: Recipe) -> bool:
    """Whether `simulate` and `lab` turn both options on when left to their defaults:
    where the parity study measured them (Dec-LoRA classification, fp32 and q4
    messages) and every condition either needs holds (tracking, K = 1, no robust
    mixing, no fp16 precision); messages no coarser than q4 (not q2 or top-k)."""
    return (
        r.method == "dec-lora"
        and r.task == "cls"
        and r.codec.split(":")[0] in MEASURED_CODECS
        and not acceleration_problem(r.method, r.robust_mixing)
        and not step_after_mixing_problem(
            r.method, bool(r.gradient_tracking), r.local_steps, r.precision
        )
    )
