"""A study's trials as MLflow recorded them: read back, ranked, the best chosen, the r = 0 baseline found, the
Pareto front.

A trial here is a dict {run_id, name, status, params (typed), metrics (latest values), failure}, read from
the child runs of the study's parent run.
"""

from __future__ import annotations

from study.evaluation.crosslingual import CONSTRAINT
from study.evaluation.robustness import objective_metric
from study.orchestration.tracking import PARENT_TAG, TRIAL_TAG


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


def meets_constraint(trial: dict) -> bool:
    """Whether a trial does no harm: its cross-lingual similarity on the selection half is no worse than the
    untrained encoder's, within the tolerance (CONSTRAINT <= 0, study.evaluation.crosslingual). A study that did not
    measure it (no translated pairs) constrains nothing."""
    return trial["metrics"].get(CONSTRAINT, 0.0) <= 0


def eligible_trials(trials: list[dict], objective: str) -> list[dict]:
    """The ranked trials (`rank_trials`) that meet the constraint: the candidates for "best"."""
    return [t for t in rank_trials(trials, objective) if meets_constraint(t)]


def best_trial(trials: list[dict], objective: str) -> dict | None:
    """The trial a study hands on as its answer, one definition for the summary, study.export's default, the
    registry's @best and study.replicate: the best by the study's objective among the finished trials that meet
    the constraint (`meets_constraint`), the r = 0 baseline included; None when no finished trial meets it.
    The objective and the constraint are measured on the selection split, not on the report split whose figures
    the summary and the export carry: choosing on them would spend the report sentences on selection, and the
    figures quoted for the choice would be biased upwards."""
    eligible = eligible_trials(trials, objective)
    return eligible[0] if eligible else None


def finished_baseline(trials: list[dict]) -> dict | None:
    """The first finished r = 0 trial (plain fine-tuning), or None."""
    return next((t for t in trials if t["params"].get("ratio") == 0 and t["status"] == "FINISHED"), None)


def pareto_front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the non-dominated points (every coordinate maximised)."""
    def dominates(p, q):
        return all(a >= b for a, b in zip(p, q)) and any(a > b for a, b in zip(p, q))

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]
