"""The report of a study: `python -m study.report STUDY_DIR` (also run at the end of every study).

Reads the trials from MLflow (the parent run named in STUDY_DIR/study.json and its child runs) and the
reference row (the untrained encoder) from STUDY_DIR/reference.json, then writes into STUDY_DIR/report/
and logs to the parent run:
  summary.md, summary.csv   per language and group: reference, r = 0 baseline, best trial (and the change)
  heatmap.png               per-language change against the r = 0 baseline: best trials, untrained encoder
  radius_curves.png         accuracy against attack radius: reference, baseline, best trial
  pareto.png                clean against robust accuracy of every trial, the Pareto front marked
  importances.json/.png     Optuna's parameter importances for the objective
  best_config.json          the best trial's configuration
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from study.errors import UsageError, cli_main
from study.languages import LANGUAGES, group_of

SEARCHED_PARAMS = ("ratio", "epsilon", "method", "attack_steps", "step_ratio", "smoothing_samples", "lr",
                   "temperature", "epochs", "freeze_embeddings")


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display on cluster nodes and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def load_trials(client, experiment: str, parent: str) -> list[dict]:
    """Every child run: {run_id, status, params, metrics (latest values)}."""
    runs = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                              max_results=5000)
    return [dict(run_id=r.info.run_id, name=r.info.run_name, status=r.info.status,
                 params={k: _value(v) for k, v in r.data.params.items()}, metrics=dict(r.data.metrics),
                 failure=r.data.tags.get("failure_reason")) for r in runs]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates maximised)."""
    front = []
    for i, (a, b) in enumerate(points):
        dominated = any((c >= a and d >= b) and (c > a or d > b) for j, (c, d) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def rank_trials(trials: list[dict], objective: str) -> list[dict]:
    """Finished trials with the objective, best first (trials stopped early or failed are left out)."""
    key = "objective.robust" if objective in ("robust", "pareto") else "objective.clean"
    done = [t for t in trials if t["status"] == "FINISHED" and key in t["metrics"]]
    return sorted(done, key=lambda t: -t["metrics"][key])


def summary_rows(langs: list[str], reference: dict, baseline: dict | None, best: dict | None) -> list[dict]:
    """One row per language, group and English figure: reference, baseline, best and the change."""
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
            row(f"{lang} {LANGUAGES[lang].name}", group_of(lang), f"acc.{lang}.{figure}")
        for group in ("low", "high"):
            if f"group.{group}.{figure}" in reference:
                row(f"{group}-resource mean", group, f"group.{group}.{figure}")
    for key in ("en.paraphrase_acc", "en.stsb_spearman"):
        if key in reference:
            row("English (source)", "en", key)
    return rows


def markdown_table(rows: list[dict], best: dict | None, baseline: dict | None) -> str:
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
                                    else f"{k}={t['params'][k]}" for k in SEARCHED_PARAMS if k in t["params"]))
    return (f"Best trial: {describe(best)}\n\nBaseline (r = 0): {describe(baseline)}\n\n"
            "Accuracy@1 in %: clean = mean of L->English and English->L; robust = L->English under the PGD "
            "attack, mean over the radii. English rows: paraphrase retrieval accuracy and STS-B Spearman.\n\n"
            + "\n".join(lines) + "\n")


def plot_heatmap(path: Path, langs: list[str], ranked: list[dict], baseline: dict, reference: dict,
                 top: int = 6) -> None:
    """Per language, each of the best trials minus the r = 0 baseline, in points; the first column is the
    untrained encoder minus the baseline (what plain fine-tuning changed, with the sign flipped)."""
    plt = pyplot()

    columns = [("untrained", reference)] if reference else []
    columns += [(f"r={t['params'].get('ratio', 0):.2f}\neps={t['params'].get('epsilon', 0):.2g}", t["metrics"])
                for t in ranked if t is not baseline][:top]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(columns), 1.2 + 0.32 * len(langs)), squeeze=False)
    for ax, figure in zip(axes[0], ("clean", "robust")):
        data = np.array([[100 * (metrics.get(f"acc.{lang}.{figure}", np.nan)
                                 - baseline["metrics"].get(f"acc.{lang}.{figure}", np.nan)) for _, metrics in columns]
                         for lang in langs])
        limit = max(1.0, np.nanmax(np.abs(data))) if data.size else 1.0
        image = ax.imshow(data, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_yticks(range(len(langs)), [f"{lang} ({group_of(lang)})" for lang in langs])
        ax.set_xticks(range(len(columns)), [label for label, _ in columns], fontsize=7)
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{figure} accuracy minus the r = 0 baseline (points)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    save_figure(fig, path)


def plot_radius_curves(path: Path, radii: list[float], series: dict[str, dict]) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, group in zip(axes[0], ("low", "high")):
        for label, metrics in series.items():
            ys = [metrics.get(f"group.{group}.l2e")] + [metrics.get(f"group.{group}.attacked_eps{r:g}") for r in radii]
            if all(y is not None for y in ys):
                ax.plot([0, *radii], [100 * y for y in ys], marker="o", label=label)
        ax.set_xlabel("attack radius epsilon (L2 per token)")
        ax.set_ylabel("L->English accuracy@1 (%)")
        ax.set_title(f"{group}-resource group")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_pareto(path: Path, trials: list[dict], front: list[int], reference: dict) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 5))
    xs = [100 * t["metrics"]["objective.clean"] for t in trials]
    ys = [100 * t["metrics"]["objective.robust"] for t in trials]
    colours = [t["params"].get("ratio", 0) for t in trials]
    points = ax.scatter(xs, ys, c=colours, cmap="viridis", vmin=0, vmax=1, label="trials")
    fig.colorbar(points, ax=ax, label="mix ratio r")
    order = sorted(front, key=lambda i: xs[i])
    ax.plot([xs[i] for i in order], [ys[i] for i in order], "r-o", mfc="none", ms=12, label="Pareto front")
    if "objective.clean" in reference:
        ax.scatter([100 * reference["objective.clean"]], [100 * reference["objective.robust"]], marker="*", s=200,
                   c="black", label="untrained")
    ax.set_xlabel("clean accuracy, target group (%)")
    ax.set_ylabel("attacked accuracy, target group (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def param_importances(trials: list[dict], key: str) -> dict[str, float]:
    """Optuna's fANOVA-free default (mean decrease impurity) importances, from the finished trials."""
    import optuna

    usable = [t for t in trials if key in t["metrics"]]
    varying = [p for p in SEARCHED_PARAMS if len({t["params"].get(p) for t in usable}) > 1
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


def build_report(study_dir: Path, client=None, print_table: bool = False) -> Path:
    """Write the report into STUDY_DIR/report and log it to the parent run. Returns the report folder."""
    from study import tracking

    study_dir = Path(study_dir)
    saved = json.loads((study_dir / "study.json").read_text())
    settings, parent = saved["settings"], saved["parent_run_id"]
    uri = saved.get("tracking_uri") or tracking.default_tracking_uri(study_dir)
    client = client or tracking.client_for(uri)
    reference_path = study_dir / "reference.json"
    reference = json.loads(reference_path.read_text())["metrics"] if reference_path.is_file() else {}
    trials = load_trials(client, saved["experiment_id"], parent)
    if not trials:
        raise UsageError(f"no trials recorded for study {study_dir} yet")
    ranked = rank_trials(trials, settings["objective"])
    baselines = [t for t in trials if t["params"].get("ratio") == 0 and t["status"] == "FINISHED"]
    baseline = baselines[0] if baselines else None
    best = next((t for t in ranked if t is not baseline), ranked[0] if ranked else None)
    langs = settings["eval"]["langs"]
    out = study_dir / "report"
    out.mkdir(exist_ok=True)

    rows = summary_rows(langs, reference, baseline, best)
    table = markdown_table(rows, best, baseline)
    (out / "summary.md").write_text(f"# Study {study_dir.name}: {settings['space']}, {settings['budget']} budget\n\n"
                                    + table)
    import csv

    with (out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if best:
        (out / "best_config.json").write_text(json.dumps(
            {k: v for k, v in best["params"].items() if not k.startswith("eval.")}, indent=2))
    if baseline and ranked:
        plot_heatmap(out / "heatmap.png", langs, ranked, baseline, reference)
    radii = sorted(settings["eval"].get("radii") or [])
    if not radii:
        from study.evaluate import DEFAULT_RADII

        radii = list(DEFAULT_RADII)
    series = {"untrained": reference}
    if baseline:
        series["r = 0 baseline"] = baseline["metrics"]
    if best:
        label = f"best (r={best['params'].get('ratio', 0):.2f}, eps={best['params'].get('epsilon', 0):.2g})"
        series[label] = best["metrics"]
    plot_radius_curves(out / "radius_curves.png", radii, series)
    scored = [t for t in trials if "objective.clean" in t["metrics"] and "objective.robust" in t["metrics"]]
    front = pareto_front([(t["metrics"]["objective.clean"], t["metrics"]["objective.robust"]) for t in scored])
    if scored:
        plot_pareto(out / "pareto.png", scored, front, reference)
        (out / "pareto.json").write_text(json.dumps([dict(run=scored[i]["name"], params=scored[i]["params"],
                                                          clean=scored[i]["metrics"]["objective.clean"],
                                                          robust=scored[i]["metrics"]["objective.robust"])
                                                     for i in front], indent=2, default=str))
    objective_key = "objective.clean" if settings["objective"] == "clean" else "objective.robust"
    importances = param_importances(ranked, objective_key)
    (out / "importances.json").write_text(json.dumps(importances, indent=2))
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


@cli_main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.report", description="Tables and plots of a study.")
    parser.add_argument("study_dir")
    args = parser.parse_args(argv)
    if not (Path(args.study_dir) / "study.json").is_file():
        raise UsageError(f"{args.study_dir} is not a study directory (no study.json)")
    build_report(Path(args.study_dir), print_table=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
