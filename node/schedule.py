"""The learning-rate schedule: warmup, then constant, linear or cosine decay.

A position on the schedule is an optimizer step counted over the planned run
(`total_steps` = rounds x local steps), never a node's own step counter: local step
`k` (0-based) of round `r` (1-based) is at `at_round(r, local_steps) + k`. So a node
that skipped rounds or took a neighbour's state lands at the same learning rate as
its neighbours. Pure arithmetic; no torch.

Rounds here are TRAINING rounds. With `gossip_steps` G > 1 a training round takes G
exchanges (`Recipe.exchanges_per_round`) and the daemon's round number counts
exchanges: exchange `e` (1-based) trains iff `is_training_exchange(e, G)` (the first
of each group of G) and belongs to training round `training_round(e, G)`.

- warmup: step `s < warmup_steps` runs at `(s + 1) / warmup_steps` of the peak lr;
- decay (linear, cosine) runs from the peak at `warmup_steps` toward 0 at
  `total_steps`; a step at or past `total_steps` runs at 0;
- `constant` with no warmup is `factor() == 1.0` everywhere (`is_flat`): the trainer
  then leaves the optimizer's lr untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

LrSchedule = Literal["constant", "linear", "cosine"]
DECAYING = ("linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    """A multiplier of the peak lr per optimizer step."""

    kind: LrSchedule = "constant"
    warmup_steps: int = 0
    total_steps: int = 0  # planned optimizer steps; a decaying schedule needs > warmup

    def __post_init__(self) -> None:
        if self.kind in DECAYING and self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"a {self.kind} schedule needs more planned steps ({self.total_steps}) "
                f"than warmup steps ({self.warmup_steps})"
            )

    @property
    def is_flat(self) -> bool:
        """Whether every step runs at the peak lr (constant, no warmup)."""
        return self.kind == "constant" and self.warmup_steps == 0

    def factor(self, step: int) -> float:
        """The fraction of the peak lr at optimizer step `step` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        if progress >= 1.0:
            return 0.0
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def at_round(round_number: int, local_steps: int) -> int:
    """The schedule position of the first local step of round `round_number` (1-based)."""
    return max(round_number - 1, 0) * local_steps


def is_training_exchange(exchange: int, per_round: int) -> bool:
    """Whether exchange `exchange` (1-based) follows K local steps: the first of each
    group of `per_round` exchanges; the others only mix."""
    return (exchange - 1) % per_round == 0


def training_round(exchange: int, per_round: int) -> int:
    """The training round (1-based) exchange `exchange` (1-based) belongs to."""
    return (max(exchange, 1) - 1) // per_round + 1
