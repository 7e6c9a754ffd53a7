"""The report of a study, built from MLflow (the parent run named in study.json and its child runs) and the
reference row (the untrained encoder, reference.json). `build_report` writes into STUDY_DIR/report/ and logs
it to the parent run:
  summary.md, summary.csv   per language, group and cross-lingual figure: reference, r = 0 baseline, best trial
                            (and the change); summary.md also lists every trial (trials.csv) with its constraint
  tradeoff.png              robust accuracy against cross-lingual similarity, one point per trial (selection half:
                            what the search saw, the constraint marked; report half: what the summary quotes)
  heatmap.png               per-language change against the r = 0 baseline: best trials, untrained encoder
  radius_curves.png         accuracy against attack radius: reference, baseline, best trial
  pareto.png, pareto.json   clean against robust accuracy of every trial; the Pareto front over clean, robust and
                            cross-lingual similarity
  importances.json          Optuna's parameter importances for the objective, from the study's Optuna storage
  best_config.json          the best trial's configuration
The best trial (`study.analysis.trials.best_trial`) is the best by the objective among the trials that meet the
selection constraint, both measured on the selection split; every figure the summary and the heatmap and radius curves
quote is from the report split (REPORTED_SPLIT), which the search never saw. One trial chosen from many still
carries the luck of its seed: `study.replicate` measures that.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from search_spaces import load_space
from study.analysis import plots
from study.analysis.trials import (
    best_trial,
    finished_baseline,
    load_trials,
    meets_constraint,
    pareto_front,
    rank_trials,
)
from study.errors import StudyError
from study.evaluation.crosslingual import CONSTRAINT, TOLERANCE_SE, XSTS_LANGS, xsts_key
from study.evaluation.languages import LANGUAGES, group_of
from study.evaluation.robustness import DEFAULT_RADII, PARETO_METRICS, group_key, lang_key, objective_metric
from study.orchestration.settings import StudySettings
from study.orchestration.studydir import REFERENCE_FILE, load_study, tracking_uri, write_json


def described_keys(settings: StudySettings) -> list[str]:
    """The configuration keys that describe this study's trials: those its space searches, then those it fixes
    (`trainables.config.TrialConfig` says which keys a space may take)."""
    space = load_space(settings.space, settings.ranges)
    return [*space.space, *space.fixed]


REPORTED_SPLIT = "report"  # the Tatoeba sentences the summary quotes (study.evaluation.data.SPLITS)


def summary_rows(langs: list[str], reference: dict, baseline: dict | None, best: dict | None,
                 xsts_langs: list[str] = ()) -> list[dict]:
    """One row per language, group, cross-lingual and English figure, on the report split: reference, baseline,
    best and the change."""
    rows = []

    def row(label: str, group: str, key: str, figure: str | None = None):
        ref = reference.get(key)
        base = baseline["metrics"].get(key) if baseline else None
        top = best["metrics"].get(key) if best else None
        rows.append(dict(row=label, group=group, figure=figure or key.rsplit(".", 1)[-1], reference=ref,
                         baseline=base, best=top,
                         best_minus_baseline=None if top is None or base is None else top - base,
                         baseline_minus_reference=None if base is None or ref is None else base - ref))

    for figure in ("clean", "robust"):
        for lang in langs:
            row(f"{lang} {LANGUAGES[lang].name}", group_of(lang), lang_key(REPORTED_SPLIT, lang, figure))
        for group in ("low", "high"):
            if group_key(REPORTED_SPLIT, group, figure) in reference:
                row(f"{group}-resource mean", group, group_key(REPORTED_SPLIT, group, figure))
    for figure, what in (("xsts", "STS Spearman"), ("xpara", "paraphrase acc@1")):
        for lang in xsts_langs:
            row(f"en-{lang}", "xling", xsts_key(REPORTED_SPLIT, figure, lang), what)
        if xsts_key(REPORTED_SPLIT, figure) in reference:
            row("cross-lingual mean", "xling", xsts_key(REPORTED_SPLIT, figure), what)
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
    best_text = (describe(best, keys) if best else
                 "none: no finished trial meets the selection constraint (cross-lingual similarity on the selection "
                 "half no worse than the untrained encoder's, within one standard error), so this study has no "
                 "answer to hand on; `study.export` refuses without `--trial`")
    return (f"Best trial: {best_text}\n\nBaseline (r = 0): {describe(baseline, keys)}\n\n"
            "Accuracy@1 in %, on the report split (the half of each language's Tatoeba pairs the search never "
            "saw; the best trial was chosen on the other half, among the trials that meet the selection "
            "constraint): clean = mean of L->English and English->L; robust = L->English under the PGD attack, "
            "mean over the radii. Cross-lingual rows (xling): English sentence 1 against sentence 2 translated into "
            "the language, on the report half of the translated STS-B dev pairs: Spearman x 100 of the cosine "
            "against the gold score, and en->X paraphrase retrieval accuracy among the pairs scored >= 4. English "
            "rows: paraphrase retrieval accuracy and STS-B Spearman.\n\n"
            + "\n".join(lines) + "\n")


def describe(trial: dict | None, keys: list[str]) -> str:
    """A trial's values of `keys`, e.g. "ratio=0.55, epsilon=0.73"."""
    if trial is None:
        return "none"
    return ", ".join(f"{k}={trial['params'][k]:.3g}" if isinstance(trial["params"].get(k), float)
                     else f"{k}={trial['params'][k]}" for k in keys if k in trial["params"])


def trials_table(trials: list[dict], reference: dict, best: dict | None, keys: list[str],
                 objective: str) -> tuple[str, list[dict]]:
    """Every trial: its settings, status, objective, the selection constraint (its cross-lingual similarity against
    the untrained encoder's on the selection half, the standard error, met or not) and its cross-lingual
    similarity on the report half. (Markdown, rows for trials.csv.)"""
    def pts(value, sign=""):
        return "" if value is None else f"{100 * value:{sign}.1f}"

    rows, key = [], objective_metric(objective)
    for t in sorted(trials, key=lambda t: -t["metrics"].get(key, float("-inf"))):
        m = t["metrics"]
        rows.append(dict(trial=t["name"], settings=describe(t, keys), status=t["status"], objective=m.get(key),
                         selection_xsts=m.get(xsts_key("selection", "xsts")),
                         vs_untrained=m.get("selection.xsts.vs_untrained"),
                         vs_untrained_se=m.get("selection.xsts.vs_untrained_se"), constraint=m.get(CONSTRAINT),
                         meets_constraint=meets_constraint(t) if CONSTRAINT in m else None,
                         report_xsts=m.get(xsts_key(REPORTED_SPLIT, "xsts")),
                         report_xpara=m.get(xsts_key(REPORTED_SPLIT, "xpara")), best=t is best))
    head = ["trial", "settings", "status", key, "selection xsts - untrained (se)", "constraint",
            "report xsts", "report xpara"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = {True: "met", False: "**not met**", None: ""}[r["meets_constraint"]]
        se = f" ({pts(r['vs_untrained_se'])})" if r["vs_untrained_se"] is not None else ""
        lines.append(f"| {r['trial']}{' (best)' if r['best'] else ''} | {r['settings']} | {r['status']} | "
                     f"{pts(r['objective'])} | {pts(r['vs_untrained'], '+')}{se} | {met} | "
                     f"{pts(r['report_xsts'])} | {pts(r['report_xpara'])} |")
    untrained = (f"untrained encoder: selection xsts {pts(reference.get(xsts_key('selection', 'xsts')))}, report xsts "
                 f"{pts(reference.get(xsts_key(REPORTED_SPLIT, 'xsts')))}, report xpara "
                 f"{pts(reference.get(xsts_key(REPORTED_SPLIT, 'xpara')))}")
    text = ("## Trials\n\nThe objective and the constraint are measured on the selection half, the last two columns "
            "on the report half (x 100). A trial meets the constraint when its cross-lingual STS Spearman on the "
            f"selection pairs is no worse than the untrained encoder's minus {TOLERANCE_SE:g} standard error of "
            "the paired difference (bootstrap over pairs); only those can be the best. Trials stopped early by ASHA "
            f"are not candidates. The {untrained}.\n\n" + "\n".join(lines) + "\n")
    return text, rows


def param_importances(study_dir: Path, settings: StudySettings) -> dict[str, float]:
    """Optuna's mean-decrease-impurity importances of the searched keys, from the study's own Optuna study (its
    storage: STUDY_DIR/optuna.db or --optuna-storage), over the trials Optuna was told COMPLETE (those ASHA
    stopped are PRUNED, failed ones FAIL: left out, as `study.analysis.trials.rank_trials` leaves them out) with their
    stored distributions (categorical `method`, log scales, conditional keys where every trial has them). The
    target is the study's objective: the value of a single-objective study; in a pareto study, the objective
    that ranks its trials (`objective_metric`). {} for a study without an Optuna storage or with too few
    finished trials."""
    import optuna

    from study.orchestration.tuning import open_optuna_storage, optuna_storage_url, optuna_study_name

    url = optuna_storage_url(settings, study_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return {}  # a study from before the Optuna storage (opening the URL would create an empty one)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=optuna_study_name(study_dir), storage=open_optuna_storage(url))
    except KeyError:
        return {}
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not optuna.search_space.intersection_search_space(complete):
        return {}
    target = None
    if settings.objective == "pareto":
        index = PARETO_METRICS.index(objective_metric(settings.objective))
        target = lambda trial: trial.values[index]  # noqa: E731
    evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=target))


def build_report(study_dir: Path, client=None, print_table: bool = False, uri: str | None = None) -> Path:
    """Write the report into STUDY_DIR/report and log it to the parent run. Returns the report folder.
    The tracking store: `client`, else `uri`, else the study's own (`study.orchestration.studydir.tracking_uri`)."""
    from study.orchestration import tracking

    study_dir = Path(study_dir)
    saved = load_study(study_dir)
    settings, parent = StudySettings.from_json(saved["settings"]), saved["parent_run_id"]
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
    ranked = rank_trials(trials, settings.objective)
    baseline = finished_baseline(trials)
    best = best_trial(trials, settings.objective)
    langs = settings.eval["langs"]
    xsts_langs = [lang for lang in settings.eval.get("xsts_langs", XSTS_LANGS)
                  if xsts_key(REPORTED_SPLIT, "xsts", lang) in reference]
    keys = described_keys(settings)
    out = study_dir / "report"
    out.mkdir(exist_ok=True)

    rows = summary_rows(langs, reference, baseline, best, xsts_langs)
    table = markdown_table(rows, best, baseline, keys)
    trials_text, trial_rows = trials_table(trials, reference, best, keys, settings.objective)
    (out / "summary.md").write_text(f"# Study {study_dir.name}: {settings.space}, {settings.budget} budget\n\n"
                                    + table + "\n" + trials_text + "\n![trade-off](tradeoff.png)\n")
    for name, content in (("summary.csv", rows), ("trials.csv", trial_rows)):
        with (out / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(content[0]))
            writer.writeheader()
            writer.writerows(content)
    if best:
        write_json(out / "best_config.json", best["params"])
    if baseline and ranked:
        plots.plot_heatmap(out / "heatmap.png", langs, ranked, baseline, reference, REPORTED_SPLIT)
    radii = sorted(settings.eval.get("radii") or DEFAULT_RADII)
    series = {"untrained": reference}
    if baseline:
        series["r = 0 baseline"] = baseline["metrics"]
    if best:
        label = f"best (r={best['params'].get('ratio', 0):.2f}, eps={best['params'].get('epsilon', 0):.2g})"
        series[label] = best["metrics"]
    plots.plot_radius_curves(out / "radius_curves.png", radii, series, REPORTED_SPLIT)
    plots.plot_tradeoff(out / "tradeoff.png", trials, reference, baseline, best)
    measured = [t for t in trials if "objective.robust" in t["metrics"]]
    objectives = [m for m in PARETO_METRICS if all(m in t["metrics"] for t in measured)]  # xsts: where measured
    scored = [t for t in trials if all(m in t["metrics"] for m in objectives)]
    front = pareto_front([tuple(t["metrics"][m] for m in objectives) for t in scored])
    if scored:
        plots.plot_pareto(out / "pareto.png", scored, front, reference)
        write_json(out / "pareto.json", [dict(run=scored[i]["name"], params=scored[i]["params"],
                                              **{m.split(".")[1]: scored[i]["metrics"][m] for m in objectives})
                                         for i in front])
    importances = param_importances(study_dir, settings)
    write_json(out / "importances.json", importances)
    for path in sorted(out.iterdir()):
        client.log_artifact(parent, str(path), artifact_path="report")

    if print_table:
        failed = [t for t in trials if t["status"] == "FAILED"]
        print(f"\n{table}\n{trials_text}")
        if settings.objective == "pareto":
            print(f"Pareto-optimal trials ({', '.join(m.split('.')[1] for m in objectives)}):")
            for i in front:
                print(f"  {scored[i]['name']}: " + "  ".join(f"{m.split('.')[1]} {100 * scored[i]['metrics'][m]:.1f}"
                                                          for m in objectives))
        if importances:
            print("Parameter importances: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))
        for t in failed:
            print(f"failed: {t['name']}: {t['failure']}")
        print(f"Report: {out}")
    return out
