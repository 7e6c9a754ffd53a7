"""Uncertainty of accuracy@1 differences: over seeds, over sentences, and both.

Accuracies and hits are fractions in [0, 1]; an `Interval` is always about a mean (or a difference of means,
or a correlation) and carries its point estimate, the two ends, a spread and a count. What "std" and "n"
mean depends on the method, so each function says it.

Which interval to quote:
  - a mean over sentences (a language's accuracy difference, or a group's over its languages):
    `seed_sentence_interval`. Every seed of a configuration is evaluated on the same sentences, so seeds and
    sentences are crossed factors; its variance is the two-way random-effects estimate (seed, sentence,
    residual). Its quantile is not Student-t with Satterthwaite's plug-in df, which covered 0.88-0.92 with 2-3
    seeds when seed and sentence noise were of similar size, but the mixture over the seed part's
    fiducial distribution (`_seed_item_interval`): exactly t(n - 1) when seed noise is all there is (3 seeds:
    t = 4.3, not 1.96), near t over the sentences when it is absent, conservative in between (most with 2
    seeds).
  - a figure that is not a mean over items (the cross-lingual STS Spearman correlation, or a difference of
    two), every seed on the same pairs: `seed_bootstrap_interval`, the same split with a bootstrap of the pairs,
    shared by every seed, in place of the sentence mean squares (`spearman_rows` computes the resampled figure).
  - a statement about low-resource languages in general, not only the ones measured: `languages_interval`,
    t over the per-language values with L - 1 df (the two above treat the languages as fixed).
`tests/test_stats.py` simulates each with known seed, sentence (pair) and residual noise and checks coverage.
Tables star a figure when Holm's procedure across the languages of the table rejects it (`holm_significant` over
the intervals' p-values). `seed_interval` and `paired_difference` see only seed-to-seed noise (for one number
per seed, such as the English check), `bootstrap_accuracy_difference` only the finite test set, and
`spearman_with_interval` is a correlation over languages.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, special, stats


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high] around `mean`, with a spread `std` and count `n`.

    An interval with std = nan is *flagged*: no interval could be computed (one seed), low = high = mean,
    and it never counts as excluding zero; `note` says why. `se`, `df` and `p` (two-sided, against zero)
    are set by the t-based methods.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int
    se: float = math.nan
    df: float = math.nan
    p: float = math.nan
    note: str = ""

    @property
    def flagged(self) -> bool:
        return math.isnan(self.std)

    @property
    def excludes_zero(self) -> bool:
        return not self.flagged and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        """Every field (nan as None, so the JSON is strict) and whether it excludes zero."""
        fields = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}
        return {**fields, "excludes_zero": self.excludes_zero}


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return (1 - confidence) / 2


def _t_interval(mean: float, se: float, df: float, confidence: float, std: float, n: int) -> Interval:
    half = stats.t.ppf(1 - _check_confidence(confidence), df) * se if se > 0 else 0.0
    p = p_value_from_t(mean / se, df) if se > 0 else (1.0 if mean == 0 else 0.0)
    return Interval(float(mean), float(mean - half), float(mean + half), float(std), int(n), float(se), float(df), p)


def _not_estimable(mean: float, n: int, why: str) -> Interval:
    return Interval(float(mean), float(mean), float(mean), math.nan, int(n), note=why)


# Nodes and weights of the integral over the seed mean square's fiducial distribution (`_seed_item_interval`):
# Gauss-Legendre on the chi-square's probability scale, p = s^3 so that the nodes crowd near p = 0, where a small
# chi-square (a seed variance larger than the few seeds showed) sets the far tail. 64 nodes give tail probabilities
# down to 1e-7 to 1e-5 relative (checked against scipy.integrate.quad for 1, 2 and 4 degrees of freedom).
_GL_S, _GL_W = np.polynomial.legendre.leggauss(64)
_FIDUCIAL_P = ((_GL_S + 1) / 2) ** 3
_FIDUCIAL_W = _GL_W / 2 * 3 * ((_GL_S + 1) / 2) ** 2


@functools.lru_cache(maxsize=64)
def _chi2_nodes(df: int) -> np.ndarray:
    return stats.chi2.ppf(_FIDUCIAL_P, df)


def _seed_item_interval(mean: float, seed_part: float, seed_df: int, item_part: float, item_den: float,
                        confidence: float, std: float, n: int) -> Interval:
    """Interval of a mean whose variance is a seed part plus an item part, each estimated from the data.

    In: seed_part, a variance estimated by one mean square over seeds with seed_df (n - 1) degrees of freedom;
    item_part (>= 0), a variance with Welch-Satterthwaite denominator item_den = sum (c_i MS_i)^2 / df_i over its
    mean squares (0 when there is none); std and n are passed through.

    Why not Student-t with Satterthwaite's df for the sum: with 2 or 3 seeds the seed mean square is a chi-square
    with 1 or 2 df, often far below its expectation; the plug-in df then jumps towards the item part's and the
    interval is doubly too narrow (coverage 0.87 at 2 seeds, 0.92 at 3, when the item part is 5-20% of the seed
    part; exact integration under normality, the item part known). Here the seed part gets Fisher's fiducial
    distribution, seed_part * seed_df / chi2_{seed_df} (the Behrens-Fisher solution, conservative: 0.95-0.99 over
    every ratio at 2 seeds, 0.95-0.98 at 3, 0.95-0.97 at 5), and, given it, the mean is Student-t with the
    Welch-Satterthwaite df of the whole variance with the seed part held fixed: (seed* + item_part)^2 / item_den
    (not the item part's own, item_part^2 / item_den, which falls far below 1 when it is a small difference of
    two mean squares and would blow the interval up over noise that hardly moves the whole variance).
    The ends are the quantiles of that mixture, p its two-sided probability beyond |mean| (against zero); df is
    the Student-t df with the same half-width (so `minimum_detectable_effect` applies). With no item part it is
    exactly Student-t with seed_df; with no seed part, Student-t with the item part's Welch-Satterthwaite df.
    Out: Interval(mean, ends, std, n, se = sqrt(seed_part + item_part), df, p).
    """
    if item_part <= 0:
        return _t_interval(mean, math.sqrt(seed_part), seed_df, confidence, std, n)
    if seed_part <= 0:
        return _t_interval(mean, math.sqrt(item_part), item_part**2 / item_den, confidence, std, n)
    tail, se = _check_confidence(confidence), math.sqrt(seed_part + item_part)
    variance = seed_part * seed_df / _chi2_nodes(seed_df) + item_part  # at each node of the seed part's fiducial
    df = variance**2 / item_den

    def outside(x: float) -> float:  # fiducial probability that |mean - mu| > x
        return float(_FIDUCIAL_W @ (2 * special.stdtr(df, -x / np.sqrt(variance))))

    high = stats.t.ppf(1 - tail, seed_df) * se  # the seed part alone: a first bracket, widened while too narrow
    while outside(high) > 2 * tail:
        high *= 2
    half = optimize.brentq(lambda x: outside(x) - 2 * tail, 0.0, high, xtol=1e-12 * se)
    equivalent_df = float(special.stdtridf(1 - tail, half / se))  # the t with this half-width
    return Interval(float(mean), float(mean - half), float(mean + half), float(std), int(n), se, equivalent_df,
                    min(1.0, outside(abs(mean))))


def seed_sentence_interval(tables, confidence: float = 0.95) -> Interval:
    """Interval of a mean over crossed seeds and sentences: one language's accuracy difference, or a group's.

    In: one (seeds, sentences) array per language, of per-sentence differences (hits of a minus hits of b on
    the same sentence and seed, or minus a fixed row such as the untrained encoder's), rows in the same seed
    order in every array. The figure is the mean over languages of each array's mean.

    Model per language: d[s, i] = mu + seed effect a_s + sentence effect b_i + residual. The per-seed figures
    D_s (mean over languages of each row's mean) have sample variance var(D) estimating the seed part plus the
    residual part; the sentence part of language l is (MS_sentence - MS_residual) / (n N_l L^2) of its two-way
    table, clipped at zero. Var(mean) = var(D) / n + sum_l sentence_l.
    Degrees of freedom: var(D) is one mean square over seeds, n - 1 df; the residual it holds is part of that
    same mean square, so it needs no term of its own. (Flooring var(D) / n at the residual part, which has many
    more df, was tried: under Satterthwaite's df it narrowed the interval when the seeds agreed by chance,
    coverage 0.93 -> 0.905 at 2 seeds; under the quantile below it only widened intervals that already cover.)
    Each unclipped sentence part is a difference of two mean squares: Welch-Satterthwaite terms
    (MS_sentence / (n N_l L^2))^2 / (N_l - 1) and (MS_residual / (n N_l L^2))^2 / ((n - 1)(N_l - 1)); a clipped
    one contributes nothing. The quantile is not plain Satterthwaite (too narrow with 2-3 seeds) but the
    seed part's fiducial mixture of `_seed_item_interval`.
    Out: Interval(mean, ends, std = sd of D over seeds, n = seeds, se, df (Student-t equivalent), p). Not
    estimable (flagged, with a note): one seed, or no variation at all (every seed and sentence gives the same
    difference).
    """
    tables = [np.atleast_2d(np.asarray(t, dtype=float)) for t in tables]
    if not tables or any(t.ndim != 2 or t.size == 0 or t.shape[0] != tables[0].shape[0] for t in tables):
        raise ValueError("tables must be non-empty (seeds, sentences) arrays with the same seeds")
    n, n_langs = tables[0].shape[0], len(tables)
    per_seed = np.mean([t.mean(axis=1) for t in tables], axis=0)
    mean = float(per_seed.mean())
    if n < 2:
        return _not_estimable(mean, n, "one seed")
    seed_part = float(per_seed.var(ddof=1)) / n
    sentence_part = sentence_den = 0.0
    for t in tables:
        sentences = t.shape[1]
        if sentences < 2:
            continue
        scale = 1.0 / (n * sentences * n_langs**2)
        seed_means, sentence_means = t.mean(axis=1), t.mean(axis=0)
        ms_sentence = n * float(sentence_means.var(ddof=1))
        residual = t - seed_means[:, None] - sentence_means[None, :] + t.mean()
        ms_residual = float((residual**2).sum()) / ((n - 1) * (sentences - 1))
        if ms_sentence > ms_residual:
            sentence_part += scale * (ms_sentence - ms_residual)
            sentence_den += (scale * ms_sentence) ** 2 / (sentences - 1) + (scale * ms_residual) ** 2 / (
                (n - 1) * (sentences - 1))
    if seed_part + sentence_part <= 0:
        constant = all(float(t.max() - t.min()) == 0 for t in tables)
        why = "no variation in any seed or sentence" if constant else "the seeds agree and no sentence part"
        return _not_estimable(mean, n, why)
    return _seed_item_interval(mean, seed_part, n - 1, sentence_part, sentence_den, confidence,
                               float(per_seed.std(ddof=1)), n)


def seed_bootstrap_interval(per_seed, boots, items: int, confidence: float = 0.95) -> Interval:
    """Interval of the mean over seeds of a figure that is not a mean over items (a Spearman correlation over
    sentence pairs, or a difference of two), every seed measured on the same items.

    In: per_seed, shape (n,): the figure of each seed (e.g. config a's minus config b's, paired by seed, or minus
    the untrained encoder's fixed value); boots, shape (n, B): the same figure of each seed recomputed on B
    bootstrap resamples of the items, resample b drawing the same items for every seed (and for both sides of a
    difference); items: N, the number of items. Resamples (columns) with a nan anywhere are dropped.

    Var(mean) = seed part + item part, the two-way split of `seed_sentence_interval` with the bootstrap in place
    of the sentence mean squares. Seed part: var(per_seed) / n, one mean square over seeds (n - 1 df) that holds
    the seed x item residual / n as well. Item part: the bootstrap variance of the seed mean,
    V_mean = var_b(boots.mean(0)), estimates item + residual / n, and the mean of each seed's own bootstrap
    variance, V_each, estimates item + residual; so residual / n = (V_each - V_mean) / (n - 1) and
    item = V_mean - residual / n, each clipped at zero, so the residual is not counted twice.
    Degrees of freedom of the item part: V_mean plays MS_sentence (N - 1 df) and the residual MS_residual
    ((n - 1)(N - 1)), each also carrying the Monte-Carlo noise of B resamples (B - 1 df, (n - 1)(B - 1)): relative
    variances add, so df = 1 / (1 / (N - 1) + 1 / (B - 1)), times n - 1 for the residual; Welch-Satterthwaite
    over the two. Quantile: `_seed_item_interval`, as for `seed_sentence_interval`.
    Out: Interval(mean, ends, std = sd over seeds, n = seeds, se, df (Student-t equivalent), p). Not estimable
    (flagged, with a note): one seed, or no variation in any seed or resample.
    """
    x = np.asarray(per_seed, dtype=float).ravel()
    boots = np.atleast_2d(np.asarray(boots, dtype=float))
    if x.size == 0 or boots.ndim != 2 or boots.shape[0] != x.size:
        raise ValueError(f"boots must be (seeds, resamples) with one row per seed, got {boots.shape} for {x.size}")
    if items < 2:
        raise ValueError(f"items must be at least 2, got {items}")
    boots = boots[:, ~np.isnan(boots).any(axis=0)]
    if boots.shape[1] < 2:
        raise ValueError("seed_bootstrap_interval needs at least 2 resamples without nan")
    n, mean = x.size, float(x.mean())
    if n < 2:
        return _not_estimable(mean, n, "one seed")
    seed_part = float(x.var(ddof=1)) / n
    v_mean = float(boots.mean(axis=0).var(ddof=1))
    v_each = float(boots.var(axis=1, ddof=1).mean())
    residual = max(0.0, v_each - v_mean) / (n - 1)  # the residual's share of v_mean
    item_part = max(0.0, v_mean - residual)
    df = 1.0 / (1.0 / (items - 1) + 1.0 / (boots.shape[1] - 1))
    item_den = v_mean**2 / df + residual**2 / ((n - 1) * df) if item_part > 0 else 0.0
    if seed_part + item_part <= 0:
        return _not_estimable(mean, n, "no variation in any seed or resample")
    return _seed_item_interval(mean, seed_part, n - 1, item_part, item_den, confidence, float(x.std(ddof=1)), n)


def minimum_detectable_effect(interval: Interval, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `alpha` detects with probability `power`, at this
    interval's standard error and degrees of freedom: (t_{1-alpha/2} + t_{power}) * se. nan when not estimable."""
    if interval.flagged or math.isnan(interval.se):
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, interval.df) + stats.t.ppf(power, interval.df)) * interval.se)


def _sample_mean_interval(values, confidence: float, unit: str) -> Interval:
    """Student-t interval of the mean of 1-D values, one per `unit` (seed, language): mean -/+
    t_{(1+c)/2, n-1} * std / sqrt(n), std the sample standard deviation (ddof=1). Flagged (low = high = mean,
    std = nan, a note) with one value, or values that do not vary."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"an interval over {unit}s needs at least one value")
    if x.size == 1:
        return _not_estimable(float(x[0]), 1, f"one {unit}")
    std = float(x.std(ddof=1))
    if std <= 1e-12:  # every value the same: a zero-width interval would claim certainty
        return _not_estimable(float(x.mean()), x.size, f"no variation across {unit}s")
    return _t_interval(x.mean(), std / math.sqrt(x.size), x.size - 1, confidence, std, x.size)


def seed_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values (e.g. one language's accuracy over N seeds).

    In: 1-D values, one per seed. Out: Interval(mean, mean -/+ t_{(1+c)/2, n-1} * std / sqrt(n), std, n, se, df,
    p) with std the sample standard deviation (ddof=1). Flagged (low = high = mean, std = nan, a note) with one
    value, or values that do not vary.
    """
    return _sample_mean_interval(values, confidence, "seed")


def languages_interval(per_language, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean over languages treated as a random sample of languages: for statements
    about low-resource languages in general, not only the ones measured.

    In: 1-D values, one per language (e.g. each language's mean gain over seeds and sentences). The spread
    across languages already holds each language's own seed and sentence noise, so nothing is added to it; the
    group intervals of `seed_sentence_interval` instead treat the languages as fixed (a statement about these
    languages only) and are narrower. Out: Interval(mean, mean -/+ t_{(1+c)/2, L-1} * std / sqrt(L),
    std = sd over languages, n = L, se, df = L - 1, p). Flagged (a note) with one language, or values that do
    not vary.
    """
    return _sample_mean_interval(per_language, confidence, "language")


def paired_difference(a_by_seed, b_by_seed, confidence: float = 0.95) -> Interval:
    """Interval of mean(a) - mean(b) over seeds (e.g. trained r > 0 vs the r = 0 baseline).

    Same lengths: the seeds are paired by index and this is the t-interval of the differences a_i - b_i
    (std = their sample SD, n = pairs). Different lengths: no pairing is possible, so Welch's t-interval on
    the difference of means (Welch-Satterthwaite df; std = the standard error of the difference,
    n = min(len(a), len(b))); flagged when either side has a single seed.
    """
    a = np.asarray(a_by_seed, dtype=float).ravel()
    b = np.asarray(b_by_seed, dtype=float).ravel()
    if a.size == b.size:
        return seed_interval(a - b, confidence)
    diff, n = float(a.mean() - b.mean()), min(a.size, b.size)
    if n < 2:
        return Interval(diff, diff, diff, math.nan, n)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)) if se > 0 else 1.0
    return _t_interval(diff, se, df, confidence, se, n)


def _resample_counts(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) matrix: how often each of n items is drawn in each of n_boot resamples of size n."""
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def _percentile_interval(point: float, boots: np.ndarray, confidence: float, n: int) -> Interval:
    tail = _check_confidence(confidence)
    boots = boots[~np.isnan(boots)]
    if boots.size < 2:
        return Interval(float(point), float(point), float(point), math.nan, int(n))
    low, high = np.quantile(boots, [tail, 1 - tail])
    return Interval(float(point), float(low), float(high), float(boots.std(ddof=1)), int(n))


def bootstrap_accuracy_difference(
    hits_a, hits_b, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Paired bootstrap over sentences of mean(hits_a) - mean(hits_b): test-set noise only.

    In: two 1-D arrays of per-query hits (0/1, or per-sentence fractions) of two systems on the same
    sentences in the same order. Sentence indices are resampled with replacement, the same for a and b.
    Out: percentile interval; mean = observed difference, std = SD of the bootstrap replicates (a standard
    error), n = sentences. Deterministic given `seed`.
    """
    a, b = np.asarray(hits_a, dtype=float), np.asarray(hits_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"hits must be 1-D arrays of the same non-zero length, got {a.shape} and {b.shape}")
    d = a - b
    boots = _resample_counts(np.random.default_rng(seed), d.size, n_boot) @ d / d.size
    return _percentile_interval(d.mean(), boots, confidence, d.size)


def _row_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))


def spearman_rows(x, y) -> np.ndarray:
    """Spearman rank correlation of each row of x with the same row of y, the items along the last axis.

    In: two arrays of the same shape, (B, N) for B resamples of N items (1-D: a single row). Ties get average
    ranks, as scipy.stats.spearmanr gives row by row; a row with a constant side gives nan.
    Out: an array of shape x.shape[:-1] (0-d for 1-D input).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim == 0:
        raise ValueError(f"x and y must be arrays of the same shape, got {x.shape} and {y.shape}")
    return _row_pearson(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))


def spearman_with_interval(x, y, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95):
    """Spearman rank correlation over items (languages) and its bootstrap percentile interval.

    In: two 1-D arrays, one value per item; pairs with a nan in either are dropped. Ties get average ranks
    (as scipy.stats.spearmanr). Items are resampled with replacement and re-ranked; replicates with a
    constant side (undefined rho) are dropped. Out: (rho, Interval(rho, low, high, bootstrap SD, n items)).
    With fewer than 3 items: (nan, Interval of nans).
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = x.size
    if n < 3:
        return math.nan, Interval(math.nan, math.nan, math.nan, math.nan, n)
    rho = float(spearman_rows(x, y))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = spearman_rows(x[idx], y[idx])
    return rho, _percentile_interval(rho, boots, confidence, n)


def p_value_from_t(t_stat: float, df: float) -> float:
    """Two-sided p-value of a t statistic with df degrees of freedom."""
    return float(2 * stats.t.sf(abs(t_stat), df))


def holm_significant(p_values, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test: which of m hypotheses are rejected at family-wise error rate alpha.

    Sorted ascending, p_(k) (k = 1..m) is rejected while p_(k) <= alpha / (m - k + 1); the first failure
    stops the procedure. A nan p-value counts in m but is never rejected. Out: flags in the input order.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    p = np.where(np.isnan(p), np.inf, p)
    order, m = np.argsort(p, kind="stable"), p.size
    passed = p[order] <= alpha / (m - np.arange(m))
    n_rejected = m if passed.all() else int(np.argmin(passed))
    significant = np.zeros(m, dtype=bool)
    significant[order[:n_rejected]] = True
    return significant.tolist()


def mark(interval: Interval) -> str:
    """Return "*" when the interval excludes zero, "" otherwise (flagged intervals never do)."""
    return "*" if interval.excludes_zero else ""


def format_interval(iv: Interval, percent: bool = True) -> str:
    """Format as "+3.1 [+0.4, +5.8]" (percentage points, 1 decimal) or "+0.031 [+0.004, +0.058]" (percent=False).

    A flagged interval prints its reason, "+3.1 (no interval: one seed)"; a nan mean as "nan".
    """
    scale, digits = (100.0, 1) if percent else (1.0, 3)

    def num(v: float) -> str:
        return f"{v * scale:+.{digits}f}"  # a tiny negative end stays "-0.0", in line with mark()

    if math.isnan(iv.mean):
        return "nan"
    if iv.flagged:
        return f"{num(iv.mean)} (no interval: {iv.note or f'n={iv.n}'})"
    return f"{num(iv.mean)} [{num(iv.low)}, {num(iv.high)}]"
