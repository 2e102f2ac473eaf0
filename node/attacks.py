"""What a Byzantine node sends instead of its adapter (simulator experiments and tests).

`make_attack(spec)` parses one option string:

- `scale:S` sends `S * x` (e.g. `scale:-20`: twenty times its adapter, sign flipped);
- `noise:SIGMA` sends Gaussian noise `SIGMA * N(0, I)`, fresh every round.

Both keep every value finite, so the forged message passes the wire's and the gossip
layer's checks and reaches the mixing step, which is what robust mixing must survive.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_SPEC = re.compile(r"(scale|noise):(.+)")
_FORMS = "use scale:S (S finite) or noise:SIGMA (SIGMA > 0)"


class AttackSpecError(ValueError):
    """An attack option that is not `scale:S` or `noise:SIGMA`."""


class Attack(Protocol):
    @property
    def spec(self) -> str: ...

    def forge(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The vector sent in place of `x` (float32, finite)."""
        ...


@dataclass(frozen=True)
class ScaleAttack:
    factor: float

    @property
    def spec(self) -> str:
        return f"scale:{self.factor!r}"

    def forge(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (np.float32(self.factor) * np.asarray(x, np.float32)).astype(np.float32)


@dataclass(frozen=True)
class NoiseAttack:
    sigma: float

    @property
    def spec(self) -> str:
        return f"noise:{self.sigma!r}"

    def forge(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return (self.sigma * rng.standard_normal(np.shape(x))).astype(np.float32)


def make_attack(spec: str) -> Attack:
    """The attack for `spec` (case-insensitive, surrounding blanks ignored); raises
    AttackSpecError naming the accepted forms for anything else."""
    m = _SPEC.fullmatch(spec.strip().lower()) if isinstance(spec, str) else None
    if m is None:
        raise AttackSpecError(f"bad attack spec {spec!r}: {_FORMS}")
    try:
        value = float(m.group(2))
    except ValueError:
        value = math.nan
    # |value| < 1e30 keeps S * x and SIGMA * N(0, 1) far from float32's 3.4e38
    if not (math.isfinite(value) and abs(value) < 1e30):
        raise AttackSpecError(f"bad attack spec {spec!r}: {_FORMS}, below 1e30")
    if m.group(1) == "scale":
        return ScaleAttack(value)
    if value <= 0:
        raise AttackSpecError(f"bad attack spec {spec!r}: SIGMA must be > 0")
    return NoiseAttack(value)
