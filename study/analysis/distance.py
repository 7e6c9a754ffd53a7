"""Language distance: is the gain associated with how far a language is from English?

The seed paper claims robust training "helps more the further a language is from English". A replication can
only test that as an association across languages: does the best configuration's robust gain against r = 0
go with a proxy of distance? (Languages differ in much else: script, data, sentence length; nothing here is
an effect of distance.)

The first version (study.replicate) rank-correlated the gain in points with the untrained encoder's accuracy on
the same report sentences. Two problems, both fixed here:
  - the ceiling: a language near 100% cannot gain points, so even the same gain on the logit scale for every
    language gives a strongly negative rho (near -0.9, its interval excluding zero, in the review's simulation
    and in tests/test_distance.py). Here the outcome is the gain on the logit scale,
    logit(best's robust accuracy) - logit(the r = 0 baseline's), each the mean over seeds;
  - the distance was measured on the outcome's own sentences, so whatever makes those sentences easy or hard
    sits on both sides. Here it is the untrained encoder's L->English accuracy on the *selection* half of
    Tatoeba (`reference["metrics"]["selection.acc.<lang>.l2e"]`), sentences disjoint from the report half the
    gain is measured on. A rank correlation does not care about the scale of x; rows carry it as a plain
    accuracy and on the logit scale (the plot's axis).

Logits of accuracies: the empirical logit log((x + 1/2) / (N - x + 1/2)), x = p N, which is finite at p = 0 and
p = 1 and nearly unbiased (Anscombe 1956). N is the number of hits a mean pools: sentences per seed times the
seeds (`Comparison.seeds.n`) for the replicas' accuracies, the sentences alone for the untrained encoder.
Sentences: the length of the reference's per-sentence hits of the language (the report sentences every replica
was evaluated on: exact, also for a language with fewer than max_sentences); else the `sentences` argument;
else, with no count at all, p is clipped to [EPSILON, 1 - EPSILON] (half a sentence in a hundred). The selection
half's count is not in the reference; the report half's stands in for it (the halves are the same size up to one
sentence, or both capped by max_sentences), which only moves the plot's x of a language at 0% or 100%.

Missing figures: a language whose selection-half accuracy the reference lacks keeps its row (with
untrained_selection None) but is left out of the correlation; `n_used` and `skipped` say so. With fewer than
three languages left there is no correlation (spearman None). A reference evaluated on the report split alone
has none: study.replicate evaluates the untrained encoder on the selection half too and merges those figures in;
the study's reference row (reference.json, the study's languages only) can be passed as `selection_metrics`.

Calibration (tests/test_distance.py): the same logit gain of 1.0 for 26 languages, untrained 30% .. 98%, 100
sentences x 3 seeds: the interval excludes zero in 4.5% of the test's 200 sets (6.5% of 1,000 in a longer run;
the percentile bootstrap alone gives 3.9% on pure noise), where the points-gain version did in all of them
(mean rho -0.93). The small excess over 5% is the empirical logit's skew where the best configuration misses
only a sentence or two (median bias of rho about -0.03); it shrinks with more sentences.
"""

from __future__ import annotations

import math

import numpy as np

from study.evaluation import stats
from study.evaluation.languages import LANGUAGES
from study.evaluation.robustness import lang_key

EPSILON = 0.005  # the clip of an accuracy before its logit when no sentence count is known
# the fewest languages a rank correlation is computed on (study.evaluation.stats.spearman_with_interval)
MIN_LANGUAGES = 3


def empirical_logit(p: float, trials: float | None) -> float:
    """log((x + 1/2) / (N - x + 1/2)) with x = p N hits of N = `trials`; without N, logit of p clipped to
    [EPSILON, 1 - EPSILON]. Finite for every p in [0, 1]."""
    if trials:
        x = p * trials
        return math.log((x + 0.5) / (trials - x + 0.5))
    p = min(max(p, EPSILON), 1 - EPSILON)
    return math.log(p / (1 - p))


def _sentences(reference: dict, lang: str, sentences: int | None) -> int | None:
    """The report sentences of `lang`: counted in the reference's hits where it has them, else `sentences`."""
    hits = reference.get("hits", {}).get(lang, {}).get("l2e")
    return len(hits) if hits else (int(sentences) if sentences else None)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _means_by(rows: list[dict], key: str) -> dict[str, dict]:
    """Per value of `key` (script, family): how many languages, their mean gain in points and on the logit scale."""
    out = {}
    for value in sorted({r[key] for r in rows}):
        members = [r for r in rows if r[key] == value]
        out[value] = dict(n=len(members), gain_vs_baseline=_mean(r["gain_vs_baseline"] for r in members),
                          logit_gain=_mean(r["logit_gain"] for r in members))
    return out


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def language_distance(analysis: dict, reference: dict, langs: list[str], best: str, sentences: int | None = None,
                      selection_metrics: dict | None = None) -> dict:
    """Is the best configuration's robust gain against r = 0 associated with how far a language is from English?

    In: `analysis` (study.replicate.analyse: name -> ConfigResults, with "baseline" and `best`), the untrained
    encoder's `reference` (its "metrics", and "hits" for the sentence counts), the languages, the best
    configuration's name; `sentences` per language and seed, for languages the reference has no hits of (see the
    module docstring); `selection_metrics`, a flat metrics dict to take the selection-half figures from when the
    reference has none (the study's reference row).
    Out (JSON-able, undefined values None): rows (lang, script, family, latin, untrained_selection,
    logit_untrained_selection, untrained_report, best_robust, baseline_robust, gain_vs_baseline and
    gain_vs_untrained in points, logit_gain), spearman (rho between the untrained selection-half accuracy and the
    logit gain) and spearman_interval (bootstrap over languages, `Interval.as_dict()`), n_languages, n_used,
    skipped, latin_mean / other_mean (points), latin_logit_mean / other_logit_mean, script_means and
    family_means ({value: {n, gain_vs_baseline, logit_gain}}), correction (how the logits were taken).
    """
    rows = []
    for lang in langs:
        meta = LANGUAGES[lang]
        best_robust = analysis[best].languages[lang]["robust"]
        base_robust = analysis["baseline"].languages[lang]["robust"]
        n = _sentences(reference, lang, sentences)
        key = lang_key("selection", lang, "l2e")
        selection = reference.get("metrics", {}).get(key, (selection_metrics or {}).get(key))
        logit_gain = (empirical_logit(best_robust.seeds.mean, n and n * best_robust.seeds.n)
                      - empirical_logit(base_robust.seeds.mean, n and n * base_robust.seeds.n))
        rows.append(dict(
            lang=lang, script=meta.script, family=meta.family, latin=meta.script == "Latin",
            untrained_selection=None if selection is None else float(selection),
            logit_untrained_selection=None if selection is None else empirical_logit(float(selection), n),
            untrained_report=reference.get("metrics", {}).get(lang_key("report", lang, "l2e")),
            best_robust=best_robust.seeds.mean, baseline_robust=base_robust.seeds.mean,
            gain_vs_baseline=best_robust.vs_baseline.mean if best_robust.vs_baseline is not None else None,
            logit_gain=logit_gain,
            gain_vs_untrained=best_robust.vs_untrained.mean if best_robust.vs_untrained is not None else None))
    used = [r for r in rows if r["untrained_selection"] is not None]
    if len(used) >= MIN_LANGUAGES:
        rho, interval = stats.spearman_with_interval([r["untrained_selection"] for r in used],
                                                     [r["logit_gain"] for r in used])
    else:
        rho, interval = math.nan, stats.Interval(math.nan, math.nan, math.nan, math.nan, len(used))
    latin, other = [r for r in rows if r["latin"]], [r for r in rows if not r["latin"]]
    return dict(
        rows=rows, n_languages=len(rows), n_used=len(used),
        skipped=[r["lang"] for r in rows if r["untrained_selection"] is None],
        spearman=_nan_to_none(rho), spearman_interval=interval.as_dict(),
        latin_mean=_mean(r["gain_vs_baseline"] for r in latin), other_mean=_mean(r["gain_vs_baseline"] for r in other),
        latin_logit_mean=_mean(r["logit_gain"] for r in latin), other_logit_mean=_mean(r["logit_gain"] for r in other),
        script_means=_means_by(rows, "script"), family_means=_means_by(rows, "family"),
        correction=("empirical logit log((x + 1/2) / (N - x + 1/2)), N = sentences x seeds, sentences per "
                    "language counted in the reference's hits, else "
                    + (f"{sentences}" if sentences else f"none: p clipped to [{EPSILON}, {1 - EPSILON}]")))


def _signed(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _points(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def distance_sentence(distance: dict) -> str:
    """The findings' sentences on language distance, from `language_distance`'s result: an association across
    languages, its direction only where the interval excludes zero, never a causal claim."""
    n_used, n_all, rho, iv = distance["n_used"], distance["n_languages"], distance["spearman"], \
        distance["spearman_interval"]
    left_out = (f" ({n_all - n_used} of {n_all} left out: the untrained encoder's selection-half accuracy is "
                f"missing for {', '.join(distance['skipped'])})" if n_used < n_all else "")
    scripts = (f" Mean gain on the logit scale: Latin-script languages {_signed(distance['latin_logit_mean'])} "
               f"({_points(distance['latin_mean'])}), other scripts {_signed(distance['other_logit_mean'])} "
               f"({_points(distance['other_mean'])}).")
    closing = (" This is an association across languages, not an effect of distance: languages differ in much "
               "else besides.")
    if rho is None:
        return (f"Whether the gain is associated with how far a language is from English cannot be assessed here: "
                f"only {n_used} of {n_all} languages have the untrained encoder's accuracy on the selection "
                f"sentences, and a rank correlation needs {MIN_LANGUAGES}.{scripts}")
    subject = (f"Across {n_used} languages{left_out}, the robust gain on the logit scale (best against r = 0) ")
    if iv.get("excludes_zero") and iv["high"] < 0:
        verdict = ("is negatively associated with the untrained encoder's accuracy on the selection sentences: "
                   "gains tend to be larger where the untrained encoder is weaker, i.e. further from English by this "
                   "measure")
        reading = ", in line with the seed paper's claim."
    elif iv.get("excludes_zero") and iv["low"] > 0:
        verdict = ("is positively associated with the untrained encoder's accuracy on the selection sentences: "
                   "gains tend to be larger where the untrained encoder is already stronger, i.e. closer to English "
                   "by this measure")
        reading = ", the opposite of the seed paper's claim."
    else:
        verdict = "shows no detectable association with the untrained encoder's accuracy on the selection sentences"
        reading = "; the seed paper's claim finds no support here, which is not evidence against it."
    interval = "no interval" if iv.get("low") is None else f"[{iv['low']:+.2f}, {iv['high']:+.2f}]"
    return (f"{subject}{verdict} (Spearman rho {rho:+.2f} {interval}, 95% bootstrap over languages){reading}"
            f"{scripts}{closing}")
