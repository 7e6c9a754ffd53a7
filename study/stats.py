"""Uncertainty of accuracy@1 differences: over seeds, over sentences, and both.

Accuracies and hits are fractions in [0, 1]; an `Interval` is always about a mean (or a difference of means,
or a correlation) and carries its point estimate, the two ends, a spread and a count. What "std" and "n"
mean depends on the method, so each function says it. The significance marker used in tables is
"the interval excludes zero" (`mark`); `holm_significant` is there for many p-values at once.

Which interval to quote: `combined_interval` (seeds and sentences resampled together). `paired_difference`
sees only seed-to-seed noise, `bootstrap_accuracy_difference` only the finite test set.
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
    and it never counts as excluding zero.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int

    @property
    def flagged(self) -> bool:
        return math.isnan(self.std)

    @property
    def excludes_zero(self) -> bool:
        return not self.flagged and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return (1 - confidence) / 2


def _t_interval(mean: float, se: float, df: float, confidence: float, std: float, n: int) -> Interval:
    half = stats.t.ppf(1 - _check_confidence(confidence), df) * se if se > 0 else 0.0
    return Interval(float(mean), float(mean - half), float(mean + half), float(std), int(n))


def seed_interval(values, confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values (e.g. one language's accuracy over N seeds).

    In: 1-D values, one per seed. Out: Interval(mean, mean -/+ t_{(1+c)/2, n-1} * std / sqrt(n), std, n)
    with std the sample standard deviation (ddof=1). With n == 1: low = high = mean, std = nan (flagged).
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("seed_interval needs at least one value")
    if x.size == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]), math.nan, 1)
    std = float(x.std(ddof=1))
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


def combined_interval(
    hits_a_by_seed, hits_b_by_seed, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """Two-stage bootstrap over seeds and sentences of the seed-averaged accuracy difference a - b.

    In: (seeds, sentences) arrays of hits; every row holds the same sentences in the same order. Each
    replicate (1) draws seeds with replacement: paired by index when a and b have the same number of seeds,
    independently otherwise (a single-row b, e.g. the untrained encoder, is then used every time); (2) draws
    one set of sentence indices with replacement, shared by a, b and all drawn seeds, because seeds and
    sentences are crossed (every seed was evaluated on the same test set), and resampling sentences
    separately per seed would understate the test-set noise. Out: percentile interval; mean = observed
    difference of the seed-averaged accuracies, std = SD of the replicates, n = number of seeds of a.
    This is the interval to quote: it carries both the training-seed and the finite-test-set noise.
    """
    a = np.atleast_2d(np.asarray(hits_a_by_seed, dtype=float))
    b = np.atleast_2d(np.asarray(hits_b_by_seed, dtype=float))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or a.size == 0 or b.size == 0:
        raise ValueError(f"hits must be (seeds, sentences) arrays with the same sentences, got {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    n_sent = a.shape[1]
    if a.shape[0] == b.shape[0]:
        by_sentence = _resample_counts(rng, a.shape[0], n_boot) @ (a - b) / a.shape[0]
    else:
        wa = _resample_counts(rng, a.shape[0], n_boot) / a.shape[0]
        wb = _resample_counts(rng, b.shape[0], n_boot) / b.shape[0]
        by_sentence = wa @ a - wb @ b
    sentence_weights = _resample_counts(rng, n_sent, n_boot) / n_sent
    boots = np.einsum("bs,bs->b", by_sentence, sentence_weights)
    return _percentile_interval(a.mean() - b.mean(), boots, confidence, a.shape[0])


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

    A flagged interval (one seed) prints as "+3.1 (n=1)"; a nan mean as "nan".
    """
    scale, digits = (100.0, 1) if percent else (1.0, 3)

    def num(v: float) -> str:
        return f"{v * scale:+.{digits}f}"  # a tiny negative end stays "-0.0", in line with mark()

    if math.isnan(iv.mean):
        return "nan"
    if iv.flagged:
        return f"{num(iv.mean)} (n={iv.n})"
    return f"{num(iv.mean)} [{num(iv.low)}, {num(iv.high)}]"
