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


# two-sided 95% Student-t quantiles by degrees of freedom (beyond 30: the normal's)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip


def t95(df: int) -> float:
    """The 97.5% Student-t quantile for `df` degrees of freedom (table; conservative
    between its entries: the next smaller df's value)."""
    if df < 1:
        raise ValueError(f"t95: df must be >= 1, got {df}")
    if df > 30:
        return 1.96
    return T95[max(k for k in T95 if k <= df)]


def _as_arrays(
    correct: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per seed: the outcomes as 2-D float arrays (rows: nodes; one row for a 1-D
    input), checked (non-empty, paired lengths, every outcome in [0, 1]: the interval
    is cut to the figures such outcomes can give)."""
    if len(correct) == 0:
        raise ValueError("summarize: no seeds given (correct is empty)")
    if reference is not None and len(reference) != len(correct):
        raise ValueError(
            f"summarize: {len(correct)} seeds in correct but {len(reference)} in reference"
        )
    out: list[tuple[np.ndarray, np.ndarray | None]] = []
    for s, c in enumerate(correct):
        ca = np.asarray(c, dtype=np.float64)
        if ca.ndim == 1:
            ca = ca[None, :]
        if ca.ndim != 2 or ca.size == 0:
            raise ValueError(
                f"summarize: seed {s} needs a non-empty 1-D or 2-D array, got {ca.shape}"
            )
        ra = None
        if reference is not None:
            ra = np.asarray(reference[s], dtype=np.float64)
            if ra.ndim != 1 or ra.shape[0] != ca.shape[1]:
                raise ValueError(
                    f"summarize: seed {s} has {ca.shape[1]} outcomes per node but its "
                    f"reference {ra.shape} (they must be scored on the same examples)"
                )
        for name, arr in (("outcomes", ca), ("reference", ra)):
            if arr is not None and not ((arr >= 0) & (arr <= 1)).all():  # NaN too
                raise ValueError(f"summarize: seed {s}'s {name} must lie in [0, 1]")
        out.append((ca, ra))
    return out


def _figure(c: np.ndarray, r: np.ndarray | None) -> float:
    """A seed's figure: the worst row's accuracy (minus the reference's), in points."""
    return float(100 * (c.mean(axis=1).min() - (0.0 if r is None else r.mean())))


def summarize(
    correct: Sequence[np.ndarray],
    reference: Sequence[np.ndarray] | None = None,
    *,
    shared_examples: bool = False,
    reps: int = 4000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Summarize per-seed outcomes: `correct[s]` holds seed s's 0/1 outcomes per example,
    or one row per node (nodes x examples): the seed's figure is then its worst node's.

    The figure of seed s is 100 * (worst) mean(correct[s]), or with `reference` (same
    examples, paired) that minus 100 * mean(reference[s]). Each of `reps` bootstrap
    replicates draws the seeds with replacement and the examples with replacement (the
    same indices for every node and the reference; with `shared_examples`, the seeds
    are scored on one test set and share the replicate's indices too, so a hard
    example counts for every seed), takes each drawn seed's figure (the worst node
    again inside the replicate) and their mean. [low, high] is the central `level`
    percentile interval of those means, widened at level 0.95 to at least the
    Student-t interval mean ± t(S-1) std / sqrt(S) over the S seeds (a percentile
    bootstrap of 3 seeds understates their spread), then cut to what the figure can be
    (an accuracy: [0, 100]; a difference: [-100, 100]). Deterministic for a given `seed`.
    Raises ValueError on empty input, mismatched lengths, an outcome outside [0, 1],
    reps < 1 or level outside (0, 1).
    """
    if reps < 1:
        raise ValueError(f"summarize: reps must be >= 1, got {reps}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"summarize: level must be in (0, 1), got {level}")
    seeds = _as_arrays(correct, reference)
    n_seeds = len(seeds)
    sizes = {c.shape[1] for c, _ in seeds}
    if shared_examples and len(sizes) != 1:
        raise ValueError(f"summarize: shared_examples needs one test set, got sizes {sizes}")
    figures = np.array([_figure(c, r) for c, r in seeds], dtype=np.float64)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_seeds, size=(reps, n_seeds))
    shared = (
        rng.integers(0, sizes.pop(), size=(reps, seeds[0][0].shape[1])) if shared_examples else None
    )
    boot = np.empty((reps, n_seeds), dtype=np.float64)
    for s, (c, r) in enumerate(seeds):
        where = drawn == s
        rows = np.nonzero(where)[0]
        idx = (
            shared[rows]
            if shared is not None
            else rng.integers(0, c.shape[1], (rows.size, c.shape[1]))
        )
        worst = c[:, idx].mean(axis=2).min(axis=0)  # (draws,)
        base = 0.0 if r is None else r[idx].mean(axis=1)
        boot[where] = 100 * (worst - base)
    means = boot.mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
    mean = float(figures.mean())
    std = float(figures.std(ddof=1)) if n_seeds > 1 else 0.0
    if n_seeds > 1 and level == 0.95:
        half = t95(n_seeds - 1) * std / np.sqrt(n_seeds)
        low, high = min(low, mean - half), max(high, mean + half)
    bound = 100.0  # an accuracy lies in [0, 100] points, a difference in [-100, 100]
    low, high = max(low, 0.0 if reference is None else -bound), min(high, bound)
    return Interval(mean=mean, std=std, low=low, high=high, seeds=n_seeds)


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
