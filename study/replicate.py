"""Replicate a finished study and turn it into an answer: `python -m study.replicate STUDY_DIR`.

Re-runs the r = 0 baseline and the K best configurations of the study, each with N seeds, as Ray Tune trials
(grouped under a replication parent run in MLflow), evaluates them on the whole low- and high-resource
groups, and writes STUDY_DIR/replication/findings.md with its tables and plots:
  - per language and group: mean over seeds, spread, and the change against the baseline and against the
    untrained encoder with a 95% interval that resamples seeds and sentences together
    (`study.stats.combined_interval`); "*" marks an interval that excludes zero;
  - the English source-language check, the same way (interval over seeds);
  - language distance: each language's gain against its script (Latin like English or not), family and
    the untrained encoder's own accuracy, with a Spearman correlation and its bootstrap interval;
  - robustness curves: attacked accuracy against radius for baseline and best, with intervals over seeds.
The answer paragraph is written from the numbers by the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study import plots, stats, tracking
from study.budgets import BUDGETS
from study.errors import UsageError, cli_main
from study.languages import GROUPS, LANGUAGES, group_of, in_group
from study.raycluster import evaluate_on_cluster, require_shared_storage, start_ray
from study.stats import Interval, format_interval, mark
from study.studydir import load_study, tracking_uri, write_json
from study.trials import finished_baseline, load_trials, rank_trials
from study.tuning import replication_tuner
from trainables.config import TrialConfig
from trainables.trainable import read_hits

FIGURES = ("clean", "robust")  # per language: L->English clean, and mean attacked over the radii
ENGLISH_KEYS = ("en.paraphrase_acc", "en.stsb_spearman")


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Replica:
    """One trained (configuration, seed) of the replication, and what its evaluation measured."""

    name: str  # the configuration repeated: baseline, best1, best2 ...
    seed: int
    metrics: dict[str, float]  # the flat metrics of study.robustness
    hits: dict[str, dict[str, list[int]]]  # lang -> l2e | attacked_eps<r> -> per-sentence 0/1


@dataclass(frozen=True)
class Comparison:
    """One figure of one configuration: its mean over seeds, and its change against the r = 0 baseline
    (absent for the baseline itself) and against the untrained encoder."""

    seeds: Interval
    vs_baseline: Interval | None = None
    vs_untrained: Interval | None = None

    def as_dict(self) -> dict:
        return {name: iv.as_dict() for name, iv in (("seeds", self.seeds), ("vs_baseline", self.vs_baseline),
                                                    ("vs_untrained", self.vs_untrained)) if iv is not None}


@dataclass
class ConfigResults:
    """Every comparison of one configuration."""

    languages: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # lang -> clean | robust
    groups: dict[str, dict[str, Comparison]] = field(default_factory=dict)  # low | high -> clean | robust
    english: dict[str, Comparison] = field(default_factory=dict)  # en.paraphrase_acc | en.stsb_spearman

    def as_dict(self) -> dict:
        """analysis.json's layout: {"<lang>|<figure>", "group:<group>|<figure>", "english|<key>": comparison}."""
        out = {f"{lang}|{fig}": c.as_dict() for lang, figs in self.languages.items() for fig, c in figs.items()}
        out.update({f"group:{g}|{fig}": c.as_dict() for g, figs in self.groups.items() for fig, c in figs.items()})
        out.update({f"english|{key}": c.as_dict() for key, c in self.english.items()})
        return out


@dataclass(frozen=True)
class Findings:
    """Everything findings.md is written from."""

    study_name: str
    settings: dict  # the study's settings (study.json)
    chosen: list[tuple[str, TrialConfig]]  # the replicated configurations: baseline first, the best one next
    analysis: dict[str, ConfigResults]  # configuration name -> results
    distance: dict  # language_distance()
    langs: list[str]
    radii: list[float]
    seeds: int
    budget: str  # what the replication trained and evaluated, in words
    hardware: str
    minutes: float

    @property
    def best(self) -> str:
        return self.chosen[1][0]


# ----------------------------------------------------------------------------- configurations and replicas
def choose_configs(trials: list[dict], objective: str, top: int) -> list[tuple[str, TrialConfig]]:
    """[("baseline", config), ("best1", config), ...] from the study's finished trials."""
    baseline = finished_baseline(trials)
    if baseline is None:
        raise UsageError("the study has no finished r = 0 baseline trial to replicate")
    best = [t for t in rank_trials(trials, objective) if t["params"].get("ratio") != 0][:top]
    if not best:
        raise UsageError("the study has no finished trial with r > 0 to replicate")
    chosen = [("baseline", baseline)] + [(f"best{i + 1}", t) for i, t in enumerate(best)]
    return [(name, TrialConfig.from_params(t["raw_params"])) for name, t in chosen]


def replica_configs(chosen, seeds: int, settings: dict, eval_config: dict) -> list[TrialConfig]:
    """Each chosen configuration with seeds 1000, 1001, ... (new to the study), the replication's evaluation
    after the last epoch only, and this machine's model and data."""
    return [dataclasses.replace(config, seed=1000 + seed, eval={**eval_config, "seed": 0}, replica=name,
                                model=settings["model"], data_dir=settings["data_dir"], eval_every_epoch=False)
            for name, config in chosen for seed in range(seeds)]


def run_replicas(configs: list[TrialConfig], settings: dict, study_dir: Path, uri: str, experiment: str,
                 parent: str) -> list[Replica]:
    """Run every replica as a Ray Tune trial; return those that finished. Their per-sentence hits come back in
    their last checkpoint (Ray's storage: a bucket on a cluster), never through a node's own disk."""
    logger = tracking.ChildRunLogger(uri, experiment, parent)
    results = replication_tuner(configs, settings, study_dir, logger).fit()
    replicas = []
    for result in results:
        if result.error:
            print(f"replica failed: {str(result.error).splitlines()[-1][:200]}", file=sys.stderr)
            continue
        config = TrialConfig.from_dict(result.config)
        replicas.append(Replica(config.replica, config.seed, dict(result.metrics), read_hits(result.checkpoint)))
    return replicas


# ----------------------------------------------------------------------------- analysis
def sentence_scores(hits: dict, figure: str, radii) -> np.ndarray:
    """Per-sentence score of one language: clean = L->English hit; robust = mean attacked hit over radii."""
    if figure == "clean":
        return np.asarray(hits["l2e"], dtype=float)
    return np.mean([np.asarray(hits[f"attacked_eps{r:g}"], dtype=float) for r in radii], axis=0)


def analyse(replicas: list[Replica], reference: dict, langs: list[str], radii,
            n_boot: int = 2000) -> dict[str, ConfigResults]:
    """Per configuration, language and figure: seed interval, and differences to baseline and untrained."""
    by_name: dict[str, list[Replica]] = {}
    for replica in sorted(replicas, key=lambda r: r.seed):
        by_name.setdefault(replica.name, []).append(replica)
    untrained = {lang: {f: sentence_scores(reference["hits"][lang], f, radii) for f in FIGURES} for lang in langs}

    def group_mean(replica: Replica, members: list[str], figure: str) -> float:
        return float(np.mean([sentence_scores(replica.hits[lang], figure, radii).mean() for lang in members]))

    out = {}
    for name, reps in by_name.items():
        base_reps, is_baseline = by_name["baseline"], name == "baseline"
        results = ConfigResults()
        for lang in langs:
            results.languages[lang] = {}
            for figure in FIGURES:
                scores = [sentence_scores(r.hits[lang], figure, radii) for r in reps]
                base = [sentence_scores(r.hits[lang], figure, radii) for r in base_reps]
                results.languages[lang][figure] = Comparison(
                    seeds=stats.seed_interval([s.mean() for s in scores]),
                    vs_baseline=None if is_baseline else stats.combined_interval(scores, base, n_boot=n_boot),
                    vs_untrained=stats.combined_interval(scores, [untrained[lang][figure]] * len(scores),
                                                         n_boot=n_boot))
        for group in ("low", "high"):
            members = in_group(langs, group)
            results.groups[group] = {}
            for figure in FIGURES:
                per_seed = [group_mean(r, members, figure) for r in reps]
                base = [group_mean(r, members, figure) for r in base_reps]
                untrained_mean = np.mean([untrained[lang][figure].mean() for lang in members])
                results.groups[group][figure] = Comparison(
                    seeds=stats.seed_interval(per_seed),
                    vs_baseline=None if is_baseline else stats.paired_difference(per_seed, base),
                    vs_untrained=stats.seed_interval([v - untrained_mean for v in per_seed]))
        for key in ENGLISH_KEYS:
            values = [r.metrics[key] for r in reps if key in r.metrics]
            base = [r.metrics[key] for r in base_reps if key in r.metrics]
            if values:
                before = reference["metrics"].get(key)
                results.english[key] = Comparison(
                    seeds=stats.seed_interval(values),
                    vs_baseline=None if is_baseline else stats.paired_difference(values, base),
                    vs_untrained=None if before is None else stats.seed_interval([v - before for v in values]))
        out[name] = results
    return out


def language_distance(analysis: dict[str, ConfigResults], reference: dict, langs: list[str], best: str) -> dict:
    """Gain of the best configuration per language against what the metadata and the untrained encoder say."""
    rows = []
    for lang in langs:
        meta, robust = LANGUAGES[lang], analysis[best].languages[lang]["robust"]
        rows.append(dict(lang=lang, script=meta.script, family=meta.family, latin=meta.script == "Latin",
                         untrained=reference["metrics"][f"acc.{lang}.l2e"],
                         gain_vs_baseline=robust.vs_baseline.mean, gain_vs_untrained=robust.vs_untrained.mean))
    rho, interval = stats.spearman_with_interval([r["untrained"] for r in rows],
                                                 [r["gain_vs_baseline"] for r in rows])
    latin = [r["gain_vs_baseline"] for r in rows if r["latin"]]
    other = [r["gain_vs_baseline"] for r in rows if not r["latin"]]
    return dict(rows=rows, spearman=rho, spearman_interval=interval.as_dict(),
                latin_mean=float(np.mean(latin)) if latin else None,
                other_mean=float(np.mean(other)) if other else None)


# ----------------------------------------------------------------------------- the report
def _cell(iv: Interval | None) -> str:
    return "" if iv is None else f"{format_interval(iv)}{mark(iv)}"


def _pts(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} points"


def findings(f: Findings) -> str:
    """The Markdown report, written from the numbers."""
    params = f.chosen[1][1]
    results, baseline = f.analysis[f.best], f.analysis["baseline"]
    low = in_group(f.langs, "low")
    low_robust, low_clean = results.groups["low"]["robust"], results.groups["low"]["clean"]
    significant = [lang for lang in low if results.languages[lang]["robust"].vs_baseline.excludes_zero]
    helped = [lang for lang in significant if results.languages[lang]["robust"].vs_baseline.mean > 0]
    iv = f.distance["spearman_interval"]
    if iv["low"] > 0 or iv["high"] < 0:
        distance_verdict = ("holds: gains are larger for languages the untrained encoder handles worse"
                            if f.distance["spearman"] < 0 else
                            "is contradicted: gains are larger for languages the encoder already handles well")
    else:
        distance_verdict = "cannot be confirmed here: the rank correlation's interval includes zero"
    en = results.english.get("en.paraphrase_acc")
    answer = (
        f"On the {len(low)} low-resource languages, the best hybrid configuration (r = {params.ratio:.2f}, "
        f"epsilon = {params.epsilon:.3g}, {params.method}) changes attacked (robust) accuracy by "
        f"{format_interval(low_robust.vs_baseline)} points against plain fine-tuning (r = 0) and by "
        f"{format_interval(low_robust.vs_untrained)} against the untrained encoder; its clean accuracy "
        f"changes by {format_interval(low_clean.vs_baseline)} against r = 0 "
        f"(95% intervals, {f.seeds} seeds). The change in robust accuracy against r = 0 is significant on "
        f"{len(significant)} low-resource languages ({len(helped)} of them gains). In English, the training "
        f"language, paraphrase retrieval changes by {(_cell(en.vs_baseline) if en else '') or 'n/a'} against r = 0. "
        f"The seed paper's claim that robust training helps more the further a language is from the source "
        f"{distance_verdict} (Spearman rho between the untrained accuracy and the gain "
        f"{f.distance['spearman']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]).")
    settings = f.settings
    lines = [f"# Findings: hybrid-batch robust fine-tuning, study {f.study_name}", "",
             "## Question", "",
             "How does hybrid-batch robust training (a share r of each batch perturbed adversarially within "
             "epsilon) change the robustness of zero-shot cross-lingual retrieval on low-resource languages?", "",
             "## Set-up", "",
             f"- encoder: {settings['model']}; fine-tuned on English pairs only (STS-B >= 4, MSRP paraphrases)",
             f"- search: space `{settings['space']}`, {settings['budget']} budget, objective {settings['objective']}",
             f"- replication: baseline r = 0 and the {len(f.chosen) - 1} best configurations x {f.seeds} seeds; "
             f"{f.budget}",
             f"- evaluation: Tatoeba, {len(f.langs)} languages (low and high groups), L->English accuracy@1 clean "
             f"and under PGD in the input-embedding space (radii {f.radii})",
             f"- hardware: {f.hardware}; replication wall time {f.minutes:.1f} min",
             "- intervals: 95%, resampling seeds and sentences together (paired two-stage bootstrap); group and "
             "English rows: Student-t over seeds; * = the interval excludes zero", "",
             "## Answer", "", answer, "",
             "## Per language: robust accuracy, change in points", "",
             "| language | group | script | untrained | baseline r=0 | best | best - baseline | best - untrained |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(lang, group_of(lang), LANGUAGES[lang].script, results.languages[lang], baseline.languages[lang])
            for lang in f.langs]
    rows += [(f"group:{g}", g, "", results.groups[g], baseline.groups[g]) for g in ("low", "high")]
    for label, group, script, t, b in rows:
        t, b = t["robust"], b["robust"]
        untrained_mean = t.seeds.mean - t.vs_untrained.mean
        lines.append(f"| {label} | {group} | {script} | {100 * untrained_mean:.1f} | {100 * b.seeds.mean:.1f} | "
                     f"{100 * t.seeds.mean:.1f} | {_cell(t.vs_baseline)} | {_cell(t.vs_untrained)} |")
    lines += ["", "## Clean accuracy (L->English), change in points", "",
              "| language | best - baseline | best - untrained | baseline - untrained |", "|---|---|---|---|"]
    for label, _, _, t, b in rows:
        t, b = t["clean"], b["clean"]
        lines.append(f"| {label} | {_cell(t.vs_baseline)} | {_cell(t.vs_untrained)} | {_cell(b.vs_untrained)} |")
    lines += ["", "## English (source language)", "",
              "| figure | best - baseline | best - untrained |", "|---|---|---|"]
    for key, entry in results.english.items():
        lines.append(f"| {key} | {_cell(entry.vs_baseline)} | {_cell(entry.vs_untrained)} |")
    not_significant = [lang for lang in f.langs if not results.languages[lang]["robust"].vs_baseline.excludes_zero]
    lines += ["", "## Language distance", "",
              f"Mean robust gain against r = 0: Latin-script languages {_pts(f.distance['latin_mean'])}, "
              f"other scripts {_pts(f.distance['other_mean'])}.", "", "![distance](distance.png)", "",
              "## Robustness curves", "", "![curves](robustness_curves.png)", "",
              "## Not significant", "",
              "The change in robust accuracy against r = 0 is not significant for: "
              f"{', '.join(not_significant) or 'none'}.",
              ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.replicate", description=__doc__.split("\n")[0])
    parser.add_argument("study_dir")
    parser.add_argument("--top", type=int, default=3, help="best configurations to replicate (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    parser.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT); default: a local Ray")
    parser.add_argument("--tracking-uri", help="the MLflow store the study logged to (default: the embedded store "
                                               "in STUDY_DIR, else $MLFLOW_TRACKING_URI, else the URI it kept)")
    args = parser.parse_args(argv)
    if args.top < 1 or args.seeds < 1:
        raise UsageError("--top and --seeds must be >= 1")
    saved = load_study(args.study_dir)
    study_dir = Path(args.study_dir)
    settings = saved["settings"]
    uri = tracking_uri(study_dir, saved, args.tracking_uri)
    tracking.check_reachable(uri)
    client = tracking.client_for(uri)
    tracking.check_parent_run(client, saved["parent_run_id"], uri)
    chosen = choose_configs(load_trials(client, saved["experiment_id"], saved["parent_run_id"]),
                            settings["objective"], args.top)
    langs = list(GROUPS["low"]) + list(GROUPS["high"])
    eval_config = {**settings["eval"], **BUDGETS[settings["budget"]].replication_eval, "langs": langs,
                   "keep_hits": True, "typo_rates": ()}
    eval_config.setdefault("radii", (0.02, 0.05, 0.1, 0.2))
    budget = (f"evaluation on all {len(langs)} languages with "
              f"{eval_config.get('max_sentences') or 'all'} sentences each, PGD-{eval_config['attack_steps']}, "
              f"training as in the study ({settings['epochs']} epochs, "
              f"{settings['max_train_pairs'] or 'all'} pairs)")
    if settings["budget"] != "gpu":
        budget += f" (reduced {settings['budget']} budget)"
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

    start = time.time()
    start_ray(args.address)
    require_shared_storage(settings.get("storage_path"), joined=bool(args.address))
    reference = evaluate_on_cluster(settings, eval_config, out / "reference_hits.json", "with the replicas' evaluation")
    configs = replica_configs(chosen, args.seeds, settings, eval_config)
    replicas = run_replicas(configs, settings, study_dir, uri, saved["experiment_id"], replication)
    minutes = (time.time() - start) / 60
    names = {r.name for r in replicas}
    if "baseline" not in names or len(names) < 2:
        raise UsageError("too many replicas failed to compare anything (see the messages above)")
    radii = sorted(eval_config["radii"])
    analysis = analyse(replicas, reference, langs, radii)
    # the best configuration with results comes first after the baseline
    ranked = [c for c in chosen[1:] if c[0] in names]
    chosen = [chosen[0]] + ranked
    best = ranked[0][0]
    distance = language_distance(analysis, reference, langs, best)
    plots.plot_distance(out / "distance.png", distance)
    plots.plot_robustness_curves(out / "robustness_curves.png", replicas, reference, langs, radii, best)
    import torch

    hardware = (f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    report = findings(Findings(study_dir.name, settings, chosen, analysis, distance, langs, radii, args.seeds,
                               budget, hardware, minutes))
    (out / "findings.md").write_text(report)
    write_json(out / "analysis.json", {name: results.as_dict() for name, results in analysis.items()})
    write_json(out / "distance.json", distance)
    for name in ("findings.md", "analysis.json", "distance.json", "distance.png", "robustness_curves.png"):
        client.log_artifact(replication, str(out / name), artifact_path="findings")
    client.set_terminated(replication, status="FINISHED")
    print(report)
    print(f"\n{len(replicas)} replicas in {minutes:.1f} min. Findings: {out / 'findings.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
