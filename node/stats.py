"""Honest statistics for results over several seeds: mean, spread and a bootstrap interval.

A result is a set of seeds, each with its own per-example outcomes (1 = correct). The
figure of a seed is its accuracy in points, or, against a reference scored on the same
examples, the difference in points. `summarize` gives the mean and sample std over the
seeds and a two-level (seeds, then examples) bootstrap percentile interval of the mean;
`verdict` reads a difference interval against a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """Mean and sample std (ddof=1; 0.0 for one seed) of the per-seed figures, in points,
    and a bootstrap percentile interval [low, high] of their mean."""

    mean: float
    std: float
    low: float
    high: float
    seeds: int


def _as_arrays(
    correct: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per seed: the outcomes as float arrays, checked (non-empty 1-D, paired lengths)."""
    if len(correct) == 0:
        raise ValueError("summarize: no seeds given (correct is empty)")
    if reference is not None and len(reference) != len(correct):
        raise ValueError(
            f"summarize: {len(correct)} seeds in correct but {len(reference)} in reference"
        )
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for s, c in enumerate(correct):
        ca = np.asarray(c, dtype=np.float64)
        if ca.ndim != 1 or ca.size == 0:
            raise ValueError(f"summarize: seed {s} needs a non-empty 1-D array, got {ca.shape}")
        ra = None
        if reference is not None:
            ra = np.asarray(reference[s], dtype=np.float64)
            if ra.shape != ca.shape:
                raise ValueError(
                    f"summarize: seed {s} has {ca.shape} outcomes but its reference {ra.shape}"
                    " (they must be scored on the same examples)"
                )
        out.append((ca, ra))
    return out


def summarize(
    correct: Sequence[np.ndarray],
    reference: Sequence[np.ndarray] | None = None,
    *,
    reps: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Summarize per-seed outcomes: `correct[s]` holds seed s's 0/1 outcomes per example.

    The figure of seed s is 100 * mean(correct[s]), or with `reference` (same examples,
    paired) 100 * (mean(correct[s]) - mean(reference[s])). Each of `reps` bootstrap
    replicates draws the seeds with replacement and, for every draw, that seed's
    examples with replacement (the same indices for correct and reference), and takes
    the mean of the figures; [low, high] is the central `level` percentile interval of
    those means. Deterministic for a given `seed`. Raises ValueError on empty input,
    a reference of another length, reps < 1 or level outside (0, 1).
    """
    if reps < 1:
        raise ValueError(f"summarize: reps must be >= 1, got {reps}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"summarize: level must be in (0, 1), got {level}")
    seeds = _as_arrays(correct, reference)
    n_seeds = len(seeds)
    figures = np.array(
        [100 * (c.mean() - (0.0 if r is None else r.mean())) for c, r in seeds], dtype=np.float64
    )
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_seeds, size=(reps, n_seeds))
    boot = np.empty((reps, n_seeds), dtype=np.float64)
    for s, (c, r) in enumerate(seeds):
        where = drawn == s
        idx = rng.integers(0, c.size, size=(int(where.sum()), c.size))
        diff = c[idx] if r is None else c[idx] - r[idx]
        boot[where] = 100 * diff.mean(axis=1)
    means = boot.mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(
        mean=float(figures.mean()),
        std=float(figures.std(ddof=1)) if n_seeds > 1 else 0.0,
        low=float(low),
        high=float(high),
        seeds=n_seeds,
    )


def verdict(diff: Interval, margin: float) -> str:
    """Read a difference interval (method minus reference, points) against `margin` points:
    "met" when diff.low >= -margin, "missed" when diff.high < -margin, else "undecided"."""
    if margin < 0:
        raise ValueError(f"verdict: margin must be >= 0 points, got {margin}")
    if diff.low >= -margin:
        return "met"
    if diff.high < -margin:
        return "missed"
    return "undecided"


def format_interval(iv: Interval, digits: int = 1) -> str:
    """'mean ± std [low, high]' with `digits` decimals, e.g. '-0.8 ± 0.5 [-1.6, 0.1]'
    (a value that rounds to zero is shown unsigned)."""

    def num(x: float) -> str:
        return f"{round(x, digits) + 0.0:.{digits}f}"

    return f"{num(iv.mean)} ± {num(iv.std)} [{num(iv.low)}, {num(iv.high)}]"
