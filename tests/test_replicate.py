"""study.replicate's choices and analysis on small inputs: which baselines it trains, how it pairs seeds, how
it stars languages and what it says about power. The end-to-end replication of a real study is in
test_study.py."""

from __future__ import annotations

import numpy as np
import pytest

from study.evaluation.languages import GROUPS
from study.evaluation.robustness import lang_key
from study.orchestration.settings import StudySettings
from study.replicate import Findings, Replica, analyse, choose_configs, findings, language_distance
from trainables.config import TrialConfig

RADII = [0.05, 0.2]


def _trial(ratio: float, robust: float, **params) -> dict:
    config = TrialConfig(ratio=ratio, **params)
    return dict(status="FINISHED", params={"ratio": ratio}, raw_params=config.mlflow_params(),
                metrics={"objective.robust": robust})


def test_the_baseline_is_r0_at_the_best_settings_and_the_study_r0_joins_only_when_it_trains_differently():
    best = _trial(0.4, 0.8, epsilon=0.3, lr=3e-5)
    # hybrid_ratio-like: the study's r = 0 trial differs from best only in keys that do nothing at r = 0
    chosen = dict(choose_configs([_trial(0.0, 0.5, epsilon=0.5, lr=3e-5), best], "robust", top=1))
    assert list(chosen) == ["baseline", "best1"]
    assert chosen["baseline"].ratio == 0.0 and chosen["baseline"].lr == 3e-5
    # full-like: the study's r = 0 trial trained with another learning rate: both baselines are replicated
    chosen = dict(choose_configs([_trial(0.0, 0.5, lr=2e-5), best], "robust", top=1))
    assert list(chosen) == ["baseline", "study_baseline", "best1"]
    assert chosen["baseline"].lr == 3e-5 and chosen["study_baseline"].lr == 2e-5


def _hits(rng, accuracy: float, n: int) -> list[int]:
    return (rng.random(n) < accuracy).astype(int).tolist()


def _language_hits(rng, accuracy: float, sentences: int, strong: bool) -> dict[str, list[int]]:
    hits = {"l2e": _hits(rng, accuracy, sentences)}
    for r in RADII:
        hits[f"attacked_eps{r:g}"] = _hits(rng, accuracy - 0.2, sentences)
        if strong:
            hits[f"strong_eps{r:g}"] = _hits(rng, accuracy - 0.4, sentences)
    return hits


def _replicas(rng, name: str, seeds, accuracy: dict[str, float], sentences: int, strong=False) -> list[Replica]:
    return [Replica(name, seed, {"en.paraphrase_acc": 0.9 + 0.001 * seed},
                    {lang: _language_hits(rng, acc, sentences, strong) for lang, acc in accuracy.items()})
            for seed in seeds]


def _reference(rng, langs, sentences: int, strong=False) -> dict:
    hits = {lang: _language_hits(rng, 0.5, sentences, strong) for lang in langs}
    metrics = {lang_key("report", lang, "l2e"): float(np.mean(hits[lang]["l2e"])) for lang in langs}
    return {"hits": hits, "metrics": {**metrics, "en.paraphrase_acc": 0.85}}


def test_configurations_pair_by_seed_value_not_by_position():
    rng = np.random.default_rng(0)
    langs = ["swh", "deu"]
    accuracy = {"swh": 0.6, "deu": 0.8}
    replicas = (_replicas(rng, "baseline", [1001, 1002, 1003], accuracy, 40)
                + _replicas(rng, "best1", [1000, 1001, 1002], accuracy, 40))
    analysis = analyse(replicas, _reference(rng, langs, 40), langs, RADII)
    change = analysis["best1"].languages["swh"]["robust"].vs_baseline
    assert change.n == 2, "only the seeds both configurations have (1001, 1002) are compared"
    by_seed = {(r.name, r.seed): r for r in replicas}
    expected = np.mean([np.mean(by_seed[("best1", s)].hits["swh"][f"attacked_eps{r:g}"])
                        - np.mean(by_seed[("baseline", s)].hits["swh"][f"attacked_eps{r:g}"])
                        for s in (1001, 1002) for r in RADII])
    assert change.mean == pytest.approx(expected)
    english = analysis["best1"].english["en.paraphrase_acc"].vs_baseline
    assert english.mean == pytest.approx(0.0) and english.n == 2  # same seed value, same English figure


def test_findings_star_languages_by_holm_and_state_what_the_budget_can_detect():
    rng = np.random.default_rng(1)
    langs = list(GROUPS["low"][:4]) + list(GROUPS["high"][:2])
    base = {lang: 0.6 for lang in langs}
    better = {**base, langs[0]: 0.95}  # a large gain in one low-resource language only
    replicas = (_replicas(rng, "baseline", range(1000, 1005), base, 200)
                + _replicas(rng, "best1", range(1000, 1005), better, 200))
    reference = _reference(rng, langs, 200)
    analysis = analyse(replicas, reference, langs, RADII)
    chosen = [("baseline", TrialConfig(ratio=0.0)), ("best1", TrialConfig(ratio=0.4, epsilon=0.3))]
    settings = StudySettings(model="e5", space="hybrid_ratio", budget="cpu", num_samples=6, epochs=2)
    text = findings(Findings("s", settings, chosen, analysis, language_distance(analysis, reference, langs, "best1"),
                             langs, RADII, 5, "the cpu budget's default", "report-split", "budget", "CPU", 1.0))
    robust_table = text.split("## Per language: robust accuracy")[1].split("\n## ")[0]
    change = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[6] for line in robust_table.splitlines()
              if line.startswith("| ") and not line.startswith("| language")}
    print(text)
    assert change[langs[0]].endswith("*"), "the real gain is starred"
    assert not any(change[lang].endswith("*") for lang in langs[1:]), "no false star among the null languages"
    assert "Holm" in text and "5 seeds" in text and "report-split sentences" in text
    assert "80% power" in text and "points" in text


def test_the_strong_attack_gets_its_own_table_where_it_ran():
    rng = np.random.default_rng(2)
    langs = list(GROUPS["low"][:2]) + list(GROUPS["high"][:1])
    accuracy = {lang: 0.7 for lang in langs}
    settings = StudySettings(model="e5", space="hybrid_ratio", budget="gpu", num_samples=6, epochs=2)
    chosen = [("baseline", TrialConfig(ratio=0.0)), ("best1", TrialConfig(ratio=0.4, epsilon=0.3))]
    for strong in (True, False):
        replicas = (_replicas(rng, "baseline", range(3), accuracy, 50, strong)
                    + _replicas(rng, "best1", range(3), accuracy, 50, strong))
        reference = _reference(rng, langs, 50, strong)
        analysis = analyse(replicas, reference, langs, RADII)
        text = findings(Findings("s", settings, chosen, analysis,
                                 language_distance(analysis, reference, langs, "best1"), langs, RADII, 3, "--seeds",
                                 "report-split", "budget", "GPU", 1.0, (20, 3)))
        assert ("## Under the strong attack" in text) == strong
        assert ("PGD-20 with 3 random restarts" in text) == strong
        assert ("robust_strong" in analysis["best1"].languages[langs[0]]) == strong


# ----------------------------------------------------------------------------- cross-lingual similarity, --top K
XSTS = ("de", "fr")


def _pairs(rng, score: np.ndarray, harm: float, para: float) -> dict:
    """Per-pair cross-lingual measurements as study.evaluation.crosslingual.evaluate_pairs keeps them: cosines that
    track the gold score (less so with `harm`), paraphrase hits at rate `para` among the pairs scored >= 4."""
    strong = score >= 4
    return {"score": score.tolist(),
            "cos": {lang: (0.1 * score + (0.05 + harm) * rng.standard_normal(score.size)).tolist() for lang in XSTS},
            "para": {lang: _hits(rng, para, int(strong.sum())) for lang in XSTS}}


def _with_pairs(replicas: list[Replica], rng, score, harm: float, para: float) -> list[Replica]:
    return [Replica(r.name, r.seed, r.metrics, r.hits, _pairs(rng, score, harm, para)) for r in replicas]


def test_replication_measures_cross_lingual_similarity_and_findings_show_every_configuration_and_the_seeds_used():
    rng = np.random.default_rng(4)
    langs = list(GROUPS["low"][:3]) + list(GROUPS["high"][:1])
    score = rng.uniform(0, 5, 300)
    accuracy = {lang: 0.7 for lang in langs}
    replicas = (_with_pairs(_replicas(rng, "baseline", range(3), accuracy, 60), rng, score, 0.0, 0.8)
                + _with_pairs(_replicas(rng, "study_baseline", range(3), accuracy, 60), rng, score, 0.0, 0.8)
                + _with_pairs(_replicas(rng, "best1", range(3), accuracy, 60), rng, score, 0.3, 0.6)  # harmful
                + _with_pairs(_replicas(rng, "best2", [0, 1], accuracy, 60), rng, score, 0.0, 0.8))  # one failed
    reference = {**_reference(rng, langs, 60), "pairs": _pairs(rng, score, 0.0, 0.8)}
    reference["metrics"].update({lang_key("selection", lang, "l2e"): rng.uniform(0.3, 0.9) for lang in langs})
    analysis = analyse(replicas, reference, langs, RADII)
    harmful, harmless = analysis["best1"].crosslingual, analysis["best2"].crosslingual
    assert harmful["xsts"].vs_untrained.high < 0 and harmful["xsts"].vs_baseline.high < 0, "the harm is seen"
    assert harmless["xsts"].vs_untrained.low < 0 < harmless["xsts"].vs_untrained.high
    assert harmful["xpara"].vs_baseline.mean == pytest.approx(
        np.mean([np.mean(r.pairs["para"][lang]) for r in replicas if r.name == "best1" for lang in XSTS])
        - np.mean([np.mean(r.pairs["para"][lang]) for r in replicas if r.name == "baseline" for lang in XSTS]))
    assert harmless["xsts"].vs_baseline.n == 2, "paired by seed: the seeds both have"
    general = analysis["best1"].low_languages["robust|vs_baseline"]
    assert general.n == 3 and general.df == 2, "languages as a random sample: t over 3 gains, 2 df"

    chosen = [("baseline", TrialConfig(ratio=0.0, lr=3e-5)), ("study_baseline", TrialConfig(ratio=0.0)),
              ("best1", TrialConfig(ratio=0.95, epsilon=1.37, lr=3e-5)),
              ("best2", TrialConfig(ratio=0.55, epsilon=0.73, lr=3e-5))]
    settings = StudySettings(model="e5", space="full", budget="cpu", num_samples=6, epochs=2)
    text = findings(Findings("s", settings, chosen, analysis, language_distance(analysis, reference, langs, "best1"),
                             langs, RADII, 3, "set by --seeds", "report-split", "budget", "CPU", 1.0,
                             seeds_used={"baseline": 3, "study_baseline": 3, "best1": 3, "best2": 2},
                             attack_steps=(2, 2)))
    print(text)
    configurations = text.split("## Every replicated configuration")[1].split("\n## ")[0]
    assert "| best2 | 0.55 | 0.73 | pgd | 2 |" in configurations
    assert "| best1 | 0.95 | 1.37 | pgd | 3 |" in configurations
    crosslingual = text.split("## Cross-lingual similarity")[1].split("\n## ")[0]
    assert "| best1 |" in crosslingual and "| best2 |" in crosslingual and "seed_bootstrap_interval" in crosslingual
    assert "used, after failed replicas were dropped: baseline 3, study_baseline 3, best1 3, best2 2 seeds" in text
    assert "3 seeds asked" in text
    assert "ablation of r at the settings the search tuned for the hybrid" in text  # review, correction 5
    assert "r = 0 got no search of its own" in text
    assert "as a sample of low-resource languages in general" in text and "taken as fixed" in text  # correction 1
    assert "At the measured variance" in text and "would go unseen" not in text  # correction 8
    assert "cross-lingual similarity" in text.split("## Answer")[1].split("\n## ")[0]
    assert "association" in text.split("## Language distance")[1]  # correction 2's wording
