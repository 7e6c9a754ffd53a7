"""study.analysis.distance on simulated replications built with the real classes: the ceiling no longer makes an
association out of the same gain for every language, a real association is found, the sentence reads as an
association either way, and languages without a selection-half figure are left out of the correlation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit, logit

from study.analysis import plots
from study.analysis.distance import distance_sentence, empirical_logit, language_distance
from study.evaluation import stats
from study.evaluation.languages import GROUPS
from study.evaluation.robustness import lang_key
from study.evaluation.stats import Interval
from study.replicate import Comparison, ConfigResults

LANGS = list(GROUPS["low"]) + list(GROUPS["high"])  # 26 languages, as a replication evaluates
SENTENCES, SEEDS = 100, 3  # the cpu budget's report sentences per language; a few seeds
CAUSAL = ("because", "cause", "due to", "helps more", "leads to", "makes")


def _mean_interval(values: np.ndarray) -> Interval:
    """An Interval about the mean of per-seed values (only the mean is read here; cheaper than a t-interval)."""
    return Interval(float(values.mean()), float(values.min()), float(values.max()), float(values.std()), values.size)


def _simulate(rng, logit_gain, untrained=(0.3, 0.98), sentences=SENTENCES, seeds=SEEDS, langs=LANGS):
    """One replication: the untrained encoder's accuracy u spread evenly on the logit scale over `untrained` and
    dealt to the languages at random; r = 0 keeps it, the best configuration adds `logit_gain(logit(u))` on the
    logit scale. The untrained encoder is measured on both halves (independent sentences), each configuration's
    robust accuracy per seed, all binomial on `sentences`. Returns (analysis, reference)."""
    u = rng.permutation(expit(np.linspace(logit(untrained[0]), logit(untrained[1]), len(langs))))
    gain = np.broadcast_to(logit_gain(logit(u)), u.shape)
    best_true = expit(logit(u) + gain)
    analysis = {"baseline": ConfigResults(), "best1": ConfigResults()}
    reference = {"metrics": {}}
    for lang, p, q in zip(langs, u, best_true):
        report = rng.binomial(sentences, p) / sentences
        reference["metrics"][lang_key("selection", lang, "l2e")] = rng.binomial(sentences, p) / sentences
        reference["metrics"][lang_key("report", lang, "l2e")] = report
        base, best = rng.binomial(sentences, p, seeds) / sentences, rng.binomial(sentences, q, seeds) / sentences
        analysis["baseline"].languages[lang] = {"robust": Comparison(seeds=_mean_interval(base))}
        analysis["best1"].languages[lang] = {"robust": Comparison(
            seeds=_mean_interval(best), vs_baseline=_mean_interval(best - base),
            vs_untrained=_mean_interval(best - report))}
    return analysis, reference


def _old_points_analysis(analysis, reference):
    """The first version's analysis (study.replicate before study.analysis.distance): the gain in points against the
    untrained accuracy on the same report sentences."""
    return stats.spearman_with_interval(
        [reference["metrics"][lang_key("report", lang, "l2e")] for lang in LANGS],
        [analysis["best1"].languages[lang]["robust"].vs_baseline.mean for lang in LANGS], n_boot=500)


def test_the_same_logit_gain_everywhere_is_not_an_association_though_the_points_gain_was():
    # the review's simulation: every language gains 1.0 on the logit scale; untrained accuracy 30% .. 98%
    rng = np.random.default_rng(7)
    new, old, new_rho, old_rho = [], [], [], []
    for _ in range(200):
        analysis, reference = _simulate(rng, lambda x: 1.0)
        distance = language_distance(analysis, reference, LANGS, "best1", sentences=SENTENCES)
        new.append(distance["spearman_interval"]["excludes_zero"])
        new_rho.append(distance["spearman"])
        rho, interval = _old_points_analysis(analysis, reference)
        old.append(interval.excludes_zero)
        old_rho.append(rho)
    # the points gain: a ceiling artefact, strongly negative and "significant" in (nearly) every set
    assert np.mean(old_rho) < -0.8 and np.mean(old) > 0.95
    # the logit gain: about the nominal 5%. 1,000 sets measured 6.5% (the empirical logit's skew near the ceiling,
    # where the best configuration misses a sentence or two, leaves a median bias of rho about -0.03), so at most
    # 10% of 200 (the nominal 5% is 10 of 200, binomial SD 3)
    assert np.mean(new) <= 0.10
    assert abs(np.mean(new_rho)) < 0.1


def test_a_gain_larger_where_the_untrained_encoder_is_weaker_is_found():
    # on the logit scale: +3.3 at 30% untrained down to +0.5 at 98%
    rng = np.random.default_rng(11)
    found = []
    for _ in range(20):
        analysis, reference = _simulate(rng, lambda x: 0.5 + 0.6 * (logit(0.98) - x))
        distance = language_distance(analysis, reference, LANGS, "best1", sentences=SENTENCES)
        found.append(distance["spearman_interval"]["excludes_zero"] and distance["spearman_interval"]["high"] < 0)
    assert np.mean(found) >= 0.9
    assert distance["spearman"] < -0.4 and distance["n_used"] == len(LANGS)


def _distance_with(rng, logit_gain, excludes_zero: bool) -> dict:
    """The first simulated replication whose interval excludes zero or not, as asked."""
    for _ in range(50):
        analysis, reference = _simulate(rng, logit_gain)
        distance = language_distance(analysis, reference, LANGS, "best1", sentences=SENTENCES)
        if distance["spearman_interval"]["excludes_zero"] == excludes_zero:
            return distance
    raise AssertionError("no such simulated replication in 50")


def test_the_sentence_reads_as_an_association_in_each_case():
    rng = np.random.default_rng(3)
    weaker = distance_sentence(_distance_with(rng, lambda x: 0.5 + 0.6 * (logit(0.98) - x), True))
    stronger = distance_sentence(_distance_with(rng, lambda x: 0.5 + 0.6 * (x - logit(0.3)), True))
    neither = distance_sentence(_distance_with(rng, lambda x: 1.0, False))
    assert "negatively associated" in weaker and "larger where the untrained encoder is weaker" in weaker
    assert "further from English" in weaker and "in line with the seed paper's claim" in weaker
    assert "positively associated" in stronger and "already stronger" in stronger and "opposite" in stronger
    assert "no detectable association" in neither and "not evidence against it" in neither
    for text in (weaker, stronger, neither):
        assert text.startswith(f"Across {len(LANGS)} languages, the robust gain on the logit scale")
        assert "Spearman rho" in text and "bootstrap over languages" in text
        assert "This is an association across languages, not an effect of distance" in text
        assert "Latin-script languages" in text and "points" in text
        assert not any(word in text.replace("not an effect of distance", "") for word in CAUSAL), text


def test_languages_without_a_selection_figure_are_left_out_of_the_correlation():
    rng = np.random.default_rng(5)
    analysis, reference = _simulate(rng, lambda x: 1.0)
    del reference["metrics"][lang_key("selection", "khm", "l2e")], reference["metrics"][lang_key("selection",
                                                                                                "deu", "l2e")]
    distance = language_distance(analysis, reference, LANGS, "best1", sentences=SENTENCES)
    assert distance["n_languages"] == len(LANGS) and distance["n_used"] == len(LANGS) - 2
    assert distance["skipped"] == ["khm", "deu"] and distance["spearman_interval"]["n"] == len(LANGS) - 2
    rows = {r["lang"]: r for r in distance["rows"]}
    assert rows["khm"]["untrained_selection"] is None and rows["khm"]["logit_gain"] is not None
    assert "(2 of 26 left out" in distance_sentence(distance) and "khm, deu" in distance_sentence(distance)
    # the study's reference row can supply them
    study_row = {lang_key("selection", "khm", "l2e"): 0.4, lang_key("selection", "deu", "l2e"): 0.95}
    assert language_distance(analysis, reference, LANGS, "best1", SENTENCES, study_row)["n_used"] == len(LANGS)
    # a replication's own reference, report split only: no correlation, said so, and strict JSON
    report_only = {"metrics": {k: v for k, v in reference["metrics"].items() if not k.startswith("selection.")}}
    distance = language_distance(analysis, report_only, LANGS, "best1")
    assert distance["n_used"] == 0 and distance["spearman"] is None and len(distance["skipped"]) == len(LANGS)
    assert distance_sentence(distance).startswith("Whether the gain is associated with how far")
    assert "only 0 of 26 languages" in distance_sentence(distance)
    json.dumps(distance, allow_nan=False)


def test_logits_are_finite_at_0_and_100_percent_and_take_the_sentences_from_the_hits():
    assert empirical_logit(1.0, 300) == pytest.approx(math.log(300.5 / 0.5))
    assert empirical_logit(0.0, None) == pytest.approx(math.log(0.005 / 0.995))
    langs = ["swh", "deu", "hye"]
    results = {name: ConfigResults() for name in ("baseline", "best1")}
    for lang, base, best in zip(langs, (0.9, 1.0, 0.5), (1.0, 1.0, 0.6)):
        results["baseline"].languages[lang] = {"robust": Comparison(seeds=_mean_interval(np.full(2, base)))}
        results["best1"].languages[lang] = {"robust": Comparison(
            seeds=_mean_interval(np.full(2, best)), vs_baseline=_mean_interval(np.full(2, best - base)),
            vs_untrained=_mean_interval(np.full(2, 0.1)))}
    reference = {"metrics": {lang_key("selection", lang, "l2e"): acc for lang, acc in zip(langs, (0.5, 1.0, 0.2))},
                 "hits": {lang: {"l2e": [1] * 40} for lang in langs}}
    distance = language_distance(results, reference, langs, "best1")
    rows = {r["lang"]: r for r in distance["rows"]}
    # 40 sentences x 2 seeds: 72 of 80 -> 80 of 80
    assert rows["swh"]["logit_gain"] == pytest.approx(math.log(80.5 / 0.5) - math.log(72.5 / 8.5))
    assert rows["deu"]["logit_gain"] == 0.0 and math.isfinite(rows["deu"]["logit_untrained_selection"])
    assert rows["swh"]["gain_vs_baseline"] == pytest.approx(0.1) and rows["hye"]["untrained_report"] is None
    assert distance["script_means"]["Latin"]["n"] == 2 and set(distance["family_means"]) == {
        "Niger-Congo", "Indo-European"}
    json.dumps(distance, allow_nan=False)


def test_the_plot_draws_with_and_without_a_correlation(tmp_path):
    rng = np.random.default_rng(1)
    analysis, reference = _simulate(rng, lambda x: 1.0)
    plots.plot_distance(tmp_path / "distance.png", language_distance(analysis, reference, LANGS, "best1", SENTENCES))
    plots.plot_distance(tmp_path / "none.png", language_distance(analysis, {"metrics": {}}, LANGS, "best1"))
    assert (tmp_path / "distance.png").stat().st_size > 10_000 and (tmp_path / "none.png").is_file()


def test_drawing_leaves_the_users_matplotlib_backend_alone(tmp_path):
    """A notebook user's backend survives a report: the figures never go through pyplot (in a fresh process, so
    nothing else in the suite has imported pyplot first)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (f"import sys, matplotlib; sys.path.insert(0, {str(Path(__file__).parent)!r}); matplotlib.use('pdf')\n"
              "from pathlib import Path; import test_distance\n"
              f"test_distance.test_the_plot_draws_with_and_without_a_correlation(Path({str(tmp_path)!r}))\n"
              "assert matplotlib.get_backend() == 'pdf', matplotlib.get_backend()\n"
              "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
