from __future__ import annotations

import numpy as np
import pytest

from declora.node.stats import Interval, format_interval, summarize, verdict


def _bernoulli(p: float, seeds: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.random(n) < p for _ in range(seeds)]


def test_all_correct_vs_all_wrong_is_exact_and_degenerate() -> None:
    ones = [np.ones(50, dtype=bool), np.ones(70, dtype=bool)]
    zeros = [np.zeros(50, dtype=bool), np.zeros(70, dtype=bool)]
    assert summarize(ones) == Interval(100.0, 0.0, 100.0, 100.0, 2)
    assert summarize(zeros, ones) == Interval(-100.0, 0.0, -100.0, -100.0, 2)
    assert summarize(ones, zeros) == Interval(100.0, 0.0, 100.0, 100.0, 2)


def test_seeds_are_resampled() -> None:
    # Each seed is constant, so only resampling the seeds spreads the replicates over
    # {0, 50, 100}, with 0 and 100 each a quarter of the time.
    iv = summarize([np.ones(40, dtype=bool), np.zeros(60, dtype=bool)], level=0.9)
    assert (iv.mean, iv.low, iv.high) == (50.0, 0.0, 100.0)
    assert iv.std == pytest.approx(100 / np.sqrt(2))
    # at 0.95 the interval is at least Student's, 50 +- t(1) 100 / sqrt(2) / sqrt(2),
    # cut to the [0, 100] an accuracy lies in
    wide = summarize([np.ones(40, dtype=bool), np.zeros(60, dtype=bool)])
    assert (wide.low, wide.high) == (0.0, 100.0)
    halves = [np.ones(40) * 0.5, np.ones(60) * 0.5]
    pair = summarize([np.ones(40) * 0.55, np.ones(60) * 0.45], halves)  # +5 and -5 points
    assert (pair.low, pair.high) == pytest.approx((-12.706 * 5, 12.706 * 5))


def test_mean_and_std_are_over_per_seed_accuracies() -> None:
    correct = [np.array([1, 1, 0, 0]), np.array([1, 1, 1, 0, 0, 0, 0, 0]), np.array([1, 1, 1, 1])]
    iv = summarize(correct, reps=500)
    per_seed = [50.0, 37.5, 100.0]
    assert iv.mean == pytest.approx(np.mean(per_seed))
    assert iv.std == pytest.approx(np.std(per_seed, ddof=1))
    assert iv.seeds == 3
    half = 4.303 * iv.std / np.sqrt(3)  # Student's t, 2 degrees of freedom
    assert iv.low <= max(0.0, iv.mean - half) and iv.high >= min(100.0, iv.mean + half)
    one = summarize([np.array([1, 0, 1, 1])], reps=500)
    assert (one.mean, one.std) == (75.0, 0.0)


def test_difference_figure_and_identical_arrays_give_zero_interval() -> None:
    rng = np.random.default_rng(1)
    correct = _bernoulli(0.8, 3, 300, rng)
    reference = [c.copy() for c in correct]
    assert summarize(correct, reference) == Interval(0.0, 0.0, 0.0, 0.0, 3)
    shifted = [np.r_[c[:-30], np.zeros(30, dtype=bool)] for c in correct]
    iv = summarize(correct, shifted)
    expected = [100 * (c.mean() - s.mean()) for c, s in zip(correct, shifted, strict=True)]
    assert iv.mean == pytest.approx(np.mean(expected))
    assert iv.low <= iv.mean <= iv.high


def test_pairing_narrows_the_interval_for_correlated_outcomes() -> None:
    rng = np.random.default_rng(2)
    correct = _bernoulli(0.85, 1, 450, rng)  # one seed: only the examples spread
    reference = []
    for c in correct:
        r = c.copy()
        flip = rng.choice(c.size, size=15, replace=False)
        r[flip] = ~r[flip]
        reference.append(r)
    paired = summarize(correct, reference)
    # A permuted reference has the same accuracy but no longer pairs with `correct`.
    unpaired = summarize(correct, [rng.permutation(r) for r in reference])
    assert paired.mean == pytest.approx(unpaired.mean)
    assert (paired.high - paired.low) < 0.5 * (unpaired.high - unpaired.low)


def test_coverage_of_bernoulli_accuracy() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(100):
        iv = summarize(_bernoulli(0.9, 3, 400, rng), reps=1000, seed=i)
        hits += iv.low <= 90.0 <= iv.high
    assert hits >= 90


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(5)
    correct = _bernoulli(0.7, 3, 200, rng)
    reference = _bernoulli(0.7, 3, 200, rng)
    a = summarize(correct, reference, seed=7)
    assert a == summarize(correct, reference, seed=7)
    b = summarize(correct, reference, seed=8)
    assert (a.mean, a.std) == (b.mean, b.std)
    assert (a.low, a.high) != (b.low, b.high)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (-1.5, 2.0, "met"),  # low exactly at -margin
        (-1.4, -0.2, "met"),
        (-1.6, 2.0, "undecided"),
        (-3.0, -1.5, "undecided"),  # high exactly at -margin is not below it
        (-3.0, -1.6, "missed"),
    ],
)
def test_verdict_thresholds(low: float, high: float, expected: str) -> None:
    diff = Interval(mean=(low + high) / 2, std=0.5, low=low, high=high, seeds=3)
    assert verdict(diff, 1.5) == expected


def test_verdict_rejects_negative_margin() -> None:
    with pytest.raises(ValueError, match="margin"):
        verdict(Interval(0.0, 0.0, 0.0, 0.0, 1), -1.0)


def test_format_interval() -> None:
    iv = Interval(mean=-0.84, std=0.46, low=-1.63, high=0.12, seeds=3)
    assert format_interval(iv) == "-0.8 ± 0.5 [-1.6, 0.1]"
    assert format_interval(iv, digits=2) == "-0.84 ± 0.46 [-1.63, 0.12]"
    assert format_interval(Interval(-0.04, 0.0, -0.04, 0.0, 1)) == "0.0 ± 0.0 [0.0, 0.0]"


@pytest.mark.parametrize(
    ("correct", "reference", "message"),
    [
        ([], None, "no seeds"),
        ([np.array([], dtype=bool)], None, "seed 0 needs a non-empty"),
        ([np.ones((2, 2, 2))], None, "seed 0 needs a non-empty 1-D or 2-D"),
        ([np.ones((2, 3))], [np.ones(4)], "3 outcomes per node"),
        ([np.ones(3)], [np.ones(3), np.ones(3)], "1 seeds in correct but 2 in reference"),
        ([np.ones(3), np.ones(4)], [np.ones(3), np.ones(5)], "seed 1 has"),
    ],
)
def test_bad_input_raises(
    correct: list[np.ndarray], reference: list[np.ndarray] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(correct, reference)


def test_bad_reps_or_level_raises() -> None:
    with pytest.raises(ValueError, match="reps"):
        summarize([np.ones(3)], reps=0)
    with pytest.raises(ValueError, match="level"):
        summarize([np.ones(3)], level=1.0)


def test_worst_node_is_taken_inside_each_replicate() -> None:
    rng = np.random.default_rng(7)
    nodes = [np.stack([rng.random(300) < 0.9, rng.random(300) < 0.85]) for _ in range(3)]
    iv = summarize(nodes, shared_examples=True)
    per_seed = [100 * n.mean(axis=1).min() for n in nodes]
    assert iv.mean == pytest.approx(np.mean(per_seed))
    # a single node per seed gives that node's figure
    alone = summarize([n[1] for n in nodes], shared_examples=True)
    assert alone.mean == pytest.approx(np.mean([100 * n[1].mean() for n in nodes]))


def test_shared_examples_widen_when_seeds_share_hard_examples() -> None:
    """Seeds scored on one test set share its hard examples: drawing the examples once
    per replicate for every seed keeps that correlation (a wider interval)."""
    rng = np.random.default_rng(8)
    hard = rng.random(400) < 0.1  # the same hard examples fail for every seed
    seeds = [~hard & (rng.random(400) < 0.98) for _ in range(3)]
    shared = summarize(seeds, shared_examples=True, level=0.9)
    separate = summarize(seeds, level=0.9)
    assert (shared.high - shared.low) > 1.3 * (separate.high - separate.low)


def test_shared_examples_need_one_test_set() -> None:
    with pytest.raises(ValueError, match="one test set"):
        summarize([np.ones(3), np.ones(4)], shared_examples=True)


def test_an_interval_never_leaves_what_the_figure_can_be() -> None:
    """Three seeds far apart near 100%: the Student-t widening alone reached past 100
    (the methods table once showed decaf at [81.2, 101.4])."""
    n = 100
    seeds = [np.r_[np.ones(k), np.zeros(n - k)] for k in (100, 99, 75)]
    iv = summarize(seeds)
    half = 4.303 * iv.std / np.sqrt(3)
    assert iv.mean + half > 100  # the widening alone would pass 100
    assert iv.high == 100.0 and 0.0 <= iv.low < iv.mean
    low = summarize([np.r_[np.zeros(n - k), np.ones(k)] for k in (0, 1, 25)])
    assert low.mean - 4.303 * low.std / np.sqrt(3) < 0
    assert low.low == 0.0 and low.high <= 100.0
    diff = summarize(seeds, [np.zeros(n)] * 3)  # against a reference that is always wrong
    assert diff.high == 100.0 and diff.low >= -100.0


@pytest.mark.parametrize("bad", [2.0, -0.5, float("nan")])
def test_an_outcome_outside_0_and_1_is_refused(bad: float) -> None:
    """The interval is cut to [0, 100]: outcomes 2, 1, 1, 1 gave mean 125 in [100, 100],
    an interval that missed its own mean (NaN: NaN everywhere); now refused, as a
    reference's is."""
    with pytest.raises(ValueError, match=r"seed 1's outcomes must lie in \[0, 1\]"):
        summarize([np.ones(4), np.array([1.0, bad, 0.0, 1.0])])
    with pytest.raises(ValueError, match=r"seed 0's reference must lie in \[0, 1\]"):
        summarize([np.ones(4)], [np.array([1.0, bad, 0.0, 1.0])])
