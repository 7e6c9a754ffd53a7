"""study.stats on synthetic numbers whose answers are known by hand or from scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from study.stats import (
    Interval,
    bootstrap_accuracy_difference,
    format_interval,
    holm_significant,
    mark,
    minimum_detectable_effect,
    p_value_from_t,
    paired_difference,
    seed_interval,
    seed_sentence_interval,
    spearman_with_interval,
)

# --- t-intervals over seeds -------------------------------------------------------------------------------


def test_seed_interval_by_hand():
    iv = seed_interval([0.5, 0.6, 0.7])
    half = 4.302652729749464 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(n), s = 0.1
    assert half == pytest.approx(0.24841, abs=1e-5)
    assert iv.mean == pytest.approx(0.6)
    assert iv.std == pytest.approx(0.1)
    assert iv.n == 3
    assert (iv.low, iv.high) == pytest.approx((0.6 - half, 0.6 + half))
    assert (iv.low, iv.high) == pytest.approx(sps.t.interval(0.95, 2, loc=0.6, scale=0.1 / math.sqrt(3)))
    assert iv.excludes_zero


def test_seed_interval_other_confidence_matches_scipy():
    x = np.array([0.61, 0.58, 0.66, 0.63, 0.60])
    iv = seed_interval(x, confidence=0.9)
    expected = sps.t.interval(0.9, x.size - 1, loc=x.mean(), scale=x.std(ddof=1) / math.sqrt(x.size))
    assert (iv.low, iv.high) == pytest.approx(expected)


def test_seed_interval_single_seed_is_flagged():
    iv = seed_interval([0.7])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.7, 0.7, 0.7, 1)
    assert math.isnan(iv.std) and iv.flagged
    assert not iv.excludes_zero
    with pytest.raises(ValueError):
        seed_interval([])


def test_interval_as_dict():
    d = Interval(0.1, 0.05, 0.15, 0.02, 4).as_dict()
    assert d == {"mean": 0.1, "low": 0.05, "high": 0.15, "std": 0.02, "n": 4, "se": None, "df": None, "p": None,
                 "note": "", "excludes_zero": True}


# --- paired differences over seeds ------------------------------------------------------------------------


def test_paired_difference_constant_shift_is_not_an_interval():
    """Seeds that all differ by the same amount give no estimate of the seed noise: said, not a point."""
    b = np.array([0.52, 0.61, 0.47, 0.58])
    iv = paired_difference(b + 0.1, b)
    assert iv.mean == pytest.approx(0.1)
    assert iv.flagged and iv.note == "no variation across seeds" and not iv.excludes_zero
    assert format_interval(iv) == "+10.0 (no interval: no variation across seeds)"


def test_paired_difference_identical_is_zero_and_flagged():
    a = [0.52, 0.61, 0.47, 0.58]
    iv = paired_difference(a, a)
    assert iv.mean == 0.0 and iv.flagged
    assert not iv.excludes_zero


def test_paired_difference_is_t_interval_of_differences():
    a, b = np.array([0.62, 0.70, 0.66]), np.array([0.60, 0.64, 0.65])
    assert paired_difference(a, b) == seed_interval(a - b)


def test_paired_difference_unequal_lengths_is_welch():
    a, b = np.array([0.62, 0.70, 0.66, 0.69]), np.array([0.60, 0.64, 0.55])
    iv = paired_difference(a, b)
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert iv.mean == pytest.approx(a.mean() - b.mean())
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high))
    assert paired_difference(a, [0.5]).flagged


# --- paired bootstrap over sentences ----------------------------------------------------------------------


def test_bootstrap_identical_hits_gives_zero():
    hits = np.random.default_rng(1).integers(0, 2, 500)
    iv = bootstrap_accuracy_difference(hits, hits)
    assert (iv.mean, iv.low, iv.high) == (0.0, 0.0, 0.0)
    assert not iv.excludes_zero


def test_bootstrap_all_versus_none_gives_one():
    iv = bootstrap_accuracy_difference(np.ones(300), np.zeros(300))
    assert (iv.mean, iv.low, iv.high) == (1.0, 1.0, 1.0)
    assert iv.excludes_zero and mark(iv) == "*"


def test_bootstrap_known_difference_and_width():
    n = 1000
    a = np.zeros(n, dtype=int)
    a[:600] = 1  # 60 % hits
    b = np.zeros(n, dtype=int)
    b[:500] = 1  # 50 %, a subset of a's hits: 100 discordant pairs
    perm = np.random.default_rng(3).permutation(n)
    iv = bootstrap_accuracy_difference(a[perm], b[perm], n_boot=2000, seed=0)
    assert iv.mean == pytest.approx(0.10)
    assert iv.low < 0.10 < iv.high
    sd = math.sqrt(0.1 * 0.9 / n)  # ~ sqrt(p_disc / n) = 0.01
    assert iv.std == pytest.approx(sd, rel=0.1)
    assert iv.high - iv.low == pytest.approx(2 * 1.96 * sd, rel=0.15)  # ~0.037-0.04
    assert iv.n == n


def test_bootstrap_is_deterministic():
    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 2, 1000), rng.integers(0, 2, 1000)
    first = bootstrap_accuracy_difference(a, b, n_boot=2000, seed=7)
    assert bootstrap_accuracy_difference(a, b, n_boot=2000, seed=7) == first
    assert bootstrap_accuracy_difference(a, b, n_boot=2000, seed=8) != first


def test_bootstrap_rejects_mismatched_hits():
    with pytest.raises(ValueError):
        bootstrap_accuracy_difference(np.ones(10), np.ones(9))


# --- seeds and sentences together -------------------------------------------------------------------------


def test_seed_sentence_interval_by_hand():
    """A 2 x 3 table worked out with the two-way mean squares, and the Satterthwaite df."""
    d = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    n, sentences = d.shape
    per_seed = d.mean(1)  # 2/3, 1/3
    seed_part = per_seed.var(ddof=1) / n
    sentence_means = d.mean(0)  # 0.5, 0, 1
    ms_sentence = n * sentence_means.var(ddof=1)
    residual = d - d.mean(1)[:, None] - sentence_means[None, :] + d.mean()
    ms_residual = (residual**2).sum() / ((n - 1) * (sentences - 1))
    sentence_part = (ms_sentence - ms_residual) / (n * sentences)
    se = math.sqrt(seed_part + sentence_part)
    df = (seed_part + sentence_part) ** 2 / (seed_part**2 / (n - 1) + sentence_part**2 / (sentences - 1))
    iv = seed_sentence_interval([d])
    assert iv.mean == pytest.approx(0.5) and iv.se == pytest.approx(se) and iv.df == pytest.approx(df)
    assert iv.high - iv.mean == pytest.approx(sps.t.ppf(0.975, df) * se)
    assert iv.p == pytest.approx(2 * sps.t.sf(0.5 / se, df))


def test_seed_sentence_interval_says_when_it_cannot_be_estimated():
    one_seed = seed_sentence_interval([np.array([[1.0, 0.0, 1.0]])])
    assert one_seed.flagged and one_seed.note == "one seed" and not one_seed.excludes_zero
    identical = seed_sentence_interval([np.zeros((3, 32))])  # every sentence agrees in every seed
    assert identical.flagged and "no variation" in identical.note
    assert format_interval(identical) == "+0.0 (no interval: no variation in any seed or sentence)"
    with pytest.raises(ValueError):
        seed_sentence_interval([np.zeros((3, 4)), np.zeros((2, 4))])  # different seeds


def test_two_agreeing_seeds_do_not_give_a_zero_width_interval():
    """The case seen in a real run: two seeds with the same group mean gave "+6.7 [+6.7, +6.7]"."""
    d = np.array([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0]])  # both seeds: +0.4
    iv = seed_sentence_interval([d])
    assert iv.mean == pytest.approx(0.4) and iv.high - iv.low > 0.1


def _null_tables(rng, seeds, sentences, seed_sd, languages):
    """Two systems trained alike (the null), each seed its own model-wide effect, shared sentence difficulty."""
    effect_a, effect_b = rng.normal(0, seed_sd, seeds), rng.normal(0, seed_sd, seeds)
    tables = []
    for _ in range(languages):
        difficulty = rng.normal(1.0, 1.5, sentences)
        hits = [rng.random((seeds, sentences)) < 1 / (1 + np.exp(-(difficulty[None, :] + e[:, None])))
                for e in (effect_a, effect_b)]
        tables.append(hits[0].astype(float) - hits[1])
    return tables


@pytest.mark.parametrize("seeds, sentences, seed_sd, languages", [
    (3, 400, 1.0, 1),   # seed noise dominates (the regime where the bootstrap covered 80%)
    (3, 400, 0.0, 1),   # sentence and residual noise only
    (5, 48, 0.3, 6),    # a group of six languages at the CPU budget's size
])
def test_seed_sentence_interval_covers_the_null_at_its_nominal_level(seeds, sentences, seed_sd, languages):
    rng = np.random.default_rng(2026)
    reps = 1500
    covered = sum(iv.low <= 0 <= iv.high for iv in (seed_sentence_interval(_null_tables(
        rng, seeds, sentences, seed_sd, languages)) for _ in range(reps)))
    assert covered / reps >= 0.93, f"coverage {covered / reps:.3f} at nominal 0.95"


def test_minimum_detectable_effect():
    iv = Interval(0.0, -0.1, 0.1, 0.05, 5, se=0.02, df=10.0)
    assert minimum_detectable_effect(iv) == pytest.approx((sps.t.ppf(0.975, 10) + sps.t.ppf(0.8, 10)) * 0.02)
    assert math.isnan(minimum_detectable_effect(seed_interval([0.3])))


# --- Spearman over languages ------------------------------------------------------------------------------


def test_spearman_monotone_and_reversed():
    x = np.arange(20.0)
    rho, iv = spearman_with_interval(x, np.exp(x / 5))
    assert rho == pytest.approx(1.0)
    assert iv.low == pytest.approx(1.0) and iv.high == pytest.approx(1.0)
    rho, iv = spearman_with_interval(x, -(x**3))
    assert rho == pytest.approx(-1.0)
    assert iv.low == pytest.approx(-1.0) and iv.high == pytest.approx(-1.0)


def test_spearman_independent_contains_zero():
    rng = np.random.default_rng(21)
    rho, iv = spearman_with_interval(rng.normal(size=300), rng.normal(size=300), seed=1)
    assert iv.low < 0 < iv.high
    assert abs(rho) < 0.15 and not iv.excludes_zero


def test_spearman_ties_match_scipy():
    x = np.array([1, 2, 2, 3, 3, 3, 4, 5, 5, 6], dtype=float)
    y = np.array([2, 1, 4, 4, 3, 6, 5, 5, 7, 9], dtype=float)
    rho, iv = spearman_with_interval(x, y)
    assert rho == pytest.approx(sps.spearmanr(x, y).statistic)
    assert iv.mean == rho and iv.low <= rho <= iv.high and iv.n == 10


def test_spearman_drops_nan_pairs_and_needs_three_items():
    x = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    y = np.array([1.0, 3.0, 2.0, np.nan, 4.0, 8.0])
    rho, iv = spearman_with_interval(x, y)
    assert rho == pytest.approx(sps.spearmanr([1, 2, 5, 6], [1, 3, 4, 8]).statistic)
    assert iv.n == 4
    rho, iv = spearman_with_interval([1.0, 2.0, np.nan], [2.0, 1.0, 3.0])
    assert math.isnan(rho) and math.isnan(iv.low) and iv.n == 2


# --- multiple testing, p-values ---------------------------------------------------------------------------


def test_holm_by_hand():
    # sorted: 0.005 <= .05/4, 0.01 <= .05/3, 0.03 > .05/2 -> stop; 0.04 is not rejected although <= .05/1
    assert holm_significant([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_significant([0.01, 0.02]) == [True, True]
    assert holm_significant([0.03, 0.04]) == [False, False]
    assert holm_significant([0.001, float("nan")]) == [True, False]
    assert holm_significant([]) == []


def test_p_value_from_t():
    assert p_value_from_t(0.0, 5) == pytest.approx(1.0)
    assert p_value_from_t(4.302652729749464, 2) == pytest.approx(0.05)
    assert p_value_from_t(-2.0, 10) == p_value_from_t(2.0, 10)


# --- formatting -------------------------------------------------------------------------------------------


def test_mark_and_format():
    iv = Interval(0.031, 0.004, 0.058, 0.01, 5)
    assert format_interval(iv) == "+3.1 [+0.4, +5.8]"
    assert format_interval(iv, percent=False) == "+0.031 [+0.004, +0.058]"
    assert mark(iv) == "*"
    across = Interval(-0.012, -0.0301, -0.0001, 0.01, 5)
    assert format_interval(across) == "-1.2 [-3.0, -0.0]"
    assert mark(across) == "*"
    assert format_interval(Interval(0.0, -0.0004, 0.0004, 0.0, 5)) == "+0.0 [-0.0, +0.0]"
    assert mark(Interval(0.01, -0.02, 0.04, 0.01, 5)) == ""
    assert format_interval(seed_interval([0.25])) == "+25.0 (no interval: one seed)"
    assert format_interval(Interval(math.nan, math.nan, math.nan, math.nan, 0)) == "nan"
