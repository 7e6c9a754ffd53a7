"""Fault tolerance, with real faults: a trial's worker killed with SIGKILL, the driver killed with SIGKILL,
a trial whose loss turns NaN. Real Ray, real MLflow store, the real encoder, tiny budgets."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from study.orchestration.tracking import (
    DRIVER_LOST,
    ENDED_TAG,
    PARENT_TAG,
    ChildRunLogger,
    client_for,
    default_tracking_uri,
    experiment_id,
    start_parent_run,
)
from studytools import metric_steps, run_cli, start_cli, study_runs, wait_for

SMOKE = ["study.run", "--space", "hybrid_ratio", "--budget", "smoke"]


def _checkpoints(study_dir: Path) -> list[Path]:
    return sorted((study_dir / "ray" / "tune").glob("trial_*/checkpoint_*"))


def _trial_processes(driver) -> list:
    """The processes running a trial's function (Ray titles them after the trainable's actor) among the
    descendants of this driver (its local Ray's raylet starts them)."""
    import psutil

    found = []
    for child in psutil.Process(driver.pid).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended meanwhile
            pass
    return found


def test_killed_worker_resumes_from_its_last_checkpoint(tmp_path):
    study_dir, log = tmp_path / "killworker", tmp_path / "study.log"
    proc = start_cli(*SMOKE, "--num-samples", "1", "--epochs", "4", "--out", str(study_dir), log=log)
    def first_epoch_recorded():  # the driver has processed the first result, and so registered its checkpoint
        if not (study_dir / "study.json").is_file() or not _checkpoints(study_dir):
            return False
        client, _, children = study_runs(study_dir)
        return children and metric_steps(client, children[0].info.run_id, "epoch") == [1]

    try:
        wait_for(first_epoch_recorded, proc, log, what="the first epoch's result and checkpoint")
        for worker in wait_for(lambda: _trial_processes(proc), proc, log, what="the trial's process"):
            worker.kill()  # SIGKILL, mid-training
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    client, _, children = study_runs(study_dir)
    (child,) = children
    assert child.info.status == "FINISHED"
    assert child.data.tags["ray.num_failures"] == "1"
    for key in ("epoch", "objective.robust", "selection.acc.swh.clean", "train.loss"):
        assert metric_steps(client, child.info.run_id, key) == [1, 2, 3, 4], key  # no gap, no duplicate
    assert [m.value for m in sorted(client.get_metric_history(child.info.run_id, "epoch"),
                                    key=lambda m: m.step)] == [1, 2, 3, 4]
    resumed = [m.value for m in client.get_metric_history(child.info.run_id, "train.resumed_from_epoch")]
    assert max(resumed) >= 1, "the retried trial started from its checkpoint, not from scratch"


def test_killed_driver_resumes_to_exactly_the_requested_trials(tmp_path):
    # two trials at once, the driver killed while both train: a trial that started after Tune's last snapshot comes
    # back under a new trial id, and its old child run must not stay RUNNING under a FINISHED parent (issue 27)
    study_dir, log = tmp_path / "killdriver", tmp_path / "first.log"
    proc = start_cli(*SMOKE, "--num-samples", "3", "--max-concurrent", "2", "--out", str(study_dir), log=log)

    def two_training():
        if not (study_dir / "study.json").is_file():
            return False
        return [c.info.status for c in study_runs(study_dir)[2]].count("RUNNING") == 2

    try:
        wait_for(two_training, proc, log, what="two trials in flight")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, no chance to clean up
        proc.wait(timeout=60)
    _, _, children = study_runs(study_dir)
    assert [c.info.status for c in children].count("RUNNING") == 2, "the kill came mid-study"

    result = run_cli("study.run", "--resume", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = study_runs(study_dir)
    assert parent.info.status == "FINISHED"
    assert "RUNNING" not in {c.info.status for c in children}
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 3 and len({c.data.tags["ray.trial_id"] for c in finished}) == 3, "each trial once"
    for child in finished:
        assert ENDED_TAG not in child.data.tags
        assert metric_steps(client, child.info.run_id, "objective.robust") == [1], "one epoch, logged once"
    for orphan in (c for c in children if c.info.status != "FINISHED"):  # lost with the driver, run again anew
        assert orphan.info.status == "KILLED" and orphan.data.tags[ENDED_TAG] == DRIVER_LOST
    print(f"{len(children) - 3} child runs of trials lost with the driver")
    assert (study_dir / "report" / "summary.csv").is_file()
    # the Optuna storage (issue 27.7): each trial once, under the Ray trial id it finished as, none left RUNNING
    import optuna

    trials = optuna.load_study(study_name=None, storage=f"sqlite:///{study_dir}/optuna.db").get_trials()
    assert sorted(t.user_attrs["ray_trial_id"] for t in trials) == sorted(c.data.tags["ray.trial_id"]
                                                                         for c in finished)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert f"optuna-dashboard sqlite:///{study_dir.resolve()}/optuna.db" in result.stdout


def test_diverging_trial_fails_with_its_reason_and_the_others_finish(tmp_path, model_dir, data_dir):
    import ray
    from ray import tune

    from trainables.trainable import train_hybrid

    uri = default_tracking_uri(tmp_path)
    client = client_for(uri)
    experiment = experiment_id(client, tmp_path, uri)
    parent = start_parent_run(client, experiment, "divergence", params={}, tags={})
    config = dict(model=model_dir, data_dir=str(data_dir), max_train_pairs=16, batch_size=8, epochs=1,
                  ratio=0.5, epsilon=0.1, attack_steps=1,
                  # 1e-45 underflows float32: logits / temperature overflow to inf and the loss turns NaN
                  temperature=tune.grid_search([0.05, 1e-45]),
                  eval=dict(langs=["swh"], max_sentences=8, radii=(0.05,), attack_steps=1, max_english_pairs=16,
                            max_xsts_pairs=16))
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        tuner = tune.Tuner(tune.with_resources(train_hybrid, {"cpu": 1}), param_space=config,
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                                     callbacks=[ChildRunLogger(uri, experiment, parent)],
                                                     failure_config=tune.FailureConfig(max_failures=2)))
        results = tuner.fit()
    finally:
        ray.shutdown()
    errors = [r for r in results if r.error]
    assert len(results) == 2 and len(errors) == 1
    assert errors[0].config["temperature"] == 1e-45
    runs = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    by_status = {r.info.status: r for r in runs}
    assert sorted(by_status) == ["FAILED", "FINISHED"]
    assert "TrainingDiverged: training loss became nan" in by_status["FAILED"].data.tags["failure_reason"]
    assert 0.0 <= by_status["FINISHED"].data.metrics["report.acc.swh.clean"] <= 1.0


@pytest.fixture(autouse=True)
def _no_ray_left_behind():
    """Each test leaves no Ray instance of its own running (a killed driver's Ray dies with it)."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_a_study_whose_every_trial_fails_says_why_and_is_not_finished(tmp_path):
    # a temperature of ~1e-45 underflows float32: every trial's first loss is NaN (full space: it searches it)
    study_dir = tmp_path / "allfail"
    result = run_cli("study.run", "--space", "full", "--budget", "smoke", "--num-samples", "2",
                     "--range", "temperature=1e-45,2e-45", "--out", str(study_dir))
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no trial finished: 2 of 2 failed") and "TrainingDiverged" in last, last
    _, parent, children = study_runs(study_dir)
    assert parent.info.status == "FAILED"
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
