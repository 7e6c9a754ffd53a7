"""The report of a study, built from MLflow (the parent run named in study.json and its child runs) and the
reference row (the untrained encoder, reference.json). `build_report` writes into STUDY_DIR/report/ and logs
it to the parent run:
  summary.md, summary.csv   per language and group: reference, r = 0 baseline, best trial (and the change)
  heatmap.png               per-language change against the r = 0 baseline: best trials, untrained encoder
  radius_curves.png         accuracy against attack radius: reference, baseline, best trial
  pareto.png, pareto.json   clean against robust accuracy of every trial, the Pareto front marked
  importances.json          Optuna's parameter importances for the objective, over the searched keys
  best_config.json          the best trial's configuration
The best trial is the best by the objective, measured on the selection split; every figure the summary and the
heatmap and radius curves quote is from the report split (REPORTED_SPLIT), which the search never saw. One
trial chosen from many still carries the luck of its seed: `study.replicate` measures that.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from search_spaces import load_space
from study import plots
from study.errors import StudyError
from study.languages import LANGUAGES, group_of
from study.robustness import DEFAULT_RADII, group_key, lang_key, objective_metric
from study.studydir import REFERENCE_FILE, load_study, tracking_uri, write_json
from study.trials import finished_baseline, load_trials, pareto_front, rank_trials


def described_keys(settings: dict) -> list[str]:
    """The configuration keys that describe this study's trials: those its space searches, then those it fixes
    (`trainables.config.TrialConfig` says which keys a space may take)."""
    space = load_space(settings["space"], settings.get("ranges"))
    return [*space.space, *space.fixed]


REPORTED_SPLIT = "report"  # the Tatoeba sentences the summary quotes (study.data.SPLITS)


def summary_rows(langs: list[str], reference: dict, baseline: dict | None, best: dict | None) -> list[dict]:
    """One row per language, group and English figure, on the report split: reference, baseline, best and
    the change."""
    rows = []

    def row(label: str, group: str, key: str):
        ref = reference.get(key)
        base = baseline["metrics"].get(key) if baseline else None
        top = best["metrics"].get(key) if best else None
        rows.append(dict(row=label, group=group, figure=key.rsplit(".", 1)[-1], reference=ref, baseline=base,
                         best=top, best_minus_baseline=None if top is None or base is None else top - base,
                         baseline_minus_reference=None if base is None or ref is None else base - ref))

    for figure in ("clean", "robust"):
        for lang in langs:
            row(f"{lang} {LANGUAGES[lang].name}", group_of(lang), lang_key(REPORTED_SPLIT, lang, figure))
        for group in ("low", "high"):
            if group_key(REPORTED_SPLIT, group, figure) in reference:
                row(f"{group}-resource mean", group, group_key(REPORTED_SPLIT, group, figure))
    for key in ("en.paraphrase_acc", "en.stsb_spearman"):
        if key in reference:
            row("English (source)", "en", key)
    return rows


def markdown_table(rows: list[dict], best: dict | None, baseline: dict | None, keys: list[str]) -> str:
    """The summary table, headed by the best trial's and the baseline's values of `keys`."""
    def pct(v):
        return "" if v is None else f"{100 * v:.1f}"

    def delta(v):
        return "" if v is None else f"{100 * v:+.1f}"

    head = ["language", "group", "figure", "untrained", "r=0 baseline", "best", "best - baseline",
            "baseline - untrained"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['row']} | {r['group']} | {r['figure']} | {pct(r['reference'])} | {pct(r['baseline'])} | "
                     f"{pct(r['best'])} | {delta(r['best_minus_baseline'])} | "
                     f"{delta(r['baseline_minus_reference'])} |")
    describe = lambda t: ("none" if t is None else
                          ", ".join(f"{k}={t['params'][k]:.3g}" if isinstance(t["params"].get(k), float)
                                    else f"{k}={t['params'][k]}" for k in keys if k in t["params"]))
    return (f"Best trial: {describe(best)}\n\nBaseline (r = 0): {describe(baseline)}\n\n"
            "Accuracy@1 in %, on the report split (the half of each language's Tatoeba pairs the search never "
            "saw; the best trial was chosen on the other half): clean = mean of L->English and English->L; "
            "robust = L->English under the PGD attack, mean over the radii. English rows: paraphrase retrieval "
            "accuracy and STS-B Spearman.\n\n"
            + "\n".join(lines) + "\n")


def param_importances(trials: list[dict], key: str, searched: list[str]) -> dict[str, float]:
    """Optuna's mean-decrease-impurity importances of the `searched` keys for metric `key`, from `trials`."""
    import optuna

    usable = [t for t in trials if key in t["metrics"]]
    varying = [p for p in searched if len({t["params"].get(p) for t in usable}) > 1
               and all(isinstance(t["params"].get(p), (int, float)) for t in usable)]
    if len(usable) < 3 or not varying:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for t in usable:
        values = {p: float(t["params"][p]) for p in varying}
        distributions = {p: optuna.distributions.FloatDistribution(min(float(u["params"][p]) for u in usable),
                                                                  max(float(u["params"][p]) for u in usable))
                         for p in varying}
        study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions,
                                                  value=t["metrics"][key]))
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def build_report(study_dir: Path, client=None, print_table: bool = False, uri: str | None = None) -> Path:
    """Write the report into STUDY_DIR/report and log it to the parent run. Returns the report folder.
    The tracking store: `client`, else `uri`, else the study's own (`study.studydir.tracking_uri`)."""
    from study import tracking

    study_dir = Path(study_dir)
    saved = load_study(study_dir)
    settings, parent = saved["settings"], saved["parent_run_id"]
    if client is None:
        uri = tracking_uri(study_dir, saved, uri)
        tracking.check_reachable(uri)
        client = tracking.client_for(uri)
        tracking.check_parent_run(client, parent, uri)
    reference_path = study_dir / REFERENCE_FILE
    reference = json.loads(reference_path.read_text())["metrics"] if reference_path.is_file() else {}
    trials = load_trials(client, saved["experiment_id"], parent)
    if not trials:
        raise StudyError(f"no trials recorded for study {study_dir} yet")
    ranked = rank_trials(trials, settings["objective"])
    baseline = finished_baseline(trials)
    best = next((t for t in ranked if t is not baseline), ranked[0] if ranked else None)
    langs = settings["eval"]["langs"]
    keys = described_keys(settings)
    out = study_dir / "report"
    out.mkdir(exist_ok=True)

    rows = summary_rows(langs, reference, baseline, best)
    table = markdown_table(rows, best, baseline, keys)
    (out / "summary.md").write_text(f"# Study {study_dir.name}: {settings['space']}, {settings['budget']} budget\n\n"
                                    + table)
    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if best:
        write_json(out / "best_config.json", best["params"])
    if baseline and ranked:
        plots.plot_heatmap(out / "heatmap.png", langs, ranked, baseline, reference, REPORTED_SPLIT)
    radii = sorted(settings["eval"].get("radii") or DEFAULT_RADII)
    series = {"untrained": reference}
    if baseline:
        series["r = 0 baseline"] = baseline["metrics"]
    if best:
        label = f"best (r={best['params'].get('ratio', 0):.2f}, eps={best['params'].get('epsilon', 0):.2g})"
        series[label] = best["metrics"]
    plots.plot_radius_curves(out / "radius_curves.png", radii, series, REPORTED_SPLIT)
    scored = [t for t in trials if "objective.clean" in t["metrics"] and "objective.robust" in t["metrics"]]
    front = pareto_front([(t["metrics"]["objective.clean"], t["metrics"]["objective.robust"]) for t in scored])
    if scored:
        plots.plot_pareto(out / "pareto.png", scored, front, reference)
        write_json(out / "pareto.json", [dict(run=scored[i]["name"], params=scored[i]["params"],
                                              clean=scored[i]["metrics"]["objective.clean"],
                                              robust=scored[i]["metrics"]["objective.robust"]) for i in front])
    importances = param_importances(ranked, objective_metric(settings["objective"]), keys)
    write_json(out / "importances.json", importances)
    for path in sorted(out.iterdir()):
        client.log_artifact(parent, str(path), artifact_path="report")

    if print_table:
        failed = [t for t in trials if t["status"] == "FAILED"]
        print(f"\n{table}")
        if settings["objective"] == "pareto":
            print("Pareto-optimal trials (clean, robust):")
            for i in front:
                print(f"  {scored[i]['name']}: clean {100 * scored[i]['metrics']['objective.clean']:.1f}  "
                      f"robust {100 * scored[i]['metrics']['objective.robust']:.1f}")
        if importances:
            print("Parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
        for t in failed:
            print(f"failed: {t['name']}: {t['failure']}")
        print(f"Report: {out}")
    return out
