"""study.evaluation.stats on synthetic numbers whose answers are known by hand or from scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from study.evaluation.stats import (
    Interval,
    bootstrap_accuracy_difference,
    format_interval,
    holm_significant,
    languages_interval,
    mark,
    minimum_detectable_effect,
    p_value_from_t,
    paired_difference,
    seed_bootstrap_interval,
    seed_interval,
    seed_sentence_interval,
    spearman_rows,
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


def test_languages_interval_is_the_t_over_languages():
    gains = np.array([0.04, 0.01, 0.06, -0.02, 0.03, 0.05])
    iv = languages_interval(gains)
    expected = sps.t.interval(0.95, gains.size - 1, loc=gains.mean(), scale=gains.std(ddof=1) / math.sqrt(6))
    assert (iv.low, iv.high) == pytest.approx(expected)
    assert (iv.n, iv.df) == (6, 5) and iv.std == pytest.approx(gains.std(ddof=1))
    assert iv.p == pytest.approx(sps.ttest_1samp(gains, 0.0).pvalue)
    one = languages_interval([0.04])
    assert one.flagged and one.note == "one language"
    same = languages_interval([0.02, 0.02, 0.02])
    assert same.flagged and same.note == "no variation across languages" and not same.excludes_zero
    assert format_interval(one) == "+4.0 (no interval: one language)"


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


def _fiducial_draws(rng, seed_part, seed_df, item_part, item_den, draws=1_000_000):
    """Monte-Carlo draws of the mean's error under `_seed_item_interval`'s fiducial mixture, written out apart:
    seed part * df / chi2_df, then Student-t with the Welch-Satterthwaite df of the whole, the seed part fixed."""
    variance = seed_part * seed_df / rng.chisquare(seed_df, draws) + item_part
    return np.sqrt(variance) * rng.standard_t(variance**2 / item_den)


def test_seed_sentence_interval_by_hand():
    """A 2 x 3 table worked out with the two-way mean squares; its ends checked against a simulation of the
    seed part's fiducial mixture."""
    d = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    n, sentences = d.shape
    seed_part = d.mean(1).var(ddof=1) / n  # seed means 2/3, 1/3: 1/36
    sentence_means = d.mean(0)  # 0.5, 0, 1
    ms_sentence = n * sentence_means.var(ddof=1)  # 0.5
    residual = d - d.mean(1)[:, None] - sentence_means[None, :] + d.mean()
    ms_residual = (residual**2).sum() / ((n - 1) * (sentences - 1))  # 1/6
    assert (seed_part, ms_sentence, ms_residual) == pytest.approx((1 / 36, 0.5, 1 / 6))
    sentence_part = (ms_sentence - ms_residual) / (n * sentences)  # 1/18
    # Welch-Satterthwaite over the two mean squares of the sentence part, the residual's with (n-1)(N-1) df
    den = (ms_sentence / (n * sentences)) ** 2 / (sentences - 1) + (ms_residual / (n * sentences)) ** 2 / (
        (n - 1) * (sentences - 1))
    se = math.sqrt(seed_part + sentence_part)
    iv = seed_sentence_interval([d])
    assert iv.mean == pytest.approx(0.5) and iv.se == pytest.approx(se) and iv.n == 2
    errors = np.abs(_fiducial_draws(np.random.default_rng(0), seed_part, n - 1, sentence_part, den))
    half = iv.high - iv.mean
    assert half == pytest.approx(np.quantile(errors, 0.95), rel=0.02)
    assert iv.p == pytest.approx(np.mean(errors > 0.5), abs=0.003)
    assert half == pytest.approx(sps.t.ppf(0.975, iv.df) * se)  # df: the Student-t with the same width
    # wider than plain Satterthwaite, narrower than the seed part's own t(1)
    satterthwaite = (seed_part + sentence_part) ** 2 / (seed_part**2 / (n - 1) + den)
    assert sps.t.ppf(0.975, satterthwaite) * se < half < sps.t.ppf(0.975, n - 1) * se


def test_seed_sentence_interval_without_a_sentence_part_is_the_t_over_seeds():
    """Sentences that differ only by noise (sentence mean square below the residual's): the interval is exactly
    Student-t over the per-seed means with n - 1 df; seeds that agree exactly: t over sentences."""
    d = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0]])
    sentence_means = d.mean(0)
    residual = d - d.mean(1)[:, None] - sentence_means[None, :] + d.mean()
    assert 3 * sentence_means.var(ddof=1) < (residual**2).sum() / 6  # clipped
    assert seed_sentence_interval([d]) == seed_interval(d.mean(1))
    agree = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])  # no seed part, no residual
    iv = seed_sentence_interval([agree])
    assert (iv.low, iv.high) == pytest.approx(sps.t.interval(0.95, 3, loc=0.5, scale=math.sqrt(1 / 3 / 4)))


def test_seed_sentence_interval_says_when_it_cannot_be_estimated():
    one_seed = seed_sentence_interval([np.array([[1.0, 0.0, 1.0]])])
    assert one_seed.flagged and one_seed.note == "one seed" and not one_seed.excludes_zero
    identical = seed_sentence_interval([np.zeros((3, 32))])  # every sentence agrees in every seed
    assert identical.flagged and "no variation" in identical.note
    assert format_interval(identical) == "+0.0 (no interval: no variation in any seed or sentence)"
    agree = seed_sentence_interval([np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])])  # same seed means
    assert agree.flagged and agree.note == "the seeds agree and no sentence part"
    with pytest.raises(ValueError):
        seed_sentence_interval([np.zeros((3, 4)), np.zeros((2, 4))])  # different seeds


def test_two_agreeing_seeds_do_not_give_a_zero_width_interval():
    """The case seen in a real run: two seeds with the same group mean gave "+6.7 [+6.7, +6.7]"."""
    d = np.array([[1.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0]])  # both seeds: +0.4
    iv = seed_sentence_interval([d])
    assert iv.mean == pytest.approx(0.4) and iv.high - iv.low > 0.1


def _null_tables(rng, seeds, sentences, seed_sd, languages, sentence_sd=0.0):
    """Two systems trained alike (the null), each seed its own model-wide effect, shared sentence difficulty;
    with sentence_sd, each system also its own effect per sentence (the same in every seed), a sentence part of
    the difference."""
    effect_a, effect_b = rng.normal(0, seed_sd, seeds), rng.normal(0, seed_sd, seeds)
    tables = []
    for _ in range(languages):
        difficulty = rng.normal(1.0, 1.5, sentences)
        own = rng.normal(0, sentence_sd, (2, sentences)) if sentence_sd else np.zeros((2, sentences))
        hits = [rng.random((seeds, sentences)) < 1 / (1 + np.exp(-(difficulty[None, :] + o[None, :] + e[:, None])))
                for e, o in ((effect_a, own[0]), (effect_b, own[1]))]
        tables.append(hits[0].astype(float) - hits[1])
    return tables


@pytest.mark.parametrize("seeds, sentences, seed_sd, languages, sentence_sd", [
    (3, 400, 1.0, 1, 0.0),  # seed noise dominates (the regime where the bootstrap covered 80%)
    (3, 400, 0.0, 1, 0.0),  # residual noise only
    (5, 48, 0.3, 6, 0.0),   # a group of six languages at the CPU budget's size
    # seed and sentence parts of similar size (about 2e-4 and 1.3e-4 of the mean's variance, residual 2.5-3.7e-4):
    # Satterthwaite's plug-in df covered 0.895 (2 seeds) and 0.922 (3 seeds) here, with the residual's df 0.903, 0.925
    (2, 400, 0.1, 1, 1.0),
    (3, 400, 0.1, 1, 1.0),
])
def test_seed_sentence_interval_covers_the_null_at_its_nominal_level(seeds, sentences, seed_sd, languages,
                                                                     sentence_sd):
    rng = np.random.default_rng(2026)
    reps = 1500
    covered = sum(iv.low <= 0 <= iv.high for iv in (seed_sentence_interval(_null_tables(
        rng, seeds, sentences, seed_sd, languages, sentence_sd)) for _ in range(reps)))
    assert covered / reps >= 0.93, f"coverage {covered / reps:.3f} at nominal 0.95"


def test_minimum_detectable_effect():
    iv = Interval(0.0, -0.1, 0.1, 0.05, 5, se=0.02, df=10.0)
    assert minimum_detectable_effect(iv) == pytest.approx((sps.t.ppf(0.975, 10) + sps.t.ppf(0.8, 10)) * 0.02)
    assert math.isnan(minimum_detectable_effect(seed_interval([0.3])))


# --- a figure that is not a mean over items: t over seeds, bootstrap over the items ----------------------


def test_spearman_rows_matches_scipy_row_by_row():
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=(6, 40)), 1)  # ties on both sides
    y = np.round(x + rng.normal(size=(6, 40)))
    rho = spearman_rows(x, y)
    assert rho.shape == (6,)
    assert rho == pytest.approx([sps.spearmanr(a, b).statistic for a, b in zip(x, y)])
    assert float(spearman_rows(x[0], y[0])) == pytest.approx(sps.spearmanr(x[0], y[0]).statistic)
    assert math.isnan(spearman_rows(np.ones((1, 5)), np.arange(5.0)[None, :])[0])
    with pytest.raises(ValueError):
        spearman_rows(x, y[:, :-1])


def _counts(idx, items):
    """(B, items): how often each item is drawn in each row of idx (B resamples of item indices)."""
    rows = idx.shape[0]
    flat = (idx + items * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * items).reshape(rows, items).astype(float)


def _resampled_ranks(values, counts):
    """(B, N) average ranks, within each resample, of the N items of 1-D `values` (counts: (B, N) how often each
    is drawn): what stats.rankdata(values[idx], axis=1) gives the drawn copies, without a sort per resample."""
    order = np.argsort(values, kind="stable")
    ordered, drawn = values[order], counts[:, order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]  # the first item of each run of ties
    if not new.all():
        drawn = np.add.reduceat(drawn, np.flatnonzero(new), axis=1)
    average = np.cumsum(drawn, axis=1) - (drawn - 1) / 2  # copies below the tie, plus the middle of its own
    ranks = np.empty_like(counts)
    ranks[:, order] = average[:, np.cumsum(new) - 1]
    return ranks


def _weighted_pearson(x, y, weights):
    """Pearson correlation of each row of x and y, item j counted weights[:, j] times."""
    total = weights.sum(axis=1, keepdims=True)
    x = x - (weights * x).sum(axis=1, keepdims=True) / total
    y = y - (weights * y).sum(axis=1, keepdims=True) / total
    return (weights * x * y).sum(axis=1) / np.sqrt((weights * x * x).sum(axis=1) * (weights * y * y).sum(axis=1))


def test_resampled_ranks_give_the_spearman_of_the_resamples():
    """The simulation's shortcut equals spearman_rows on the resampled items themselves, ties included."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=60), np.round(rng.normal(size=60), 1)
    idx = rng.integers(0, 60, (30, 60))
    counts = _counts(idx, 60)
    assert np.take_along_axis(_resampled_ranks(y, counts), idx, axis=1) == pytest.approx(
        sps.rankdata(y[idx], axis=1))
    shortcut = _weighted_pearson(_resampled_ranks(x, counts), _resampled_ranks(y, counts), counts)
    assert shortcut == pytest.approx(spearman_rows(x[idx], y[idx]))


def _sts_difference(rng, seeds, pairs, n_boot, slopes, seed_sd, own_sd, noise_sd, shared_sd, ties):
    """One replication of a cross-lingual STS study: per seed, Spearman(model a's cosines, gold score) minus
    model b's over the same pairs, and the same on n_boot resamples of the pairs shared by every seed and model.

    Pair i has a latent similarity z_i, gold score 5 Phi(z_i) in [0, 5] (rounded to 0.2 with ties); model m,
    seed s: cos = slope_{m,s} z_i + shared_i (translation quality, both models) + own_{m,i} (the model's own pair
    effect, every seed) + noise_{m,s,i}, slope_{m,s} = slopes[m] + seed_sd * N(0, 1).
    """
    z = rng.normal(size=pairs)
    score = 5 * sps.norm.cdf(z)
    if ties:
        score = np.round(score * 5) / 5
    shared = rng.normal(0, shared_sd, pairs)
    counts = _counts(rng.integers(0, pairs, (n_boot, pairs)), pairs)
    score_ranks = _resampled_ranks(score, counts)
    per_seed, boots = np.zeros(seeds), np.zeros((seeds, n_boot))
    for sign, slope in zip((1, -1), slopes):
        cos = (slope + rng.normal(0, seed_sd, (seeds, 1))) * z + shared + rng.normal(0, own_sd, pairs) + rng.normal(
            0, noise_sd, (seeds, pairs))
        per_seed += sign * spearman_rows(cos, np.broadcast_to(score, cos.shape))
        boots += sign * np.array([_weighted_pearson(_resampled_ranks(c, counts), score_ranks, counts) for c in cos])
    return per_seed, boots


def _expected_spearman_difference(pairs, slopes, seed_sd, own_sd, noise_sd, shared_sd):
    """The mean over seeds and pair samples of `_sts_difference`'s figure without ties: given the slope, (cos, z)
    are bivariate normal with r = slope / sd(cos), and a sample Spearman of N pairs has mean
    6 / (pi (N + 1)) (arcsin r + (N - 2) arcsin(r / 2)) (Moran 1948); the slope's normal by Gauss-Hermite."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    expected = []
    for slope in slopes:
        beta = slope + seed_sd * nodes
        r = beta / np.sqrt(beta**2 + shared_sd**2 + own_sd**2 + noise_sd**2)
        spearman = 6 / (math.pi * (pairs + 1)) * (np.arcsin(r) + (pairs - 2) * np.arcsin(r / 2))
        expected.append(weights @ spearman / weights.sum())
    return expected[0] - expected[1]


STS_NOISE = {  # the two parts of the mean's variance as the interval estimates them, averaged over replications
    # the null (the models exchangeable, truth 0), scores with ties: seed part 12x, 7x, 5x the item part at 2, 3,
    # 5 seeds; Satterthwaite's t covered 0.885 (2 seeds) and 0.925 (3 seeds) here
    "seeds": dict(slopes=(1.0, 1.0), seed_sd=0.12, own_sd=0.2, noise_sd=0.3, shared_sd=0.5, ties=True),
    # model a encodes the score more strongly (truth from Moran's formula): item part 9x, 13x, 21x the seed
    # part; the t over seeds alone covered 0.82, 0.66, 0.44 here
    "pairs": dict(slopes=(1.2, 1.0), seed_sd=0.02, own_sd=0.8, noise_sd=0.3, shared_sd=0.5, ties=False),
}


@pytest.mark.parametrize("noise", list(STS_NOISE))
@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_seed_bootstrap_interval_covers_a_spearman_difference(seeds, noise):
    rng = np.random.default_rng(2027)
    pairs, n_boot, reps = 200, 200, 400
    design = STS_NOISE[noise]
    truth = 0.0 if noise == "seeds" else _expected_spearman_difference(pairs, **{
        k: v for k, v in design.items() if k != "ties"})
    covered = 0
    for _ in range(reps):
        iv = seed_bootstrap_interval(*_sts_difference(rng, seeds, pairs, n_boot, **design), items=pairs)
        covered += iv.low <= truth <= iv.high
    assert covered / reps >= 0.93, f"coverage {covered / reps:.3f} at nominal 0.95 (truth {truth:+.4f})"


def _mean_over_items(rng, seeds, items, n_boot, seed_sd, item_sd, noise_sd, mu):
    """Per-item values d[s, i] = mu + seed effect + item effect + noise; per seed their mean, and its bootstrap."""
    d = mu + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, item_sd, items) + rng.normal(
        0, noise_sd, (seeds, items))
    return d, d.mean(axis=1), d @ _counts(rng.integers(0, items, (n_boot, items)), items).T / items


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_seed_bootstrap_interval_covers_a_mean_over_items(seeds):
    """A plain mean, truth mu = 0.3; seed, item and residual parts of similar size."""
    rng = np.random.default_rng(2028)
    reps = 1000
    covered = 0
    for _ in range(reps):
        _, per_seed, boots = _mean_over_items(rng, seeds, 200, 200, 0.05, 0.8, 1.0, 0.3)
        iv = seed_bootstrap_interval(per_seed, boots, items=200)
        covered += iv.low <= 0.3 <= iv.high
    assert covered / reps >= 0.93, f"coverage {covered / reps:.3f} at nominal 0.95"


def test_seed_bootstrap_interval_agrees_with_the_two_way_table_on_a_mean():
    """On a mean over items the bootstrap's parts are the two-way mean squares' (up to (N - 1) / N and the
    resampling noise): the same standard error within a few percent."""
    d, per_seed, boots = _mean_over_items(np.random.default_rng(9), 4, 300, 4000, 0.05, 0.8, 1.0, 0.3)
    by_bootstrap, by_table = seed_bootstrap_interval(per_seed, boots, items=300), seed_sentence_interval([d])
    assert by_bootstrap.mean == pytest.approx(by_table.mean)
    assert by_bootstrap.se == pytest.approx(by_table.se, rel=0.04)
    assert by_bootstrap.std == by_table.std and by_bootstrap.n == 4


def test_seed_bootstrap_interval_by_hand():
    per_seed = np.array([0.10, 0.14, 0.09])
    shift = np.array([[0.02, -0.01, 0.00, -0.03, 0.02], [0.03, -0.02, 0.01, -0.02, 0.00],
                      [0.00, 0.01, -0.01, -0.02, 0.02]])
    boots = per_seed[:, None] + shift
    n, items, resamples = 3, 50, 5
    seed_part = per_seed.var(ddof=1) / n
    v_mean = boots.mean(axis=0).var(ddof=1)  # item + residual / n
    v_each = boots.var(axis=1, ddof=1).mean()  # item + residual
    residual = (v_each - v_mean) / (n - 1)  # residual / n
    item_part = v_mean - residual
    assert residual > 0 and item_part > 0
    df = 1 / (1 / (items - 1) + 1 / (resamples - 1))
    den = v_mean**2 / df + residual**2 / ((n - 1) * df)
    iv = seed_bootstrap_interval(per_seed, boots, items=items)
    assert iv.mean == pytest.approx(0.11) and iv.se == pytest.approx(math.sqrt(seed_part + item_part))
    assert (iv.n, iv.std) == (3, pytest.approx(per_seed.std(ddof=1)))
    errors = np.abs(_fiducial_draws(np.random.default_rng(1), seed_part, n - 1, item_part, den))
    assert iv.high - iv.mean == pytest.approx(np.quantile(errors, 0.95), rel=0.02)
    assert iv.p == pytest.approx(np.mean(errors > 0.11), abs=0.003)


def test_seed_bootstrap_interval_edges():
    per_seed = np.array([0.10, 0.14, 0.09])
    cancelling = np.array([[0.02, -0.01], [-0.03, 0.02], [0.01, -0.01]])  # the seed mean never moves
    no_item, by_seed = seed_bootstrap_interval(per_seed, per_seed[:, None] + cancelling, items=50), seed_interval(
        per_seed)
    assert (no_item.low, no_item.high, no_item.se, no_item.df) == pytest.approx(
        (by_seed.low, by_seed.high, by_seed.se, by_seed.df))
    boots = per_seed[:, None] + np.array([[0.02, -0.01, 0.0], [0.03, np.nan, 0.01], [0.0, 0.01, -0.01]])
    kept, dropped = seed_bootstrap_interval(per_seed, boots, items=50), seed_bootstrap_interval(
        per_seed, boots[:, [0, 2]], items=50)  # a resample with a nan is dropped in every seed
    assert (kept.low, kept.high, kept.se, kept.df) == pytest.approx((dropped.low, dropped.high, dropped.se, dropped.df))
    one = seed_bootstrap_interval([0.1], [[0.12, 0.08, 0.1]], items=50)
    assert one.flagged and one.note == "one seed" and one.mean == 0.1
    still = seed_bootstrap_interval([0.1, 0.1], [[0.1, 0.1], [0.1, 0.1]], items=50)
    assert still.flagged and "no variation" in still.note
    with pytest.raises(ValueError):
        seed_bootstrap_interval(per_seed, boots[:2], items=50)


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
