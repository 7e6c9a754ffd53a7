"""A study's trials as MLflow recorded them: read back, ranked, the r = 0 baseline found, the Pareto front.

A trial here is a dict {run_id, name, status, params (typed), metrics (latest values), failure}, read from
the child runs of the study's parent run.
"""

from __future__ import annotations

from study.robustness import objective_metric
from study.tracking import PARENT_TAG, TRIAL_TAG


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except (TypeError, ValueError):
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def load_trials(client, experiment: str, parent: str) -> list[dict]:
    """Every child run of `parent`."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'", max_results=5000)
    return [dict(run_id=r.info.run_id, name=r.info.run_name, status=r.info.status, trial_id=r.data.tags.get(TRIAL_TAG),
                 params={k: _value(v) for k, v in r.data.params.items()}, raw_params=dict(r.data.params),
                 metrics=dict(r.data.metrics), failure=r.data.tags.get("failure_reason")) for r in runs]


def rank_trials(trials: list[dict], objective: str) -> list[dict]:
    """Finished trials with the objective, best first (trials stopped early or failed are left out)."""
    key = objective_metric(objective)
    done = [t for t in trials if t["status"] == "FINISHED" and key in t["metrics"]]
    return sorted(done, key=lambda t: -t["metrics"][key])


def best_trial(trials: list[dict], objective: str) -> dict | None:
    """The trial a study hands on as its answer (study.export), or None when no trial finished: the best by the
    study's objective, which is measured on the selection split, the r = 0 baseline included (the report's
    summary names the best trial other than the baseline). Not the best
    on the report split, whose figures the export carries: choosing on them would spend the report sentences
    on selection, and the figures quoted for the choice would be biased upwards."""
    ranked = rank_trials(trials, objective)
    return ranked[0] if ranked else None


def finished_baseline(trials: list[dict]) -> dict | None:
    """The first finished r = 0 trial (plain fine-tuning), or None."""
    return next((t for t in trials if t["params"].get("ratio") == 0 and t["status"] == "FINISHED"), None)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates maximised)."""
    front = []
    for i, (a, b) in enumerate(points):
        dominated = any((c >= a and d >= b) and (c > a or d > b) for j, (c, d) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front
