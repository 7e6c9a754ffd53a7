"""Cross-lingual similarity (study.evaluation.crosslingual) on the real translated STS-B files and the real encoder,
and the selection constraint it feeds: Optuna's constrained search through Ray's OptunaSearch, and "best" in
study.analysis.trials."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from study.analysis.trials import best_trial, eligible_trials
from study.errors import DataError
from study.evaluation import crosslingual
from study.evaluation.data import XSTS_SPLIT_KEY, load_crosslingual_sts, load_stsb, split_indices
from study.orchestration.settings import StudySettings


def test_translated_pairs_split_like_tatoeba_with_one_permutation_for_every_language(data_dir):
    english = load_stsb("dev", data_dir)
    rows = split_indices(len(english), XSTS_SPLIT_KEY, "selection")
    repeated = _repeated(english)  # sentences STS-B dev itself has on several rows may fall in both halves
    for lang in crosslingual.XSTS_LANGS:
        selection, report = (load_crosslingual_sts(lang, data_dir, split=s) for s in ("selection", "report"))
        assert len(selection) == len(report) == len(english) // 2 == 750
        # the same rows for every language: no half of one language holds the other half's English sentences
        assert selection["english"] == [english["sentence1"][i] for i in rows], lang
        assert selection["score"] == [english["score"][i] for i in rows], lang
        assert not (set(selection["english"]) & set(report["english"])) - repeated, lang
    # a budget's subsample is drawn across the file (STS-B dev is ordered by genre), nested, in file order
    few, more, report = (load_crosslingual_sts("de", data_dir, n, "report") for n in (40, 120, None))
    rows = {name: list(zip(ds["english"], ds["translated"])) for name, ds in
            (("few", few), ("more", more), ("report", report))}
    assert len(set(rows["more"])) == 120 and set(rows["few"]) < set(rows["more"]) < set(rows["report"])
    assert set(rows["more"]) & set(rows["report"][:250]) and set(rows["more"]) & set(rows["report"][-250:])


def _repeated(english) -> set[str]:
    """English sentences STS-B dev itself has on more than one row (they may fall in both halves)."""
    seen, twice = set(), set()
    for sentence in english["sentence1"]:
        (twice if sentence in seen else seen).add(sentence)
    return twice


def test_a_misaligned_translation_is_one_line_naming_the_file_and_row(data_dir, tmp_path):
    folder = tmp_path / "stsb-multi-mt"
    folder.mkdir()
    rows = list(csv.reader((data_dir / "stsb-multi-mt" / "stsb-en-dev.csv").open(encoding="utf-8")))
    with (folder / "stsb-en-dev.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    rows[6][2] = "0.123"
    with (folder / "stsb-fr-dev.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError, match=r"stsb-fr-dev.csv row 7: score 0.123 differs") as err:
        load_crosslingual_sts("fr", tmp_path)
    assert "\n" not in str(err.value)
    with (folder / "stsb-fr-dev.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:-1])
    with pytest.raises(DataError, match="has 1499 rows but stsb-en-dev.csv has 1500"):
        load_crosslingual_sts("fr", tmp_path)


def test_figures_are_spearman_and_paraphrase_retrieval_of_the_real_encoder(encoder, data_dir):
    pairs = crosslingual.load_pairs(["de", "pt"], data_dir, "selection", 60)
    measured = crosslingual.evaluate_pairs(encoder, pairs)
    english = encoder.embed(pairs["english"])
    paraphrase = [i for i, score in enumerate(pairs["score"]) if score >= 4]
    assert 5 < len(paraphrase) < 60
    for lang in ("de", "pt"):
        theirs = encoder.embed(pairs["translated"][lang])
        cos = (english * theirs).sum(1).numpy()
        assert measured["cos"][lang] == pytest.approx(cos.tolist(), abs=1e-5)
        figures = measured["languages"][lang]
        assert figures["xsts"] == pytest.approx(spearmanr(cos, pairs["score"]).statistic, abs=1e-6)
        nearest = (english[paraphrase] @ theirs[paraphrase].T).argmax(1)
        assert figures["xpara"] == pytest.approx((nearest == torch.arange(len(paraphrase))).float().mean().item())
        assert 0.5 < figures["xsts"] < 1 and figures["n"] == 60  # the untrained encoder is good at this already
    flat = crosslingual.flatten(measured, "selection")
    assert flat["selection.xsts.mean"] == pytest.approx(np.mean([flat["selection.xsts.de"],
                                                                 flat["selection.xsts.pt"]]))
    assert flat["selection.xsts.mean"] == pytest.approx(crosslingual.mean_spearman(measured))


def test_the_constraint_passes_the_untrained_encoder_and_refuses_a_damaged_one(encoder, fresh_encoder, data_dir):
    untrained = crosslingual.evaluate_pairs(encoder, crosslingual.load_pairs(["de", "fr"], data_dir, "selection", 80))
    same = crosslingual.against_untrained(untrained, untrained, "selection")
    assert same == {"selection.xsts.vs_untrained": 0.0, "selection.xsts.vs_untrained_se": 0.0,
                    crosslingual.CONSTRAINT: 0.0}
    # a real model whose word vectors are noised (a crude stand-in for a harmful fine-tuning)
    weights = fresh_encoder.model.get_input_embeddings().weight
    with torch.no_grad():
        weights.add_(0.1 * torch.randn(weights.shape, generator=torch.Generator().manual_seed(0)))
    damaged = crosslingual.evaluate_pairs(fresh_encoder, crosslingual.load_pairs(["de", "fr"], data_dir,
                                                                                  "selection", 80))
    figures = crosslingual.against_untrained(damaged, untrained, "selection")
    print(figures)
    assert figures["selection.xsts.vs_untrained"] == pytest.approx(
        crosslingual.mean_spearman(damaged) - crosslingual.mean_spearman(untrained))
    assert 0 < figures["selection.xsts.vs_untrained_se"] < 0.1 < -figures["selection.xsts.vs_untrained"]
    assert figures[crosslingual.CONSTRAINT] > 0, "the damage is beyond one standard error"
    with pytest.raises(ValueError, match="other pairs"):
        crosslingual.against_untrained(damaged, crosslingual.evaluate_pairs(
            encoder, crosslingual.load_pairs(["de", "fr"], data_dir, "report", 80)), "selection")


# ----------------------------------------------------------------------------- the constraint in the search
def test_ray_optuna_search_hands_the_constraint_to_optuna_also_for_pruned_trials_and_after_a_restore(tmp_path):
    import optuna

    from search_spaces import load_space
    from study.orchestration.tuning import make_scheduler, make_searcher

    def searcher():
        space = load_space("full")
        settings = StudySettings(space="full", budget="smoke", num_samples=8, epochs=1, max_concurrent=8)
        scheduler = make_scheduler(settings, space)
        scheduler.set_search_properties("objective.robust", "max")
        return make_searcher(settings, space, scheduler)

    limiter = searcher()
    for trial_id in ("harmless", "harmful", "stopped"):
        limiter.suggest(trial_id)
    done = {"training_iteration": 1, "config/epochs": 1}
    limiter.on_trial_complete("harmless", {"objective.robust": 0.6, crosslingual.CONSTRAINT: -0.004, **done})
    limiter.on_trial_complete("harmful", {"objective.robust": 0.9, crosslingual.CONSTRAINT: 0.03, **done})
    limiter.on_trial_complete("stopped", {"objective.robust": 0.2, crosslingual.CONSTRAINT: 0.01,
                                          "training_iteration": 1, "config/epochs": 3})
    study = limiter.searcher._ot_study
    trials = {t.number: t for t in study.trials}
    assert [trials[i].constraints for i in range(3)] == [{"xsts": -0.004}, {"xsts": 0.03}, {"xsts": 0.01}]
    assert trials[2].state == optuna.trial.TrialState.PRUNED
    # Optuna's own view: the harmful trial, although its objective is higher, is not feasible
    from optuna.study._constrained_optimization import _get_feasible_trials

    assert [t.number for t in _get_feasible_trials(study.trials)] == [0]
    limiter.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert [t.constraints for t in restored.searcher._ot_study.trials] == [t.constraints for t in study.trials]


def _trial(ratio: float, robust: float, constraint: float | None, status: str = "FINISHED") -> dict:
    metrics = {"objective.robust": robust}
    if constraint is not None:
        metrics[crosslingual.CONSTRAINT] = constraint
    return dict(name=f"r{ratio}", status=status, params={"ratio": ratio}, metrics=metrics)


def test_best_is_the_best_objective_among_the_trials_that_do_no_harm():
    trials = [_trial(0.95, 0.74, 0.02), _trial(0.55, 0.72, -0.001), _trial(0.0, 0.64, -0.01),
              _trial(0.3, 0.80, -0.02, status="KILLED")]
    assert best_trial(trials, "robust")["name"] == "r0.55"
    assert [t["name"] for t in eligible_trials(trials, "robust")] == ["r0.55", "r0.0"]
    assert best_trial([_trial(0.95, 0.74, 0.02)], "robust") is None, "no trial meets it: no best"
    assert best_trial([_trial(0.95, 0.74, None)], "robust")["name"] == "r0.95", "not measured: not constrained"


def test_export_refuses_a_study_without_a_trial_that_does_no_harm_unless_one_is_named():
    from study.analysis.exporting import choose_trial
    from study.errors import StudyError

    harmful = dict(_trial(0.95, 0.74, 0.02), trial_id="t1", run_id="run1")
    with pytest.raises(StudyError, match="no finished trial meets the selection constraint") as err:
        choose_trial([harmful], "robust")
    assert "--trial" in str(err.value) and "\n" not in str(err.value)
    assert choose_trial([harmful], "robust", which="t1") is harmful


def test_export_help_says_the_best_is_chosen_on_the_selection_split():
    from studytools import run_cli

    result = run_cli("study.export", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "chosen on the selection split" in text and "report split" not in text


def test_every_budget_replicates_with_the_trials_own_attack():
    """A review found the cpu budget's trials attacking with PGD-2 and its replication with PGD-1, while the
    findings called the replication's attack "the trials' own"."""
    from study.evaluation.robustness import EvalConfig
    from study.orchestration.budgets import BUDGETS

    for name, budget in BUDGETS.items():
        trials = budget.eval.get("attack_steps", EvalConfig.attack_steps)
        assert budget.replication_eval.get("attack_steps", trials) == trials, name


def test_the_summary_says_plainly_when_no_trial_meets_the_constraint():
    from study.analysis.reporting import markdown_table

    text = markdown_table([], None, None, ["ratio", "epsilon"])
    assert text.startswith("Best trial: none: no finished trial meets the selection constraint")
    assert "`study.export` refuses without `--trial`" in text


def test_a_subsample_without_paraphrases_gives_no_paraphrase_figure_and_no_error(encoder, data_dir):
    pairs = crosslingual.load_pairs(["de"], data_dir, "selection", 40)
    low = [i for i, score in enumerate(pairs["score"]) if score < 4][:12]
    pairs = {"score": [pairs["score"][i] for i in low], "english": [pairs["english"][i] for i in low],
             "translated": {"de": [pairs["translated"]["de"][i] for i in low]}}
    figures = crosslingual.evaluate_pairs(encoder, pairs)["languages"]["de"]
    assert np.isnan(figures["xpara"]) and 0 < figures["xsts"] <= 1
