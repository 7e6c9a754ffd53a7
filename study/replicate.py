"""Replicate a finished study and turn it into an answer: `python -m study.replicate STUDY_DIR`.

Re-runs the K best configurations of the study ("best" as study.analysis.trials.best_trial: among the trials that
meet the cross-lingual constraint) and their baselines, each with N seeds (the same seed values
for every configuration, so they pair by seed), as Ray Tune trials (grouped under a replication parent run in
MLflow), evaluates them on the whole low- and high-resource groups, and writes
STUDY_DIR/replication/findings.md with its tables and plots. Two baselines, so that "best - baseline" is the
effect of the hybrid batch and not of other tuning: `baseline`, r = 0 at the best configuration's other
settings, and, when the study's own r = 0 trial trains differently (a space that tunes the learning rate,
epochs ...), `study_baseline`, that trial's configuration.
  - per language and group: mean over seeds, and the change against each baseline and against the untrained
    encoder with a 95% t-interval over crossed seeds and sentences (`study.evaluation.stats.seed_sentence_interval`);
    per-language stars by Holm's procedure across the languages, group rows by their own interval;
  - the smallest change of the low-resource group's robust accuracy this replication can detect (80% power);
  - for sentences about low-resource languages in general, the same changes with the languages as a random
    sample (`study.evaluation.stats.languages_interval`: t over the per-language gains);
  - the English source-language check (t-interval over seeds, paired by seed);
  - cross-lingual similarity on the report half of the translated STS-B pairs (study.evaluation.crosslingual): STS
    Spearman with `study.evaluation.stats.seed_bootstrap_interval`, paraphrase retrieval as the accuracies;
  - language distance (`study.analysis.distance`): the logit-scale gain against the untrained encoder's accuracy on the
    selection sentences, by script and family, worded as an association;
  - robustness curves: attacked accuracy against radius for baseline and best, with intervals over seeds.
The answer paragraph is written from the numbers by the code.
With --export (or --register NAME), the best configuration's first-seed replica becomes a model too
(`study.analysis.exporting`): replication/model, registered as a version of NAME whose tags name the replication
run and its findings, while findings.md names the version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study.analysis import exporting, plots
from study.analysis.distance import distance_sentence, language_distance
from study.analysis.trials import best_trial, eligible_trials, load_trials, rank_trials
from study.errors import UsageError, cli_main
from study.evaluation import crosslingual, stats
from study.evaluation.languages import GROUPS, LANGUAGES, group_of, in_group
from study.evaluation.robustness import unpack_result
from study.evaluation.stats import Interval, format_interval
from study.orchestration import tracking
from study.orchestration.budgets import BUDGETS
from study.orchestration.raycluster import (
    evaluate_on_cluster,
    require_shared_storage,
    start_ray,
    stop_gracefully_on_sigterm,
)
from study.orchestration.settings import StudySettings
from study.orchestration.studydir import load_study, tracking_uri, write_json
from study.orchestration.tuning import ended_trials, replication_tuner
from trainables.config import ADVERSARIAL_KEYS, DEFAULTS, TrialConfig
from trainables.storage import read_hits

# per language: L->English clean; mean attacked over the radii, under the trials' cheap PGD and (when the
# replication's evaluation runs it, EvalConfig.strong_attack) under the strong attack
FIGURES = ("clean", "robust", "robust_strong")
# every figure of the replication is measured on the report split, which the study's search never saw
REPORT_SPLIT_TEXT = ("report-split (half of each language's Tatoeba pairs, fixed per language, disjoint from the "
                     "selection sentences the study's search was scored on)")
ENGLISH_KEYS = ("en.paraphrase_acc", "en.stsb_spearman")


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Replica:
    """One trained (configuration, seed) of the replication, and what its evaluation measured."""

    name: str  # the configuration repeated: baseline, best1, best2 ...
    seed: int
    metrics: dict[str, float]  # the flat metrics of study.evaluation.robustness
    hits: dict[str, dict[str, list[int]]]  # lang -> l2e | attacked_eps<r> -> per-sentence 0/1
    pairs: dict | None = None  # cross-lingual per-pair measurements (study.evaluation.crosslingual.evaluate_pairs)
    trial_id: str | None = None  # Ray's trial id (its MLflow run carries it), for --export
    checkpoint: object = None  # its last ray.tune.Checkpoint (weights), for --export


@dataclass(frozen=True)
class Comparison:
    """One figure of one configuration: its mean over seeds, and its change against the r = 0 baseline at the
    same settings and against the study's own r = 0 trial (absent for a baseline itself, and the second when
    the study has no differently trained r = 0 trial), and against the untrained encoder."""

    seeds: Interval
    vs_baseline: Interval | None = None
    vs_study_baseline: Interval | None = None
    vs_untrained: Interval | None = None

    def as_dict(self) -> dict:
        return {name: getattr(self, name).as_dict() for name in ("seeds", "vs_baseline", "vs_study_baseline",
                                                                  "vs_untrained") if getattr(self, name) is not None}


@dataclass
class ConfigResults:
    """Every comparison of one configuration."""

    languages: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # lang -> clean | robust
    groups: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # low | high -> clean | robust
    english: dict[str, Comparison] = field(default_factory=dict)  # en.paraphrase_acc | en.stsb_spearman
    crosslingual: dict[str, Comparison] = field(default_factory=dict)  # xsts | xpara, means over the languages
    # languages as a random sample: the t-interval over the low-resource languages' gains (figure -> interval)
    low_languages: dict[str, Interval] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """analysis.json's layout: {"<lang>|<figure>", "group:<group>|<figure>", "english|<key>",
        "xling|<xsts|xpara>": comparison, "languages:low|<figure>": interval}."""
        out = {f"{lang}|{fig}": c.as_dict() for lang, figs in self.languages.items() for fig, c in figs.items()}
        out.update({f"group:{g}|{fig}": c.as_dict() for g, figs in self.groups.items() for fig, c in figs.items()})
        out.update({f"english|{key}": c.as_dict() for key, c in self.english.items()})
        out.update({f"xling|{key}": c.as_dict() for key, c in self.crosslingual.items()})
        out.update({f"languages:low|{fig}": iv.as_dict() for fig, iv in self.low_languages.items()})
        return out


@dataclass(frozen=True)
class Findings:
    """Everything findings.md is written from."""

    study_name: str
    settings: StudySettings  # the study's settings (study.json)
    chosen: list[tuple[str, TrialConfig]]  # the replicated configurations: the baselines, then the best first
    analysis: dict[str, ConfigResults]  # configuration name -> results
    distance: dict  # language_distance()
    langs: list[str]
    radii: list[float]
    seeds: int  # asked for
    seeds_note: str  # where the number of seeds came from, in words
    split: str  # the Tatoeba sentences reported on, in words
    budget: str  # what the replication trained and evaluated, in words
    hardware: str
    minutes: float
    strong_attack: tuple[int, int] = (20, 3)  # the strong attack's steps and restarts, where it ran
    seeds_used: dict[str, int] = field(default_factory=dict)  # configuration -> replicas that finished
    attack_steps: tuple[int, int] = (3, 3)  # the cheap attack's steps: in the replication, in the study's trials
    study_best: str = ""  # the study's best trial (study.analysis.trials.best_trial), in words

    @property
    def best(self) -> str:
        return best_configuration(self.chosen)

    def chosen_config(self, name: str) -> TrialConfig:
        return dict(self.chosen)[name]


# ----------------------------------------------------------------------------- configurations and replicas
BASELINES = ("baseline", "study_baseline")


def best_configuration(chosen: list[tuple[str, TrialConfig]]) -> str:
    """The name of the study's best configuration among the replicated ones (the first that is no baseline)."""
    return next(name for name, _ in chosen if name not in BASELINES)


def trains_like(a: TrialConfig, b: TrialConfig) -> bool:
    """Whether two configurations train alike at r = 0: equal but for the keys that act only on the
    adversarial share of a batch (and the seed)."""
    neutral = {key: getattr(DEFAULTS, key) for key in (*ADVERSARIAL_KEYS, "seed")}
    return dataclasses.replace(a, **neutral) == dataclasses.replace(b, **neutral)


def choose_configs(trials: list[dict], objective: str, top: int) -> list[tuple[str, TrialConfig]]:
    """[("baseline", config), maybe ("study_baseline", config), ("best1", config), ...] from the study's
    finished trials: best1, best2 ... the best with r > 0 among those that meet the selection constraint
    (`study.analysis.trials.eligible_trials`: "best" as everywhere else); `baseline` is r = 0 at best1's other settings;
    `study_baseline` the study's best finished r = 0 trial, when it trains differently from `baseline`."""
    study_baseline = next((t for t in rank_trials(trials, objective) if t["params"].get("ratio") == 0), None)
    if study_baseline is None:
        raise UsageError("the study has no finished r = 0 baseline trial to replicate")
    if not any(t["params"].get("ratio") != 0 for t in rank_trials(trials, objective)):
        raise UsageError("the study has no finished trial with r > 0 to replicate")
    best = [t for t in eligible_trials(trials, objective) if t["params"].get("ratio") != 0][:top]
    if not best:
        raise UsageError("no finished trial with r > 0 meets the selection constraint (cross-lingual similarity no "
                         "worse than the untrained encoder's): there is no best configuration to replicate")
    best_configs = [(f"best{i + 1}", TrialConfig.from_params(t["raw_params"])) for i, t in enumerate(best)]
    baseline = dataclasses.replace(best_configs[0][1], ratio=0.0)
    own = TrialConfig.from_params(study_baseline["raw_params"])
    baselines = [("baseline", baseline)] + ([] if trains_like(own, baseline) else [("study_baseline", own)])
    return baselines + best_configs


def describe_best(trial: dict | None, chosen: list[tuple[str, TrialConfig]]) -> str:
    """The study's best trial in words, and which replicated configuration it is."""
    if trial is None:
        return "none"
    config = TrialConfig.from_params(trial["raw_params"])
    same = next((name for name, c in chosen if name not in BASELINES and dataclasses.replace(c, seed=0)
                 == dataclasses.replace(config, seed=0)), None)
    what = f"r = {config.ratio:.2f}, epsilon = {config.epsilon:.3g}, {config.method}"
    if same:
        return f"{what}, replicated as {same}"
    if config.ratio == 0:
        return f"{what}: the r = 0 baseline itself; the best configurations with r > 0 are replicated against it"
    return what


def replica_configs(chosen, seeds: int, settings: StudySettings, eval_config: dict) -> list[TrialConfig]:
    """Each chosen configuration with seeds 1000, 1001, ... (new to the study), the replication's evaluation
    after the last epoch only, and this machine's model and data."""
    return [dataclasses.replace(config, seed=1000 + seed, eval={**eval_config, "seed": 0}, replica=name,
                                model=settings.model, data_dir=settings.data_dir, eval_every_epoch=False)
            for name, config in chosen for seed in range(seeds)]


def run_replicas(configs: list[TrialConfig], settings: StudySettings, study_dir: Path, uri: str, experiment: str,
                 parent: str) -> list[Replica]:
    """Run every replica as a Ray Tune trial; return those that finished. Their per-sentence hits come back in
    their last checkpoint (Ray's storage: a bucket on a cluster), never through a node's own disk."""
    logger = tracking.ChildRunLogger(uri, experiment, parent)
    results = replication_tuner(configs, settings, study_dir, logger).fit()
    if ended_trials(results) < len(results):
        raise KeyboardInterrupt  # Tune stopped on SIGINT: a replica that did not fail has not finished either
    replicas = []
    for result in results:
        if result.error:
            print(f"replica failed: {str(result.error).splitlines()[-1][:200]}", file=sys.stderr)
            continue
        config = TrialConfig.from_dict(result.config)
        measured = read_hits(result.checkpoint)
        replicas.append(Replica(config.replica, config.seed, unpack_result(result.metrics), measured["hits"],
                                measured.get("pairs"), trial_id=(result.metrics or {}).get("trial_id"),
                                checkpoint=result.checkpoint))
    return replicas


# ----------------------------------------------------------------------------- analysis
def sentence_scores(hits: dict, figure: str, radii) -> np.ndarray:
    """Per-sentence score of one language: clean = L->English hit; robust = mean attacked hit over the radii;
    robust_strong = the same under the strong attack."""
    if figure == "clean":
        return np.asarray(hits["l2e"], dtype=float)
    kind = "strong" if figure == "robust_strong" else "attacked"
    return np.mean([np.asarray(hits[f"{kind}_eps{r:g}"], dtype=float) for r in radii], axis=0)


def figures_measured(replicas: list[Replica], reference: dict) -> tuple[str, ...]:
    """The FIGURES every replica's and the reference's hits allow (the strong attack only where it ran)."""
    every = [r.hits for r in replicas] + [reference["hits"]]
    strong = all(any(key.startswith("strong_eps") for key in hits[lang]) for hits in every for lang in hits)
    return tuple(f for f in FIGURES if f != "robust_strong" or strong)


def analyse(replicas: list[Replica], reference: dict, langs: list[str], radii) -> dict[str, ConfigResults]:
    """Per configuration, language and figure: the interval over seeds, and the changes against each baseline
    and the untrained encoder (`stats.seed_sentence_interval`), configurations paired by seed value; the same for
    the cross-lingual paraphrase hits, and for the cross-lingual STS Spearman (`stats.seed_bootstrap_interval`:
    not a mean over pairs) where the replicas measured it."""
    by_name: dict[str, dict[int, Replica]] = {}
    for replica in replicas:
        by_name.setdefault(replica.name, {})[replica.seed] = replica
    untrained = Replica("untrained", -1, reference["metrics"], reference["hits"], reference.get("pairs"))
    figures = figures_measured(replicas, reference)

    def compare(name: str, members: list[str], scores) -> Comparison:
        """One figure of a configuration over `members` (languages), `scores(replica, member)` giving its
        per-sentence scores."""
        def table(config: str, seeds: list[int], member: str) -> np.ndarray:
            return np.array([scores(by_name[config][seed], member) for seed in seeds])

        def against(baseline: str) -> Interval | None:
            if name in BASELINES or baseline not in by_name:
                return None
            seeds = sorted(set(by_name[name]) & set(by_name[baseline]))
            if not seeds:
                return None
            return stats.seed_sentence_interval([table(name, seeds, m) - table(baseline, seeds, m) for m in members])

        seeds = sorted(by_name[name])
        own = [table(name, seeds, m) for m in members]
        return Comparison(seeds=stats.seed_interval(np.mean([t.mean(axis=1) for t in own], axis=0)),
                          vs_baseline=against("baseline"), vs_study_baseline=against("study_baseline"),
                          vs_untrained=stats.seed_sentence_interval([t - scores(untrained, m)
                                                                     for t, m in zip(own, members)]))

    def tatoeba(figure: str):
        return lambda replica, lang: sentence_scores(replica.hits[lang], figure, radii)

    measured_pairs = untrained.pairs is not None and all(r.pairs is not None for r in replicas)
    out = {}
    for name in by_name:
        results = ConfigResults()
        for lang in langs:
            results.languages[lang] = {figure: compare(name, [lang], tatoeba(figure)) for figure in figures}
        for group in ("low", "high"):
            results.groups[group] = {figure: compare(name, in_group(langs, group), tatoeba(figure))
                                     for figure in figures}
        for figure in figures:  # languages as a random sample of low-resource languages (t over their gains)
            for versus in ("vs_baseline", "vs_untrained"):
                gains = [getattr(results.languages[lang][figure], versus) for lang in in_group(langs, "low")]
                if gains and all(g is not None for g in gains):
                    results.low_languages[f"{figure}|{versus}"] = stats.languages_interval([g.mean for g in gains])
        results.english = english_comparisons(name, by_name, reference)
        if measured_pairs:
            paraphrase = lambda replica, lang: np.asarray(replica.pairs["para"][lang], dtype=float)
            if all(untrained.pairs["para"].values()):  # a small subsample may hold no pair scored >= 4
                results.crosslingual["xpara"] = compare(name, list(untrained.pairs["para"]), paraphrase)
            results.crosslingual["xsts"] = spearman_comparison(name, by_name, untrained)
        out[name] = results
    return out


def english_comparisons(name: str, by_name: dict[str, dict[int, Replica]], reference: dict) -> dict[str, Comparison]:
    """The English check's figures: one number per seed (no per-sentence hits), so t over seeds, paired by seed."""
    out = {}
    for key in ENGLISH_KEYS:
        values = {seed: r.metrics[key] for seed, r in by_name[name].items() if key in r.metrics}
        if not values:
            continue
        before = reference["metrics"].get(key)
        pairs = {b: sorted(set(values) & set(by_name[b])) for b in BASELINES if b in by_name}
        changes = {b: None if name in BASELINES or not seeds else stats.paired_difference(
            [values[s] for s in seeds], [by_name[b][s].metrics[key] for s in seeds]) for b, seeds in pairs.items()}
        out[key] = Comparison(
            seeds=stats.seed_interval(list(values.values())), vs_baseline=changes.get("baseline"),
            vs_study_baseline=changes.get("study_baseline"),
            vs_untrained=None if before is None else stats.seed_interval([v - before for v in values.values()]))
    return out


def spearman_comparison(name: str, by_name: dict[str, dict[int, Replica]], untrained: Replica) -> Comparison:
    """The cross-lingual STS Spearman (mean over the languages) of a configuration: t over seeds, and its changes
    against each baseline (paired by seed) and the untrained encoder, with `stats.seed_bootstrap_interval`: the
    seed part from the spread over seeds, the pair part from one set of pair resamples shared by every replica
    and the untrained encoder."""
    resamples = crosslingual.pair_resamples(len(untrained.pairs["score"]))

    def measured(replica: Replica) -> tuple[float, np.ndarray]:
        return (crosslingual.mean_spearman(replica.pairs),
                crosslingual.mean_spearman_resampled(replica.pairs, resamples))

    levels = {config: {seed: measured(r) for seed, r in reps.items()} for config, reps in by_name.items()
              if config == name or config in BASELINES}
    before = measured(untrained)

    def change(seeds: list[int], minus) -> Interval:
        return stats.seed_bootstrap_interval(
            np.array([levels[name][s][0] - minus(s)[0] for s in seeds]),
            np.array([levels[name][s][1] - minus(s)[1] for s in seeds]), items=resamples.shape[1])

    def against(baseline: str) -> Interval | None:
        if name in BASELINES or baseline not in levels:
            return None
        seeds = sorted(set(levels[name]) & set(levels[baseline]))
        return change(seeds, lambda s: levels[baseline][s]) if seeds else None

    seeds = sorted(levels[name])
    return Comparison(seeds=stats.seed_interval([levels[name][s][0] for s in seeds]),
                      vs_baseline=against("baseline"), vs_study_baseline=against("study_baseline"),
                      vs_untrained=change(seeds, lambda s: before))


# ----------------------------------------------------------------------------- the report
def _cell(iv: Interval | None, star: bool | None = None) -> str:
    """An interval in points, starred when significant: by `star` (Holm, for a language row) if given, else by
    the interval itself (a group's or English row, each its own single test)."""
    if iv is None:
        return ""
    return f"{format_interval(iv)}{'*' if (iv.excludes_zero if star is None else star) else ''}"


def _pts(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def holm_stars(intervals: dict[str, Interval | None]) -> dict[str, bool]:
    """Holm's procedure across the rows of one table column (languages): which changes are significant with
    the family-wise error held at 5%. Rows without an interval are never significant but count in m."""
    keys = list(intervals)
    flags = stats.holm_significant([iv.p if iv is not None else float("nan") for iv in intervals.values()])
    return dict(zip(keys, flags))


MDE_TARGET = 0.02  # the change of the low-resource group's robust accuracy the report asks to resolve


def _replicated(top: int) -> str:
    """What the set-up says was replicated: one best configuration, or `top` of them, with baselines."""
    if top == 1:
        return "the best configuration and its baseline"
    return f"the {top} best configurations and their baselines"


def _seeds_used(f: Findings) -> str:
    """The seeds each configuration actually has (failed replicas dropped), in words: "5 seeds" or, where they
    differ, "baseline 5, best1 4 seeds"."""
    used = f.seeds_used or {name: f.seeds for name, _ in f.chosen}
    counts = set(used.values())
    if len(counts) == 1:
        n = counts.pop()
        return f"{n} seed{'s' if n != 1 else ''}"
    return ", ".join(f"{name} {n}" for name, n in used.items()) + " seeds"


def _crosslingual_text(results: ConfigResults) -> str:
    """The answer's sentence on cross-lingual similarity, where the replicas measured it."""
    xsts, xpara = results.crosslingual.get("xsts"), results.crosslingual.get("xpara")
    if xsts is None:
        return ""
    return (f"What users load the encoder for, cross-lingual similarity (English against six machine translations "
            f"of the report half's STS-B pairs), changes by {format_interval(xsts.vs_baseline)} points of Spearman "
            f"against r = 0 and by {format_interval(xsts.vs_untrained)} against the untrained encoder; en->X "
            f"paraphrase retrieval by {format_interval(xpara.vs_untrained) if xpara else 'n/a'} against the "
            "untrained encoder. ")


def _crosslingual_section(f: Findings) -> list[str]:
    """Cross-lingual similarity of every replicated configuration against the baseline and the untrained
    encoder."""
    if "xsts" not in f.analysis[f.best].crosslingual:
        return ["", "## Cross-lingual similarity", "", "Not measured by this replication's evaluation."]
    first = f.analysis[f.best].crosslingual["xsts"]
    untrained = first.seeds.mean - first.vs_untrained.mean
    lines = ["", "## Cross-lingual similarity (what users load the encoder for)", "",
             "English sentence 1 against sentence 2 machine-translated into de, es, fr, it, nl and pt, on the report "
             "half of the STS-B dev pairs (disjoint from the selection half the study's constraint saw). xsts: "
             "Spearman x 100 of the cosine against the gold score, mean over the languages; xpara: en->X paraphrase "
             "retrieval accuracy among the pairs scored >= 4. Intervals: xsts, Student-t with a seed part (the "
             "spread over seeds) and a pair part (1,000 bootstrap resamples of the pairs shared by every replica "
             "and the untrained encoder, corrected for the interaction counted in both; Satterthwaite df: "
             "`study.evaluation.stats.seed_bootstrap_interval`, coverage checked in tests/test_stats.py); "
             "xpara, as the "
             f"accuracy tables. The untrained encoder: xsts {100 * untrained:.1f}.", "",
             "| configuration | xsts | xsts - baseline | xsts - untrained | xpara - baseline | xpara - untrained |",
             "|---|---|---|---|---|---|"]
    for name, _ in f.chosen:
        xsts, xpara = f.analysis[name].crosslingual["xsts"], f.analysis[name].crosslingual.get("xpara")
        lines.append(f"| {name} | {100 * xsts.seeds.mean:.1f} | {_cell(xsts.vs_baseline)} | "
                     f"{_cell(xsts.vs_untrained)} | {_cell(xpara and xpara.vs_baseline)} | "
                     f"{_cell(xpara and xpara.vs_untrained)} |")
    return lines


def _configurations_section(f: Findings) -> list[str]:
    """Every replicated configuration (with --top K, all K), each against its baseline and the untrained encoder,
    on the low-resource group."""
    lines = ["", "## Every replicated configuration", "",
             "Low-resource group, change in points (95% intervals over seeds and sentences); xsts as above.", "",
             "| configuration | r | epsilon | method | seeds | robust - baseline | robust - untrained | "
             "clean - baseline | xsts - untrained |", "|---|---|---|---|---|---|---|---|---|"]
    for name, config in f.chosen:
        results = f.analysis[name]
        low = results.groups["low"]
        xsts = results.crosslingual.get("xsts")
        lines.append(f"| {name} | {config.ratio:.2f} | {config.epsilon:.3g} | {config.method} | "
                     f"{(f.seeds_used or {}).get(name, f.seeds)} | {_cell(low['robust'].vs_baseline)} | "
                     f"{_cell(low['robust'].vs_untrained)} | {_cell(low['clean'].vs_baseline)} | "
                     f"{_cell(xsts.vs_untrained) if xsts else ''} |")
    return lines


def findings(f: Findings) -> str:
    """The Markdown report, written from the numbers."""
    params = f.chosen_config(f.best)
    results, baseline = f.analysis[f.best], f.analysis["baseline"]
    has_study_baseline = "study_baseline" in f.analysis
    low = in_group(f.langs, "low")
    low_robust, low_clean = results.groups["low"]["robust"], results.groups["low"]["clean"]
    robust_stars = holm_stars({lang: results.languages[lang]["robust"].vs_baseline for lang in f.langs})
    significant = [lang for lang in low if robust_stars[lang]]
    helped = [lang for lang in significant if results.languages[lang]["robust"].vs_baseline.mean > 0]
    mde = stats.minimum_detectable_effect(low_robust.vs_baseline)
    en = results.english.get("en.paraphrase_acc")
    study_baseline_text = (f" (against the study's own r = 0 trial, trained at its own settings: "
                           f"{format_interval(low_robust.vs_study_baseline)})" if has_study_baseline else "")
    seeds_text = _seeds_used(f)
    if math.isnan(mde):
        power = ("The smallest change this replication could detect cannot be estimated "
                 f"({low_robust.vs_baseline.note}).")
    else:
        power = (f"At the measured variance ({seeds_text} and these sentences), the smallest change of the "
                 f"low-resource group's robust accuracy this replication detects with 80% power is "
                 f"{100 * mde:.1f} points")
        power += (f", above the {100 * MDE_TARGET:.0f} points the report should resolve." if mde > MDE_TARGET else
                  f", enough to resolve a {100 * MDE_TARGET:.0f}-point change.")
        power += (f" (That standard error rests on {low_robust.vs_baseline.df:.0f} degrees of freedom, so this "
                  "figure is itself uncertain.)" if low_robust.vs_baseline.df < 10 else "")
    general = results.low_languages.get("robust|vs_baseline")
    general_text = (f" Treating these {len(low)} languages as a sample of low-resource languages in general (t over "
                    f"the per-language gains, {len(low) - 1} degrees of freedom), the change is "
                    f"{format_interval(general)}." if general is not None else "")
    answer = (
        f"On the {len(low)} low-resource languages, the best hybrid configuration (r = {params.ratio:.2f}, "
        f"epsilon = {params.epsilon:.3g}, {params.method}) changes attacked (robust) accuracy by "
        f"{format_interval(low_robust.vs_baseline)} points against plain fine-tuning (r = 0 at the same "
        f"settings){study_baseline_text} and by {format_interval(low_robust.vs_untrained)} against the untrained "
        f"encoder; its clean accuracy changes by {format_interval(low_clean.vs_baseline)} against r = 0 "
        f"(95% intervals over seeds and sentences, {seeds_text}, on the {f.split} sentences; these group "
        f"intervals hold for these {len(low)} languages, taken as fixed).{general_text} "
        f"{_crosslingual_text(results)}The change in robust accuracy against "
        f"r = 0 is significant (Holm across the {len(f.langs)} languages) on {len(significant)} low-resource "
        f"languages ({len(helped)} of them gains). {power} In English, the training language, paraphrase "
        f"retrieval changes by {(_cell(en.vs_baseline) if en else '') or 'n/a'} against r = 0. "
        f"{distance_sentence(f.distance)}")
    settings = f.settings
    lines = [f"# Findings: hybrid-batch robust fine-tuning, study {f.study_name}", "",
             "## Question", "",
             "How does hybrid-batch robust training (a share r of each batch perturbed adversarially within "
             "epsilon) change the robustness of zero-shot cross-lingual retrieval on low-resource languages?", "",
             "## Set-up", "",
             f"- encoder: {settings.model}; fine-tuned on English pairs only (STS-B >= 4, MSRP paraphrases)",
             f"- search: space `{settings.space}`, {settings.budget} budget, objective {settings.objective}",
             f"- the study's best (the best objective among the trials that meet the selection constraint: "
             f"cross-lingual similarity no worse than the untrained encoder's): {f.study_best or 'see the report'}",
             f"- replication: {_replicated(len([c for c in f.chosen if c[0] not in BASELINES]))} x {f.seeds} "
             f"seeds asked ({f.seeds_note}); used, after failed replicas were dropped: {seeds_text}; {f.budget}",
             "- baselines: `baseline` = r = 0 at the best configuration's other settings (the comparison every "
             "'best - baseline' column makes: an ablation of r at the settings the search tuned for the hybrid, "
             "not a separately tuned r = 0)" + (
                 "; `study_baseline` = the study's own r = 0 trial, which trains differently (the space tuned "
                 "other keys, for the hybrid; r = 0 got no search of its own): its column is 'best - study r=0'"
                 if has_study_baseline else
                 "; the study's own r = 0 trial trains identically, so it is not repeated"),
             f"- evaluation: Tatoeba, {len(f.langs)} languages (low and high groups), the {f.split} sentences; "
             f"L->English accuracy@1 clean and under PGD in the input-embedding space (radii {f.radii})",
             f"- hardware: {f.hardware}; replication wall time {f.minutes:.1f} min",
             "- intervals: 95%, over crossed seeds and sentences (two-way random effects; the quantile a mixture "
             "of Student-t over the seed variance's fiducial distribution, "
             "`study.evaluation.stats.seed_sentence_interval`), "
             "configurations paired by seed; English rows: t over seeds. Language rows: "
             "* = significant by Holm's procedure across the languages; group and English rows: * = the "
             "interval excludes zero. 'no interval' says why none could be estimated", "",
             "## Answer", "", answer, "",
             "## Per language: robust accuracy, change in points", "",
             "| language | group | script | untrained | baseline r=0 | best | best - baseline | best - untrained |"
             + (" best - study r=0 |" if has_study_baseline else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if has_study_baseline else "")]
    rows = [(lang, group_of(lang), LANGUAGES[lang].script, results.languages[lang], baseline.languages[lang])
            for lang in f.langs]
    rows += [(f"group:{g}", g, "", results.groups[g], baseline.groups[g]) for g in ("low", "high")]

    def star(label: str, column: dict[str, bool]) -> bool | None:
        return column.get(label) if not label.startswith("group:") else None

    measured = list(results.languages[f.langs[0]])
    columns = {figure: {name: holm_stars({lang: getattr(results.languages[lang][figure], name)
                                          for lang in f.langs})
                        for name in ("vs_baseline", "vs_study_baseline", "vs_untrained")}
               for figure in measured}
    base_untrained = holm_stars({lang: baseline.languages[lang]["clean"].vs_untrained for lang in f.langs})
    for label, group, script, t, b in rows:
        t, b, col = t["robust"], b["robust"], columns["robust"]
        untrained_mean = t.seeds.mean - t.vs_untrained.mean
        line = (f"| {label} | {group} | {script} | {100 * untrained_mean:.1f} | {100 * b.seeds.mean:.1f} | "
                f"{100 * t.seeds.mean:.1f} | {_cell(t.vs_baseline, star(label, col['vs_baseline']))} | "
                f"{_cell(t.vs_untrained, star(label, col['vs_untrained']))} |")
        if has_study_baseline:
            line += f" {_cell(t.vs_study_baseline, star(label, col['vs_study_baseline']))} |"
        lines.append(line)
    lines += ["", "## Clean accuracy (L->English), change in points", "",
              "| language | best - baseline | best - untrained | baseline - untrained |", "|---|---|---|---|"]
    for label, _, _, t, b in rows:
        t, b, col = t["clean"], b["clean"], columns["clean"]
        lines.append(f"| {label} | {_cell(t.vs_baseline, star(label, col['vs_baseline']))} | "
                     f"{_cell(t.vs_untrained, star(label, col['vs_untrained']))} | "
                     f"{_cell(b.vs_untrained, star(label, base_untrained))} |")
    cheap = (f"PGD-{f.attack_steps[0]}, the study's trials' own attack" if f.attack_steps[0] == f.attack_steps[1]
             else f"PGD-{f.attack_steps[0]} (the study's trials attacked with PGD-{f.attack_steps[1]})")
    if "robust_strong" in measured:
        lines += ["", "## Under the strong attack: robust accuracy, change in points", "",
                  f"PGD-{f.strong_attack[0]} with {f.strong_attack[1]} random restarts and a margin loss against the "
                  f"nearest wrong candidate, at the same radii. The cheap attack of the tables above is {cheap}, "
                  "kept for speed. The two start apart, so a sentence counts as surviving the strong attack only if "
                  "it survives both (the per-sentence minimum): the strong figure bounds the cheap one.", "",
                  "| language | baseline r=0 | best | best - baseline | best - untrained |", "|---|---|---|---|---|"]
        for label, _, _, t, b in rows:
            t, b, col = t["robust_strong"], b["robust_strong"], columns["robust_strong"]
            lines.append(f"| {label} | {100 * b.seeds.mean:.1f} | {100 * t.seeds.mean:.1f} | "
                         f"{_cell(t.vs_baseline, star(label, col['vs_baseline']))} | "
                         f"{_cell(t.vs_untrained, star(label, col['vs_untrained']))} |")
    else:
        lines += ["", "The strong attack (PGD-20 with restarts and a margin loss) did not run at this budget, for its "
                  f"cost: the robust figures above are under {cheap} only, an upper bound on robustness. The gpu "
                  "budget's replication runs it; `python -m study.evaluate --strong-attack` "
                  "measures it for one model."]
    lines += ["", "## English (source language)", "",
              "| figure | best - baseline | best - untrained |", "|---|---|---|"]
    for key, entry in results.english.items():
        lines.append(f"| {key} | {_cell(entry.vs_baseline)} | {_cell(entry.vs_untrained)} |")
    lines += _crosslingual_section(f)
    lines += _configurations_section(f)
    not_significant = [lang for lang in f.langs if not robust_stars[lang]]
    lines += ["", "## Language distance", "", distance_sentence(f.distance), "", "![distance](distance.png)", "",
              "## Robustness curves", "", "![curves](robustness_curves.png)", "",
              "## Not significant", "",
              "The change in robust accuracy against r = 0 is not significant (Holm) for: "
              f"{', '.join(not_significant) or 'none'}.",
              ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.replicate", description=__doc__.split("\n")[0])
    parser.add_argument("study_dir")
    parser.add_argument("--top", type=int, help="best configurations to replicate (default: the study's budget's, "
                                                "1 on cpu and smoke, 3 on gpu)")
    parser.add_argument("--seeds", type=int, help="seeds per configuration (default: the study's budget's, 5; 2 on "
                                                  "smoke)")
    parser.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT); default: a local Ray")
    parser.add_argument("--tracking-uri", help="the MLflow store the study logged to (default: the embedded store "
                                               "in STUDY_DIR, else $MLFLOW_TRACKING_URI, else the URI it kept)")
    parser.add_argument("--export", action="store_true", help="export the best configuration (its first seed) as a "
                                                              "sentence-transformers model: replication/model")
    parser.add_argument("--register", metavar="NAME", help="--export, and register it in MLflow as a version of "
                                                           "NAME with the alias 'best' (tags link the findings)")
    args = parser.parse_args(argv)
    if (args.top is not None and args.top < 1) or (args.seeds is not None and args.seeds < 1):
        raise UsageError("--top and --seeds must be >= 1")
    saved = load_study(args.study_dir)
    study_dir = Path(args.study_dir)
    settings = StudySettings.from_json(saved["settings"])
    budget_of_study = BUDGETS[settings.budget]
    seeds_note = "set by --seeds" if args.seeds else f"the {settings.budget} budget's default"
    args.top = args.top or budget_of_study.replication_top
    args.seeds = args.seeds or budget_of_study.replication_seeds
    uri = tracking_uri(study_dir, saved, args.tracking_uri)
    tracking.check_reachable(uri)
    if args.register:
        exporting.check_registry(uri)
    client = tracking.client_for(uri)
    tracking.check_parent_run(client, saved["parent_run_id"], uri)
    trials = load_trials(client, saved["experiment_id"], saved["parent_run_id"])
    chosen = choose_configs(trials, settings.objective, args.top)
    study_best = best_trial(trials, settings.objective)
    langs = list(GROUPS["low"]) + list(GROUPS["high"])
    eval_config = {**settings.eval, **BUDGETS[settings.budget].replication_eval, "langs": langs,
                   "keep_hits": True, "typo_rates": (), "split": "report"}
    eval_config.setdefault("radii", (0.02, 0.05, 0.1, 0.2))
    strong = (f" and the strong attack (PGD-{eval_config.get('strong_steps', 20)}, "
              f"{eval_config.get('strong_restarts', 3)} restarts)" if eval_config.get("strong_attack") else "")
    budget = (f"evaluation on all {len(langs)} languages with "
              f"{eval_config.get('max_sentences') or 'all'} report sentences each, "
              f"PGD-{eval_config['attack_steps']}{strong}, "
              f"training as in the study ({settings.epochs} epochs, "
              f"{settings.max_train_pairs or 'all'} pairs)")
    if settings.budget != "gpu":
        budget += f" (reduced {settings.budget} budget)"
    out = study_dir / "replication"
    out.mkdir(exist_ok=True)
    replication = tracking.start_parent_run(
        client, saved["experiment_id"], name=f"replication of {study_dir.name}",
        params={"top": args.top, "seeds": args.seeds, "budget": budget,
                "configs": json.dumps([(name, {k: getattr(c, k) for k in ("ratio", "epsilon", "method")})
                                       for name, c in chosen])},
        tags={"study_parent_run": saved["parent_run_id"], "kind": "replication"})
    client.set_tag(saved["parent_run_id"], "replication_run", replication)
    print(f"replicating {len(chosen)} configurations x {args.seeds} seeds = {len(chosen) * args.seeds} trials",
          file=sys.stderr)

    # as study.run: SIGTERM (`ray job stop`) stops cleanly, calling the SIGINT handler (Tune's stop flag, else
    # KeyboardInterrupt), and SIGINT is unblocked (Ray starts a job's driver with it blocked)
    stop_gracefully_on_sigterm()
    try:
        start = time.time()
        start_ray(args.address)
        require_shared_storage(settings.storage_path, joined=bool(args.address))
        reference = evaluate_on_cluster(settings, eval_config, out / "reference_hits.json",
                                        "with the replicas' evaluation")
        # the language-distance analysis takes each language's distance from the untrained encoder's clean accuracy
        # on the selection sentences, disjoint from the report sentences its gains are measured on
        selection = evaluate_on_cluster(settings, {**eval_config, "split": "selection", "radii": (), "xsts_langs": (),
                                                   "english_check": False, "keep_hits": False},
                                        out / "reference_selection.json", "its clean accuracy on the selection half")
        reference["metrics"].update({k: v for k, v in selection["metrics"].items() if k.startswith("selection.acc.")})
        configs = replica_configs(chosen, args.seeds, settings, eval_config)
        replicas = run_replicas(configs, settings, study_dir, uri, saved["experiment_id"], replication)
        minutes = (time.time() - start) / 60
        names = {r.name for r in replicas}
        if "baseline" not in names or not names - set(BASELINES):
            raise UsageError("too many replicas failed to compare anything (see the messages above)")
        radii = sorted(eval_config["radii"])
        analysis = analyse(replicas, reference, langs, radii)
        chosen = [c for c in chosen if c[0] in names]  # the baselines, then the best configuration with results
        best = best_configuration(chosen)
        distance = language_distance(analysis, reference, langs, best, eval_config.get("max_sentences"))
        plots.plot_distance(out / "distance.png", distance)
        plots.plot_robustness_curves(out / "robustness_curves.png", replicas, reference, langs, radii, best)
        import torch

        hardware = (f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                    else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
        seeds_used = {name: len({r.seed for r in replicas if r.name == name}) for name, _ in chosen}
        report = findings(Findings(study_dir.name, settings, chosen, analysis, distance, langs, radii, args.seeds,
                                   seeds_note, REPORT_SPLIT_TEXT, budget, hardware, minutes,
                                   (eval_config.get("strong_steps", 20), eval_config.get("strong_restarts", 3)),
                                   seeds_used, (eval_config["attack_steps"], settings.eval.get("attack_steps", 3)),
                                   describe_best(study_best, chosen)))
        if args.export or args.register:  # the best configuration's first seed, as a model; report and model link
            replica = min((r for r in replicas if r.name == best), key=lambda r: r.seed)
            config = next(c for c in configs if c.replica == best and c.seed == replica.seed)
            run_id = exporting.child_run_of(client, saved["experiment_id"], replication, replica.trial_id)
            exported = exporting.export_replica(replica.checkpoint, config, settings,
                                                exporting.replication_model_dir(out), study_dir.name, replication,
                                                run_id, replica.metrics, uri, register=args.register)
            report += exporting.model_section(exported)
            if exported.registered:
                client.set_tag(replication, "registered_model",
                               f"{exported.registered['name']}/{exported.registered['version']}")
        (out / "findings.md").write_text(report)
        write_json(out / "analysis.json", {name: results.as_dict() for name, results in analysis.items()})
        write_json(out / "distance.json", distance)
        for name in ("findings.md", "analysis.json", "distance.json", "distance.png", "robustness_curves.png"):
            client.log_artifact(replication, str(out / name), artifact_path="findings")
    except KeyboardInterrupt:  # Ctrl-C: Tune stopped the replicas (run_replicas), or it came before or after
        import ray

        ray.shutdown()
        tracking.end_running_children(client, saved["experiment_id"], replication, "KILLED")
        client.set_terminated(replication, status="KILLED")
        print(f"\ninterrupted: the replication run is marked KILLED; start it again with: python -m study.replicate "
              f"{study_dir}", file=sys.stderr)
        return 130
    except BaseException:  # a failure leaves no run RUNNING
        tracking.end_running_children(client, saved["experiment_id"], replication, "KILLED")
        client.set_terminated(replication, status="FAILED")
        raise
    client.set_terminated(replication, status="FINISHED")
    print(report)
    print(f"\n{len(replicas)} replicas in {minutes:.1f} min. Findings: {out / 'findings.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
