"""Every figure the project draws: a study's report (heatmap, radius curves, Pareto front) and its
replication's (language distance, robustness curves). File-only (Agg): cluster nodes and CI have no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.languages import group_of, in_group


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


def plot_heatmap(path: Path, langs: list[str], ranked: list[dict], baseline: dict, reference: dict, split: str,
                 top: int = 6) -> None:
    """Per language, each of the best trials minus the r = 0 baseline on `split`, in points; the first column
    is the untrained encoder minus the baseline (what plain fine-tuning changed, with the sign flipped)."""
    from study.robustness import lang_key

    plt = pyplot()

    columns = [("untrained", reference)] if reference else []
    columns += [(f"r={t['params'].get('ratio', 0):.2f}\neps={t['params'].get('epsilon', 0):.2g}", t["metrics"])
                for t in ranked if t is not baseline][:top]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(columns), 1.2 + 0.32 * len(langs)), squeeze=False)
    for ax, figure in zip(axes[0], ("clean", "robust")):
        keys = [lang_key(split, lang, figure) for lang in langs]
        data = np.array([[100 * (metrics.get(key, np.nan) - baseline["metrics"].get(key, np.nan))
                          for _, metrics in columns] for key in keys])
        limit = max(1.0, np.nanmax(np.abs(data))) if data.size else 1.0
        image = ax.imshow(data, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_yticks(range(len(langs)), [f"{lang} ({group_of(lang)})" for lang in langs])
        ax.set_xticks(range(len(columns)), [label for label, _ in columns], fontsize=7)
        for (i, j), value in np.ndenumerate(data):
            ax.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=6)
        ax.set_title(f"{figure} accuracy minus the r = 0 baseline (points, {split} split)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    save_figure(fig, path)


def plot_radius_curves(path: Path, radii: list[float], series: dict[str, dict], split: str) -> None:
    """Per group, L->English accuracy on `split` against attack radius, one line per {label: flat metrics}."""
    from study.robustness import group_key

    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, group in zip(axes[0], ("low", "high")):
        for label, metrics in series.items():
            ys = [metrics.get(group_key(split, group, "l2e"))] + [
                metrics.get(group_key(split, group, f"attacked_eps{r:g}")) for r in radii]
            if all(y is not None for y in ys):
                ax.plot([0, *radii], [100 * y for y in ys], marker="o", label=label)
        ax.set_xlabel("attack radius epsilon (L2 per token)")
        ax.set_ylabel("L->English accuracy@1 (%)")
        ax.set_title(f"{group}-resource group ({split} split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_pareto(path: Path, trials: list[dict], front: list[int], reference: dict) -> None:
    """Clean against robust accuracy of every trial, coloured by r, the Pareto front marked."""
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


def plot_distance(path: Path, distance: dict) -> None:
    """Each language's robust gain (best vs r = 0) against the untrained encoder's accuracy, by script."""
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


def plot_robustness_curves(path: Path, replicas: list, reference: dict, langs: list[str], radii, best: str) -> None:
    """Per group, L->English accuracy against attack radius: the baseline's and the best configuration's
    replicas (`study.replicate.Replica`: mean and 95% t-interval over seeds), and the untrained encoder."""
    from study import stats

    plt = pyplot()
    keys = ["l2e"] + [f"attacked_eps{r:g}" for r in radii]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, group in zip(axes[0], ("low", "high")):
        members = in_group(langs, group)
        if not members:
            continue
        for name in ("baseline", best):
            reps = [r for r in replicas if r.name == name]
            points = [stats.seed_interval([np.mean([np.mean(r.hits[lang][key]) for lang in members]) for r in reps])
                      for key in keys]
            ax.errorbar([0, *radii], [100 * p.mean for p in points],
                        yerr=[[100 * (p.mean - p.low) for p in points], [100 * (p.high - p.mean) for p in points]],
                        marker="o", capsize=3, label=f"{name} (95% over seeds)")
        untrained = [np.mean([np.mean(reference["hits"][lang][k]) for lang in members]) for k in keys]
        ax.plot([0, *radii], [100 * u for u in untrained], "k--", label="untrained")
        ax.set_title(f"{group}-resource group")
        ax.set_xlabel("attack radius (L2 per token)")
        ax.set_ylabel("L->English accuracy@1 (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    save_figure(fig, path)
