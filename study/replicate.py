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
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from study.errors import UsageError, cli_main
from study.languages import GROUPS, LANGUAGES, group_of
from study.report import pyplot, save_figure

# What a replication evaluates and how long it trains, per budget: the CPU budget is reduced (the report says so).
REPLICATION_EVAL = {
    "smoke": dict(max_sentences=16, radii=(0.05, 0.2), attack_steps=1, max_english_pairs=32),
    "cpu": dict(max_sentences=32, radii=(0.05, 0.2), attack_steps=1, max_english_pairs=128),
    "gpu": dict(max_sentences=None, attack_steps=3, max_english_pairs=None),
}


def choose_configs(trials: list[dict], objective: str, top: int) -> list[tuple[str, dict]]:
    """[("baseline", params), ("best1", params), ...] from the study's finished trials."""
    from study.report import rank_trials

    ranked = rank_trials(trials, objective)
    baseline = next((t for t in trials if t["params"].get("ratio") == 0 and t["status"] == "FINISHED"), None)
    if baseline is None:
        raise UsageError("the study has no finished r = 0 baseline trial to replicate")
    best = [t for t in ranked if t["params"].get("ratio") != 0][:top]
    if not best:
        raise UsageError("the study has no finished trial with r > 0 to replicate")
    return [("baseline", baseline["params"])] + [(f"best{i + 1}", t["params"]) for i, t in enumerate(best)]


def replica_configs(chosen, seeds: int, settings: dict, eval_config: dict) -> list[dict]:
    from trainables.trainable import DEFAULT_CONFIG

    configs = []
    for name, params in chosen:
        base = {k: v for k, v in params.items() if k in DEFAULT_CONFIG and k not in ("eval", "seed")}
        for seed in range(seeds):
            configs.append({**base, "seed": 1000 + seed, "eval": {**eval_config, "seed": 0}, "replica": name,
                            "model": settings["model"], "data_dir": settings["data_dir"],
                            "eval_every_epoch": False})
    return configs


def train_replica(config: dict) -> None:
    """Ray Tune trainable: one (configuration, seed) of the replication."""
    from trainables.trainable import train_hybrid

    train_hybrid({k: v for k, v in config["replica_config"].items() if k != "replica"})


def run_replicas(configs: list[dict], settings: dict, out: Path, uri: str, experiment: str, parent: str,
                 address: str | None) -> list[dict]:
    """Run every replica as a Ray Tune trial; return [{replica, seed, metrics, hits}]."""
    from ray import tune

    from study import tracking
    from study.run import start_ray

    start_ray(address, "127.0.0.1")
    trainable = tune.with_resources(train_replica, {"cpu": settings["cpus_per_trial"],
                                                    "gpu": settings["gpus_per_trial"]})
    logger = tracking.ChildRunLogger(uri, experiment, parent,
                                     max_epochs_of=lambda c: c["replica_config"].get("epochs", 1))
    tuner = tune.Tuner(trainable, param_space={"replica_config": tune.grid_search(configs)},
                       tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: f"replica_{t.trial_id}"),
                       run_config=tune.RunConfig(name="replicate", storage_path=str((out / "ray").resolve()),
                                                 callbacks=[logger], verbose=1,
                                                 progress_reporter=tune.CLIReporter(
                                                     parameter_columns={"replica_config/replica": "replica",
                                                                        "replica_config/seed": "seed"},
                                                     metric_columns={"objective.robust": "robust",
                                                                     "objective.clean": "clean"},
                                                     max_report_frequency=30),
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    rows = []
    for result in results:
        if result.error:
            print(f"replica failed: {str(result.error).splitlines()[-1][:200]}", file=sys.stderr)
            continue
        config = result.config["replica_config"]
        hits = json.loads(Path(result.path, "hits.json").read_text())
        rows.append(dict(replica=config["replica"], seed=config["seed"], params=config,
                         metrics=hits["metrics"], hits=hits["languages"]))
    return rows


# ----------------------------------------------------------------------------- analysis
def sentence_scores(hits: dict, figure: str, radii) -> np.ndarray:
    """Per-sentence score of one language: clean = L->English hit; robust = mean attacked hit over radii."""
    if figure == "clean":
        return np.asarray(hits["l2e"], dtype=float)
    return np.mean([np.asarray(hits[f"attacked_eps{r:g}"], dtype=float) for r in radii], axis=0)


def analyse(rows: list[dict], reference: dict, langs: list[str], radii, n_boot: int = 2000) -> dict:
    """Per configuration, language and figure: seed interval, and differences to baseline and untrained."""
    from study import stats

    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["replica"], []).append(row)
    for group in by_name.values():
        group.sort(key=lambda r: r["seed"])
    untrained = {lang: {f: sentence_scores(reference["hits"][lang], f, radii) for f in ("clean", "robust")}
                 for lang in langs}
    out = {}
    for name, reps in by_name.items():
        table = {}
        for lang in langs:
            for figure in ("clean", "robust"):
                scores = [sentence_scores(r["hits"][lang], figure, radii) for r in reps]
                entry = {"seeds": stats.seed_interval([s.mean() for s in scores]).as_dict()}
                base = [sentence_scores(r["hits"][lang], figure, radii) for r in by_name["baseline"]]
                if name != "baseline":
                    entry["vs_baseline"] = stats.combined_interval(scores, base, n_boot=n_boot).as_dict()
                entry["vs_untrained"] = stats.combined_interval(
                    scores, [untrained[lang][figure]] * len(scores), n_boot=n_boot).as_dict()
                table[(lang, figure)] = entry
        for group in ("low", "high"):
            members = [lang for lang in langs if group_of(lang) == group]
            for figure in ("clean", "robust"):
                per_seed = [np.mean([sentence_scores(r["hits"][lang], figure, radii).mean() for lang in members])
                            for r in reps]
                base = [np.mean([sentence_scores(r["hits"][lang], figure, radii).mean() for lang in members])
                        for r in by_name["baseline"]]
                untrained_mean = np.mean([untrained[lang][figure].mean() for lang in members])
                entry = {"seeds": stats.seed_interval(per_seed).as_dict(),
                         "vs_untrained": stats.seed_interval([v - untrained_mean for v in per_seed]).as_dict()}
                if name != "baseline":
                    entry["vs_baseline"] = stats.paired_difference(per_seed, base).as_dict()
                table[(f"group:{group}", figure)] = entry
        for key in ("en.paraphrase_acc", "en.stsb_spearman"):
            values = [r["metrics"][key] for r in reps if key in r["metrics"]]
            base = [r["metrics"][key] for r in by_name["baseline"] if key in r["metrics"]]
            if values:
                entry = {"seeds": stats.seed_interval(values).as_dict()}
                if name != "baseline":
                    entry["vs_baseline"] = stats.paired_difference(values, base).as_dict()
                if key in reference["metrics"]:
                    before = reference["metrics"][key]
                    entry["vs_untrained"] = stats.seed_interval([v - before for v in values]).as_dict()
                table[("english", key)] = entry
        out[name] = table
    return out


def language_distance(analysis: dict, reference: dict, langs: list[str], best: str) -> dict:
    """Gain of the best configuration per language against what the metadata and the untrained encoder say."""
    from study import stats

    rows = []
    for lang in langs:
        meta = LANGUAGES[lang]
        rows.append(dict(lang=lang, script=meta.script, family=meta.family, latin=meta.script == "Latin",
                         untrained=reference["metrics"][f"acc.{lang}.l2e"],
                         gain_vs_baseline=analysis[best][(lang, "robust")]["vs_baseline"]["mean"],
                         gain_vs_untrained=analysis[best][(lang, "robust")]["vs_untrained"]["mean"]))
    rho, interval = stats.spearman_with_interval([r["untrained"] for r in rows],
                                                 [r["gain_vs_baseline"] for r in rows])
    latin = [r["gain_vs_baseline"] for r in rows if r["latin"]]
    other = [r["gain_vs_baseline"] for r in rows if not r["latin"]]
    return dict(rows=rows, spearman=rho, spearman_interval=interval.as_dict(),
                latin_mean=float(np.mean(latin)) if latin else None,
                other_mean=float(np.mean(other)) if other else None)


def plot_distance(path: Path, distance: dict) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 5))
    for latin, marker in ((True, "o"), (False, "s")):
        pts = [r for r in distance["rows"] if r["latin"] == latin]
        ax.scatter([100 * r["untrained"] for r in pts], [100 * r["gain_vs_baseline"] for r in pts], marker=marker,
                   label="Latin script" if latin else "other script")
        for r in pts:
            ax.annotate(r["lang"], (100 * r["untrained"], 100 * r["gain_vs_baseline"]), fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    iv = distance["spearman_interval"]
    ax.set_title(f"Spearman rho {distance['spearman']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]")
    ax.set_xlabel("untrained encoder: L->English accuracy (%)")
    ax.set_ylabel("robust accuracy gain, best vs r = 0 (points)")
    ax.legend()
    save_figure(fig, path)


def plot_curves(path: Path, rows: list[dict], reference: dict, langs: list[str], radii, best: str) -> None:
    plt = pyplot()

    from study import stats

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, group in zip(axes[0], ("low", "high")):
        members = [lang for lang in langs if group_of(lang) == group]
        if not members:
            continue
        for name in ("baseline", best):
            reps = [r for r in rows if r["replica"] == name]
            points = []
            for key in ["l2e"] + [f"attacked_eps{r:g}" for r in radii]:
                per_seed = [np.mean([np.mean(r["hits"][lang][key]) for lang in members]) for r in reps]
                points.append(stats.seed_interval(per_seed))
            xs = [0, *radii]
            ax.errorbar(xs, [100 * p.mean for p in points],
                        yerr=[[100 * (p.mean - p.low) for p in points], [100 * (p.high - p.mean) for p in points]],
                        marker="o", capsize=3, label=f"{name} (95% over seeds)")
        untrained = [np.mean([np.mean(reference["hits"][lang][k]) for lang in members])
                     for k in ["l2e"] + [f"attacked_eps{r:g}" for r in radii]]
        ax.plot([0, *radii], [100 * u for u in untrained], "k--", label="untrained")
        ax.set_title(f"{group}-resource group")
        ax.set_xlabel("attack radius (L2 per token)")
        ax.set_ylabel("L->English accuracy@1 (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def findings(settings, chosen, analysis, distance, langs, radii, seeds, budget, hardware, minutes) -> str:
    """The Markdown report, written from the numbers."""
    from study.stats import format_interval, mark

    best = chosen[1][0]
    params = dict(chosen[1][1])

    def cell(entry, key):
        iv = entry.get(key)
        return "" if iv is None else f"{format_interval(_iv(iv))}{mark(_iv(iv))}"

    low_robust = analysis[best][("group:low", "robust")]
    low_clean = analysis[best][("group:low", "clean")]
    significant = [lang for lang in langs if group_of(lang) == "low"
                   and _iv(analysis[best][(lang, "robust")]["vs_baseline"]).excludes_zero]
    helped = [lang for lang in significant if analysis[best][(lang, "robust")]["vs_baseline"]["mean"] > 0]
    iv = distance["spearman_interval"]
    if iv["low"] > 0 or iv["high"] < 0:
        distance_verdict = ("holds: gains are larger for languages the untrained encoder handles worse"
                            if distance["spearman"] < 0 else
                            "is contradicted: gains are larger for languages the encoder already handles well")
    else:
        distance_verdict = "cannot be confirmed here: the rank correlation's interval includes zero"
    en = analysis[best].get(("english", "en.paraphrase_acc"), {})
    answer = (
        f"On the {sum(group_of(lang) == 'low' for lang in langs)} low-resource languages, the best hybrid "
        f"configuration (r = {params.get('ratio', 0):.2f}, epsilon = {params.get('epsilon', 0):.3g}, "
        f"{params.get('method', 'pgd')}) changes attacked (robust) accuracy by "
        f"{format_interval(_iv(low_robust['vs_baseline']))} points against plain fine-tuning (r = 0) and by "
        f"{format_interval(_iv(low_robust['vs_untrained']))} against the untrained encoder; its clean accuracy "
        f"changes by {format_interval(_iv(low_clean['vs_baseline']))} against r = 0 "
        f"(95% intervals, {seeds} seeds). The change in robust accuracy against r = 0 is significant on "
        f"{len(significant)} low-resource languages ({len(helped)} of them gains). In English, the training "
        f"language, paraphrase retrieval changes by {cell(en, 'vs_baseline') or 'n/a'} against r = 0. "
        f"The seed paper's claim that robust training helps more the further a language is from the source "
        f"{distance_verdict} (Spearman rho between the untrained accuracy and the gain "
        f"{distance['spearman']:+.2f} [{iv['low']:+.2f}, {iv['high']:+.2f}]).")
    lines = [f"# Findings: hybrid-batch robust fine-tuning, study {Path(settings.get('study_dir', '.')).name}", "",
             "## Question", "",
             "How does hybrid-batch robust training (a share r of each batch perturbed adversarially within "
             "epsilon) change the robustness of zero-shot cross-lingual retrieval on low-resource languages?", "",
             "## Set-up", "",
             f"- encoder: {settings['model']}; fine-tuned on English pairs only (STS-B >= 4, MSRP paraphrases)",
             f"- search: space `{settings['space']}`, {settings['budget']} budget, objective {settings['objective']}",
             f"- replication: baseline r = 0 and the {len(chosen) - 1} best configurations x {seeds} seeds; "
             f"{budget}",
             f"- evaluation: Tatoeba, {len(langs)} languages (low and high groups), L->English accuracy@1 clean "
             f"and under PGD in the input-embedding space (radii {radii})",
             f"- hardware: {hardware}; replication wall time {minutes:.1f} min",
             "- intervals: 95%, resampling seeds and sentences together (paired two-stage bootstrap); group and "
             "English rows: Student-t over seeds; * = the interval excludes zero", "",
             "## Answer", "", answer, "",
             "## Per language: robust accuracy, change in points", "",
             "| language | group | script | untrained | baseline r=0 | best | best - baseline | best - untrained |",
             "|---|---|---|---|---|---|---|---|"]
    for lang in langs + ["group:low", "group:high"]:
        if (lang, "robust") not in analysis[best]:
            continue
        b, t = analysis["baseline"][(lang, "robust")], analysis[best][(lang, "robust")]
        untrained_mean = t["seeds"]["mean"] - t["vs_untrained"]["mean"]
        meta = LANGUAGES.get(lang)
        group, script = (group_of(lang), meta.script) if meta else (lang.split(":")[1], "")
        lines.append(f"| {lang} | {group} | {script} | {100 * untrained_mean:.1f} | {100 * b['seeds']['mean']:.1f} | "
                     f"{100 * t['seeds']['mean']:.1f} | {cell(t, 'vs_baseline')} | {cell(t, 'vs_untrained')} |")
    lines += ["", "## Clean accuracy (L->English), change in points", "",
              "| language | best - baseline | best - untrained | baseline - untrained |", "|---|---|---|---|"]
    for lang in langs + ["group:low", "group:high"]:
        if (lang, "clean") in analysis[best]:
            t, b = analysis[best][(lang, "clean")], analysis["baseline"][(lang, "clean")]
            lines.append(f"| {lang} | {cell(t, 'vs_baseline')} | {cell(t, 'vs_untrained')} | "
                         f"{cell(b, 'vs_untrained')} |")
    lines += ["", "## English (source language)", "",
              "| figure | best - baseline | best - untrained |", "|---|---|---|"]
    for key in ("en.paraphrase_acc", "en.stsb_spearman"):
        entry = analysis[best].get(("english", key))
        if entry:
            lines.append(f"| {key} | {cell(entry, 'vs_baseline')} | {cell(entry, 'vs_untrained')} |")
    not_significant = [lang for lang in langs
                       if not _iv(analysis[best][(lang, "robust")]["vs_baseline"]).excludes_zero]
    lines += ["", "## Language distance", "",
              f"Mean robust gain against r = 0: Latin-script languages {_pts(distance['latin_mean'])}, "
              f"other scripts {_pts(distance['other_mean'])}.", "", "![distance](distance.png)", "",
              "## Robustness curves", "", "![curves](robustness_curves.png)", "",
              "## Not significant", "",
              "The change in robust accuracy against r = 0 is not significant for: "
              f"{', '.join(not_significant) or 'none'}.",
              ""]
    return "\n".join(lines)


def _iv(d: dict):
    from study.stats import Interval

    return Interval(d["mean"], d["low"], d["high"], d["std"], d["n"])


def _pts(value) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f} points"


@cli_main
def main(argv=None) -> int:
    from study import tracking
    from study.run import load_study, write_json

    parser = argparse.ArgumentParser(prog="python -m study.replicate", description=__doc__.split("\n")[0])
    parser.add_argument("study_dir")
    parser.add_argument("--top", type=int, default=3, help="best configurations to replicate (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (default 3)")
    parser.add_argument("--address", help="Ray cluster address (default: local Ray)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the study's)")
    args = parser.parse_args(argv)
    if args.top < 1 or args.seeds < 1:
        raise UsageError("--top and --seeds must be >= 1")
    saved = load_study(args.study_dir)
    study_dir = Path(args.study_dir)
    settings = {**saved["settings"], "study_dir": str(study_dir)}
    uri = args.tracking_uri or saved.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UsageError("the study's tracking URI is not stored (it had credentials): pass --tracking-uri")
    tracking.check_reachable(uri)
    client = tracking.client_for(uri)
    from study.report import load_trials

    chosen = choose_configs(load_trials(client, saved["experiment_id"], saved["parent_run_id"]),
                            settings["objective"], args.top)
    langs = list(GROUPS["low"]) + list(GROUPS["high"])
    eval_config = {**settings["eval"], **REPLICATION_EVAL.get(settings["budget"], {}), "langs": langs,
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
                "configs": json.dumps([(n, {k: p.get(k) for k in ("ratio", "epsilon", "method")})
                                       for n, p in chosen])},
        tags={"study_parent_run": saved["parent_run_id"], "kind": "replication"})
    client.set_tag(saved["parent_run_id"], "replication_run", replication)
    print(f"replicating {len(chosen)} configurations x {args.seeds} seeds = {len(chosen) * args.seeds} trials",
          file=sys.stderr)

    start = time.time()
    from study.run import _reference_task

    reference_path = out / "reference_hits.json"
    if not reference_path.is_file():  # the untrained encoder, with the replicas' evaluation
        write_json(reference_path, _reference_task(settings["model"], settings["data_dir"], eval_config))
    reference = json.loads(reference_path.read_text())
    configs = replica_configs(chosen, args.seeds, settings, eval_config)
    rows = run_replicas(configs, settings, out, uri, saved["experiment_id"], replication, args.address)
    minutes = (time.time() - start) / 60
    names = {r["replica"] for r in rows}
    if "baseline" not in names or len(names) < 2:
        raise UsageError("too many replicas failed to compare anything (see the messages above)")
    radii = sorted(eval_config["radii"])
    analysis = analyse(rows, reference, langs, radii)
    best = next(name for name, _ in chosen[1:] if name in names)
    chosen = [c for c in chosen if c[0] in names]
    chosen = [chosen[0]] + [c for c in chosen[1:] if c[0] == best] + [c for c in chosen[1:] if c[0] != best]
    distance = language_distance(analysis, reference, langs, best)
    plot_distance(out / "distance.png", distance)
    plot_curves(out / "robustness_curves.png", rows, reference, langs, radii, best)
    import torch

    hardware = (f"{torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    report = findings(settings, chosen, analysis, distance, langs, radii, args.seeds, budget, hardware, minutes)
    (out / "findings.md").write_text(report)
    write_json(out / "analysis.json", {name: {f"{k[0]}|{k[1]}": v for k, v in table.items()}
                                       for name, table in analysis.items()})
    write_json(out / "distance.json", distance)
    for name in ("findings.md", "analysis.json", "distance.json", "distance.png", "robustness_curves.png"):
        client.log_artifact(replication, str(out / name), artifact_path="findings")
    client.set_terminated(replication, status="FINISHED")
    print(report)
    print(f"\n{len(rows)} replicas in {minutes:.1f} min. Findings: {out / 'findings.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
