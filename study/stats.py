"""Uncertainty of accuracy@1 differences: over seeds, over sentences, and both.

Accuracies and hits are fractions in [0, 1]; an `Interval` is always about a mean (or a difference of means,
or a correlation) and carries its point estimate, the two ends, a spread and a count. What "std" and "n"
mean depends on the method, so each function says it.

Which interval to quote: `seed_sentence_interval`. Every seed of a configuration is evaluated on the same
sentences, so seeds and sentences are crossed factors; its variance is the two-way random-effects estimate
(seed, sentence, residual) and its quantile Student-t with Satterthwaite's degrees of freedom, which stay
near n - 1 when seed noise dominates (3 seeds: t = 4.3, not 1.96). `tests/test_stats.py` simulates the null
with known seed and sentence noise and checks its coverage. Tables star a figure when Holm's procedure
across the languages of the table rejects it (`holm_significant` over the intervals' p-values).
`paired_difference` sees only seed-to-seed noise, `bootstrap_accuracy_difference` only the finite test set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


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


def seed_sentence_interval(tables, confidence: float = 0.95) -> Interval:
    """Interval of a mean over crossed seeds and sentences: one language's accuracy difference, or a group's.

    In: one (seeds, sentences) array per language, of per-sentence differences (hits of a minus hits of b on
    the same sentence and seed, or minus a fixed row such as the untrained encoder's), rows in the same seed
    order in every array. The figure is the mean over languages of each array's mean.

    Model per language: d[s, i] = mu + seed effect a_s + sentence effect b_i + residual. The per-seed figures
    D_s (mean over languages of each row's mean) have sample variance var(D) estimating the seed part plus the
    residual part; the sentence part of language l is (MS_sentence - MS_residual) / n of its two-way table,
    clipped at zero. Var(mean) = var(D) / n + sum_l sentence_l / (N_l L^2); the interval is Student-t with
    Satterthwaite's degrees of freedom (seed part n - 1, sentence parts N_l - 1).
    Out: Interval(mean, ends, std = sd of D over seeds, n = seeds, se, df, p). Not estimable (flagged, with a
    note): one seed, or no variation at all (every seed and sentence gives the same difference).
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
    sentence_parts = []  # (variance contribution, its df) per language
    for t in tables:
        sentences = t.shape[1]
        if sentences < 2:
            continue
        seed_means, sentence_means = t.mean(axis=1), t.mean(axis=0)
        ms_sentence = n * float(sentence_means.var(ddof=1))
        residual = t - seed_means[:, None] - sentence_means[None, :] + t.mean()
        ms_residual = float((residual**2).sum()) / ((n - 1) * (sentences - 1))
        sentence_parts.append((max(0.0, ms_sentence - ms_residual) / (n * sentences) / n_langs**2, sentences - 1))
    variance = seed_part + sum(v for v, _ in sentence_parts)
    if variance <= 0:
        return _not_estimable(mean, n, "no variation in any seed or sentence")
    df = variance**2 / (seed_part**2 / (n - 1) + sum(v**2 / d for v, d in sentence_parts))
    return _t_interval(mean, math.sqrt(variance), df, confidence, float(per_seed.std(ddof=1)), n)


def minimum_detectable_effect(interval: Interval, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at `alpha` detects with probability `power`, at this
    interval's standard error and degrees of freedom: (t_{1-alpha/2} + t_{power}) * se. nan when not estimable."""
    if interval.flagged or math.isnan(interval.se):
        return math.nan
    return float((stats.t.ppf(1 - alpha / 2, interval.df) + stats.t.ppf(power, interval.df)) * interval.se)


def seed_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values (e.g. one language's accuracy over N seeds).

    In: 1-D values, one per seed. Out: Interval(mean, mean -/+ t_{(1+c)/2, n-1} * std / sqrt(n), std, n)
    with std the sample standard deviation (ddof=1). Flagged (low = high = mean, std = nan, a note) with one
    value, or values that do not vary.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("seed_interval needs at least one value")
    if x.size == 1:
        return _not_estimable(float(x[0]), 1, "one seed")
    std = float(x.std(ddof=1))
    if std <= 1e-12:  # every seed gave the same value: a zero-width interval would claim certainty
        return _not_estimable(float(x.mean()), x.size, "no variation across seeds")
    return _t_interval(x.mean(), std / math.sqrt(x.size), x.size - 1, confidence, std, x.size)


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
    rho = float(_row_pearson(stats.rankdata(x), stats.rankdata(y)))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = _row_pearson(stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1))
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
