"""Every figure the project draws: a study's report (heatmap, radius curves, Pareto front) and its
replication's (language distance, robustness curves). File-only: figures are matplotlib `Figure` objects saved
straight to disk, never through pyplot, so cluster nodes and CI need no display and a notebook user's backend is
left as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from study.evaluation.languages import group_of, in_group


def subplots(*args, figsize, layout=None, **kwargs):
    """(figure, axes) like pyplot.subplots, on a bare `Figure`: no global backend switch, no pyplot state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(*args, **kwargs)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def save_figure(fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_heatmap(path: Path, langs: list[str], ranked: list[dict], baseline: dict, reference: dict, split: str,
                 top: int = 6) -> None:
    """Per language, each of the best trials minus the r = 0 baseline on `split`, in points; the first column
    is the untrained encoder minus the baseline (what plain fine-tuning changed, with the sign flipped)."""
    from study.evaluation.robustness import lang_key

    columns = [("untrained", reference)] if reference else []
    columns += [(f"r={t['params'].get('ratio', 0):.2f}\neps={t['params'].get('epsilon', 0):.2g}", t["metrics"])
                for t in ranked if t is not baseline][:top]
    fig, axes = subplots(1, 2, figsize=(4 + 1.6 * len(columns), 1.2 + 0.32 * len(langs)), squeeze=False)
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
    from study.evaluation.robustness import group_key

    fig, axes = subplots(1, 2, figsize=(10, 4), squeeze=False)
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
    """Clean against robust accuracy of every trial, coloured by r, the Pareto front (over every objective
    `front` was computed on) marked."""
    fig, ax = subplots(figsize=(6, 5))
    xs = [100 * t["metrics"]["objective.clean"] for t in trials]
    ys = [100 * t["metrics"]["objective.robust"] for t in trials]
    colours = [t["params"].get("ratio", 0) for t in trials]
    points = ax.scatter(xs, ys, c=colours, cmap="viridis", vmin=0, vmax=1, label="trials")
    fig.colorbar(points, ax=ax, label="mix ratio r")
    order = sorted(front, key=lambda i: xs[i])
    ax.plot([xs[i] for i in order], [ys[i] for i in order], "ro", mfc="none", ms=12,  # a front of 3: no line
            label="Pareto front (clean, robust and cross-lingual similarity)")
    if "objective.clean" in reference:
        ax.scatter([100 * reference["objective.clean"]], [100 * reference["objective.robust"]], marker="*", s=200,
                   c="black", label="untrained")
    ax.set_xlabel("clean accuracy, target group (%)")
    ax.set_ylabel("attacked accuracy, target group (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_distance(path: Path, distance: dict) -> None:
    """Each language's robust gain on the logit scale (best vs r = 0) against the untrained encoder's L->English
    accuracy on the selection sentences (logit axis, labelled in %), by script (`study.analysis.distance`); languages
    without a selection-half figure are not drawn."""
    fig, ax = subplots(figsize=(7, 5))
    pts = [r for r in distance["rows"] if r.get("logit_untrained_selection") is not None]
    scripts = sorted({r["script"] for r in pts}, key=lambda s: (s != "Latin", s))
    colours = colormap("tab20")
    for i, script in enumerate(scripts):
        mine = [r for r in pts if r["script"] == script]
        ax.scatter([r["logit_untrained_selection"] for r in mine], [r["logit_gain"] for r in mine],
                   marker="o" if script == "Latin" else "s", color=colours(i % 20), label=script)
        for r in mine:
            ax.annotate(r["lang"], (r["logit_untrained_selection"], r["logit_gain"]), fontsize=7)
    ax.axhline(0, color="grey", lw=0.8)
    ticks = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
    if pts:
        xs = [r["logit_untrained_selection"] for r in pts]
        ticks = [p for p in ticks if min(xs) - 0.5 <= np.log(p / (1 - p)) <= max(xs) + 0.5] or ticks
    ax.set_xticks([float(np.log(p / (1 - p))) for p in ticks], [f"{100 * p:g}" for p in ticks])
    iv, rho = distance["spearman_interval"], distance["spearman"]
    used = f"{distance.get('n_used', len(pts))} of {distance.get('n_languages', len(distance['rows']))} languages"
    if rho is None:
        ax.set_title(f"no rank correlation: {used} with a selection-half figure")
    else:
        spread = f"[{iv['low']:+.2f}, {iv['high']:+.2f}]" if iv.get("low") is not None else "(no interval)"
        ax.set_title(f"Spearman rho {rho:+.2f} {spread} (bootstrap 95%), {used}")
    ax.set_xlabel("untrained encoder: L->English accuracy on the selection sentences (%, logit axis)")
    ax.set_ylabel("robust gain, best vs r = 0 (logit)")
    if pts:
        ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


def plot_robustness_curves(path: Path, replicas: list, reference: dict, langs: list[str], radii, best: str) -> None:
    """Per group, L->English accuracy against attack radius: the baseline's and the best configuration's
    replicas (`study.replicate.Replica`: mean and 95% t-interval over seeds), and the untrained encoder."""
    from study.evaluation import stats

    keys = ["l2e"] + [f"attacked_eps{r:g}" for r in radii]
    fig, axes = subplots(1, 2, figsize=(10, 4), squeeze=False)
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


def plot_tradeoff(path: Path, trials: list[dict], reference: dict, baseline: dict | None, best: dict | None) -> None:
    """Robust accuracy (low-resource group) against cross-lingual STS Spearman, one point per trial coloured by r:
    on the selection half (what the search saw: hollow = fails the constraint) and on the report half (finished
    trials: what the summary quotes). The untrained encoder, the r = 0 baseline and the best are marked."""
    from matplotlib.lines import Line2D

    from study.evaluation.crosslingual import CONSTRAINT, xsts_key
    from study.evaluation.robustness import group_key

    colours = colormap("viridis")
    fig, axes = subplots(1, 2, figsize=(12, 5.5), squeeze=False, layout="constrained")
    for ax, split in zip(axes[0], ("selection", "report")):
        xkey, ykey = xsts_key(split, "xsts"), group_key(split, "low", "robust")
        for t in (t for t in trials if xkey in t["metrics"] and ykey in t["metrics"]):
            x, y, r = 100 * t["metrics"][xkey], 100 * t["metrics"][ykey], t["params"].get("ratio", 0)
            colour = colours(r)
            ax.scatter([x], [y], s=90 if t is baseline else 60, marker="s" if t is baseline else "o",
                       facecolors="none" if t["metrics"].get(CONSTRAINT, 0) > 0 else [colour], edgecolors=[colour],
                       linewidths=1.5, zorder=3)
            ax.annotate(("r = 0" if t is baseline else f"r={r:.2f}") + (" best" if t is best else ""),
                        (x, y), fontsize=7, xytext=(5, 4), textcoords="offset points")
            if t is best:
                ax.scatter([x], [y], s=300, facecolors="none", edgecolors="red", linewidths=1.5, zorder=2)
        if xkey in reference and ykey in reference:
            ax.scatter([100 * reference[xkey]], [100 * reference[ykey]], marker="*", s=240, c="black", zorder=3)
            ax.axvline(100 * reference[xkey], color="grey", lw=0.8, ls="--")
        ax.margins(0.15)
        ax.set_xlabel("cross-lingual STS Spearman x 100 (mean over languages)")
        ax.set_ylabel("robust accuracy, low-resource group (%)")
        ax.set_title("selection half: what the search saw" if split == "selection" else
                     "report half: what the summary quotes (finished trials)")
        ax.grid(alpha=0.3)
    legend = [Line2D([], [], marker="*", ls="", color="black", ms=12, label="untrained (dashed: its similarity)"),
              Line2D([], [], marker="s", ls="", mfc="none", mec="black", label="r = 0 baseline"),
              Line2D([], [], marker="o", ls="", color="grey", label="meets the constraint"),
              Line2D([], [], marker="o", ls="", mfc="none", mec="grey", label="fails it (hollow)"),
              Line2D([], [], marker="o", ls="", mfc="none", mec="red", ms=14, label="best")]
    fig.legend(handles=legend, loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(cmap=colours, norm=Normalize(0, 1)), ax=axes[0].tolist(),
                 label="mix ratio r", shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
