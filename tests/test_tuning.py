"""The study's Ray Tune driver for real: Optuna's searcher, ASHA, the MLflow callback and checkpoint retention
in one Tune run over the `full` space (epochs searched). The trials report designed values instead of
training, one at a time, so what ASHA must decide is known in advance and every decision can be checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_spaces import load_space
from study.orchestration import tracking
from study.orchestration.settings import StudySettings
from trainables.config import DEFAULTS

# ratio -> (epochs, objective at every epoch), in the order the trials run
DESIGN = {
    0.5: (3, 0.8),   # good: first at every rung, runs its 3 epochs
    0.0: (3, 0.1),   # the r = 0 baseline, weak: ASHA would stop it at the first rung; it must not
    0.3: (1, 0.2),   # a 1-epoch trial below the rung's cutoff: it ends at its own last epoch, COMPLETE
    0.7: (3, 0.05),  # weak with 3 epochs: stopped at the first rung, PRUNED with that value
}


def _designed_trial(design: dict):
    """The trial function, a closure so Ray ships it by value: per epoch, the designed objective and a tiny
    checkpoint, pruned as the real trainable prunes them (trainables.storage.CheckpointRetention)."""

    def trial(config: dict) -> None:
        import json
        import os
        import tempfile

        from ray import tune

        from trainables.storage import CheckpointRetention

        retention = CheckpointRetention(tune.get_context().get_storage())
        value = design[round(config["ratio"], 2)][1]
        for epoch in range(1, config["epochs"] + 1):
            with tempfile.TemporaryDirectory() as directory:
                with open(os.path.join(directory, "state.json"), "w") as f:
                    json.dump({"epoch": epoch}, f)
                retention.make_room()
                tune.report({"objective.robust": value, "objective.clean": value, "epoch": epoch},
                            checkpoint=tune.Checkpoint.from_directory(directory))

    return trial


@pytest.fixture(scope="module")
def designed_study(tmp_path_factory):
    import ray
    from ray import tune

    from study.orchestration.tuning import (
        STUDY_EXPERIMENT,
        _run_config,
        make_scheduler,
        make_searcher,
        trial_param_space,
    )

    work = tmp_path_factory.mktemp("designed")
    space = load_space("full")
    settings = StudySettings(space="full", budget="smoke", num_samples=len(DESIGN), epochs=DEFAULTS.epochs,
                             max_concurrent=1, model="unused", eval={"langs": ["swh"]}, batch_size=8,
                             max_train_pairs=8)
    points = [{**space.baseline_point(), "method": "pgd", "ratio": ratio, "epochs": epochs}
              for ratio, (epochs, _) in DESIGN.items()]
    uri = tracking.default_tracking_uri(work)
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, work, uri)
    parent = tracking.start_parent_run(client, experiment, name="designed", params={}, tags={})
    scheduler = make_scheduler(settings, space)
    optuna_storage = f"sqlite:///{work}/optuna.db"
    limiter = make_searcher(settings, space, scheduler, points=points, storage=optuna_storage, study_name="designed")
    run_config = _run_config(STUDY_EXPERIMENT, str(work / "ray"), tracking.ChildRunLogger(uri, experiment, parent),
                             {}, max_failures=0)
    run_config.verbose = 0
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        tuner = tune.Tuner(tune.with_resources(_designed_trial(DESIGN), {"cpu": 1}),
                           param_space=trial_param_space(settings, space), run_config=run_config,
                           tune_config=tune.TuneConfig(metric="objective.robust", mode="max", search_alg=limiter,
                                                       scheduler=scheduler, num_samples=len(DESIGN)))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    return dict(grid=grid, optuna=limiter.searcher._ot_study, client=client, experiment=experiment, parent=parent,
                storage=work / "ray" / STUDY_EXPERIMENT, optuna_storage=optuna_storage)


def test_searched_epochs_end_complete_stopped_trials_pruned_with_their_last_value(designed_study):
    import optuna

    trials = {round(t.params["ratio"], 2): t for t in designed_study["optuna"].trials}
    assert set(trials) == set(DESIGN)
    states = {ratio: trial.state for ratio, trial in trials.items()}
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    assert states == {0.5: complete, 0.0: complete, 0.3: complete, 0.7: pruned}
    assert trials[0.3].value == 0.2, "a 1-epoch trial is told COMPLETE with its final value"
    assert trials[0.7].intermediate_values == {1: 0.05}, "the stopping epoch's value reaches Optuna"
    # ... and the study's Optuna storage holds the same: one trial per Ray trial, ASHA's stop PRUNED
    from study.orchestration.tuning import RAY_TRIAL_ATTR

    stored = optuna.load_study(study_name="designed", storage=designed_study["optuna_storage"]).get_trials()
    assert {round(t.params["ratio"], 2): t.state for t in stored} == states and len(stored) == len(DESIGN)
    assert sorted(t.user_attrs[RAY_TRIAL_ATTR] for t in stored) == sorted(r.metrics["trial_id"]
                                                                        for r in designed_study["grid"])


def test_asha_stops_the_weak_trial_but_never_the_baseline(designed_study):
    client = designed_study["client"]
    runs = client.search_runs([designed_study["experiment"]],
                              filter_string=f"tags.`{tracking.PARENT_TAG}` = '{designed_study['parent']}'")
    by_ratio = {float(r.data.params["ratio"]): r for r in runs}
    assert len(runs) == len(DESIGN)
    epochs = {ratio: [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
              for ratio, run in by_ratio.items()}
    assert epochs == {0.5: [1, 2, 3], 0.0: [1, 2, 3], 0.3: [1], 0.7: [1]}
    assert {ratio: run.info.status for ratio, run in by_ratio.items()} == {
        0.5: "FINISHED", 0.0: "FINISHED", 0.3: "FINISHED", 0.7: "KILLED"}
    assert by_ratio[0.7].data.tags["stopped_early"] == "after epoch 1 (ASHA)"


def test_tune_retention_is_off_and_each_trial_keeps_its_newest_two_checkpoints(designed_study):
    """No CheckpointConfig(num_to_keep): Tune would force an experiment snapshot per checkpoint. The trial prunes
    its own checkpoints instead, and what the driver needs (the last one) is still there."""
    for result in designed_study["grid"]:
        trial_dir = Path(result.path)
        kept = sorted(p.name for p in trial_dir.glob("checkpoint_*"))
        epochs = result.metrics["epoch"]
        expected = [f"checkpoint_{i:06d}" for i in range(max(0, epochs - 2), epochs)]
        assert kept == expected, (trial_dir, kept)
        assert result.checkpoint.path.endswith(expected[-1])
        assert not list(trial_dir.glob("progress.csv")), "Tune's CSV logger is off"
        assert list(trial_dir.glob("result.json")), "one JSON logger is on"
