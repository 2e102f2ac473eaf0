"""The headline figure of a task and how results compare on it.

Classification is judged by accuracy (higher is better, shown in percent, gaps in
points); causal LM by held-out perplexity (lower is better, gaps relative, in percent
of the reference). Reports, the simulator's summaries and the lab read the figure's
name and direction from here, so no caller hard-codes "accuracy".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """One task's headline figure (`key` in the evaluation dicts)."""

    key: str
    higher_is_better: bool
    percent: bool  # shown as 100 x the value

    def worst(self, values: Iterable[float]) -> float:
        """The worst of `values` (the lowest accuracy, the highest perplexity)."""
        vals = list(values)
        return min(vals) if self.higher_is_better else max(vals)

    def best(self, values: Iterable[float]) -> float:
        """The best of `values` (the highest accuracy, the lowest perplexity)."""
        vals = list(values)
        return max(vals) if self.higher_is_better else min(vals)

    def shown(self, value: float | None) -> str:
        """`value` as a table shows it: '96.5' (accuracy), '36.81' (perplexity)."""
        if value is None or math.isnan(value):
            return "—"
        return f"{100 * value:.1f}" if self.percent else f"{value:.2f}"

    def gap(self, value: float, reference: float) -> float:
        """How much worse `value` is than `reference` (positive = worse): points of
        accuracy, or percent of the reference's perplexity."""
        if self.percent:
            return 100 * (reference - value)
        return 100 * (value - reference) / reference

    def signed_gap(self, value: float, reference: float) -> float:
        """`value` against `reference` as reported, to 0.1: accuracy points above the
        reference (negative: below), or percent of its perplexity above it (positive:
        worse); a tie (or a gap that rounds to nothing) is 0.0, never -0.0."""
        g = self.gap(value, reference)
        return round(-g if self.percent else g, 1) + 0.0  # + 0.0 turns -0.0 into 0.0

    def gap_text(self, value: float, reference: float) -> str:
        """`value` against `reference` in words: '-0.5 points', '+2.5% perplexity' (the
        figure `signed_gap` gives, which results files store)."""
        shown = self.signed_gap(value, reference)
        return f"{shown:+.1f} points" if self.percent else f"{shown:+.1f}% perplexity"


SCORES = {
    "cls": Score("accuracy", higher_is_better=True, percent=True),
    "lm": Score("perplexity", higher_is_better=False, percent=False),
}


def score_for(task: str) -> Score:
    """The headline figure of `task` ("cls" or "lm")."""
    return SCORES[task]
