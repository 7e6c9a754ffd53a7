"""The study's Optuna storage (issue 27, points 1 and 7): the searcher's trials in a real SQLite Optuna storage,
reconciled after a driver's death, and TPE still modelling proposals when more trials are pending than the
cluster has slots. Real Optuna storage, a real local Ray and Tune run; trials report designed values."""

from __future__ import annotations

import json
import pickle

import optuna
import pytest

from search_spaces import load_space
from study.orchestration.settings import StudySettings

RELATIVE = "tpe:relative_params:0"  # what TPE (constant liar) stores on a trial whose parameters it modelled
SETTINGS = StudySettings(space="hybrid_ratio", budget="smoke", num_samples=1, epochs=1, model="unused",
                         eval={"langs": ["swh"]}, batch_size=8, max_train_pairs=8)


def _result(value: float) -> dict:
    return {"objective.robust": value, "training_iteration": 1, "config/epochs": 1}


def test_a_restored_searcher_has_each_trial_once_in_the_storage(tmp_path):
    """The driver dies after Tune's last snapshot of the searcher, having proposed one trial and told another
    since: the resumed searcher hands the lost proposal's parameters to Tune's next trial and does not tell a
    finished trial twice. No trial is duplicated or left RUNNING."""
    from study.orchestration.tuning import RAY_TRIAL_ATTR, make_searcher

    url = f"sqlite:///{tmp_path}/optuna.db"
    settings = SETTINGS.replace(num_samples=6, max_concurrent=6)
    searcher = make_searcher(settings, load_space("hybrid_ratio"), storage=url, study_name="s").searcher
    at_start = pickle.dumps(searcher)  # Tune's tuner.pkl: the searcher as fit() began
    for trial_id in ("a", "b"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete("a", _result(0.5))
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's last snapshot
    lost = searcher.suggest("c")  # after it: Tune's restored state will not know trial c
    searcher.on_trial_complete("b", _result(0.6))  # told after it: Tune will run b again from its checkpoint
    snapshot = pickle.loads((tmp_path / "searcher.pkl").read_bytes())
    assert snapshot["_ot_study"] is None and snapshot["_ot_trials"] == {"a": 1, "b": 2}, "the storage's trial ids"
    del searcher  # SIGKILL

    resumed = pickle.loads(at_start)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_result("b", {"objective.robust": 0.1, "training_iteration": 1})
    resumed.on_trial_complete("b", _result(0.1))  # Optuna was told b once, before the kill
    assert resumed.suggest("d") == lost, "the proposal Tune lost is Tune's next trial, with its parameters"
    resumed.suggest("e")
    for trial_id, value in (("d", 0.7), ("e", 0.2)):
        resumed.on_trial_complete(trial_id, _result(value))

    study = optuna.load_study(study_name="s", storage=url)
    trials = study.get_trials()
    assert [t.user_attrs[RAY_TRIAL_ATTR] for t in trials] == ["a", "b", "d", "e"]
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.value for t in trials] == [0.5, 0.6, 0.7, 0.2]
    assert trials[0].params["ratio"] == 0.0, "the r = 0 baseline, enqueued once"


def test_a_searcher_restored_from_a_moved_study_folder_finds_its_database_there(tmp_path, monkeypatch):
    """A study folder renamed between stop and resume (a stopped job resumed under another name): the pickled
    searcher names the folder's optuna.db by a marker, and reconnects to it where study_tuner says it is now."""
    from study.orchestration import tuning

    before, after = tmp_path / "study-a", tmp_path / "study-b"
    before.mkdir()
    searcher = tuning.make_searcher(SETTINGS.replace(num_samples=2, max_concurrent=2), load_space("hybrid_ratio"),
                                    storage=tuning.optuna_storage_url(SETTINGS, before), study_name="s").searcher
    searcher.suggest("a")
    pickled = pickle.dumps(searcher)
    del searcher
    before.rename(after)

    monkeypatch.setattr(tuning, "_restoring_study_dir", after)  # as study_tuner sets it around Tuner.restore
    resumed = pickle.loads(pickled)
    assert resumed._storage_url == f"sqlite:///{(after / tuning.OPTUNA_FILE).resolve()}"
    resumed.on_trial_complete("a", _result(0.5))
    trials = optuna.load_study(study_name="s", storage=resumed._storage_url).get_trials()
    assert [(t.user_attrs[tuning.RAY_TRIAL_ATTR], t.value) for t in trials] == [("a", 0.5)]
    assert not before.exists(), "nothing recreated where the folder was"


def _quick_trial():
    """The trial function, a closure so Ray ships it by value (workers cannot import this test module)."""

    def trial(config: dict) -> None:
        from ray import tune

        tune.report({"objective.robust": 1.0 - abs(config["ratio"] - 0.3), "epoch": 1})

    return trial


def test_more_pending_trials_than_slots_still_leaves_the_later_trials_to_tpe(tmp_path):
    """Issue 27.1: on a joined cluster the default keeps more trials pending than the cluster has slots (the
    autoscaler's demand), yet few enough that TPE models the trials proposed after its start-up trials finished.
    Which trials TPE modelled is read from the Optuna storage: TPE with constant liar stores its relative
    (modelled) parameters on the trial; a random start-up proposal has none."""
    import ray
    from ray import tune
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv
    from ray.tune.logger import JsonLoggerCallback

    from study.orchestration.raycluster import default_max_concurrent
    from study.orchestration.tuning import RAY_TRIAL_ATTR, make_searcher, startup_trials

    space, samples = load_space("hybrid_ratio"), 12
    # the old default, every trial at once: every proposal is made before any trial finished, so none is modelled
    everything = make_searcher(SETTINGS.replace(num_samples=samples, max_concurrent=samples), space)
    for i in range(samples):
        everything.suggest(f"t{i}")
    assert not [t for t in everything.searcher._ot_study.trials if RELATIVE in t.system_attrs]

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    try:
        # an autoscaler that reports its configuration: up to 4 nodes of 8 CPUs, 32 one-CPU slots
        config = autoscaler_pb2.ClusterConfig(node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="cpu", resources={"CPU": 8}, min_count=0, max_count=4)])
        key, namespace = GCS_AUTOSCALER_CLUSTER_CONFIG_KEY.encode(), GCS_AUTOSCALER_STATE_NAMESPACE.encode()
        internal_kv._internal_kv_put(key, config.SerializeToString(), namespace=namespace)
        assert default_max_concurrent(1, 0, 100, joined=True) == 32, "the autoscaler's maximum"
        assert default_max_concurrent(1, 0, 40, joined=True) == 20 // 1 - startup_trials(40) + 1, "TPE's half"
        internal_kv._internal_kv_del(key, namespace=namespace)
        # none reported: twice the 2 slots the cluster has now
        concurrent = default_max_concurrent(1, 0, samples, joined=True)
        assert concurrent == 4 and default_max_concurrent(1, 0, samples, joined=False) == 2

        url = f"sqlite:///{tmp_path}/optuna.db"
        settings = SETTINGS.replace(num_samples=samples, max_concurrent=concurrent)
        searcher = make_searcher(settings, space, storage=url, study_name="pending")
        tuner = tune.Tuner(tune.with_resources(_quick_trial(), {"cpu": 1}), param_space={},
                           tune_config=tune.TuneConfig(metric="objective.robust", mode="max", search_alg=searcher,
                                                       num_samples=samples, reuse_actors=True),
                           run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0,
                                                     callbacks=[JsonLoggerCallback()]))
        grid = tuner.fit()
        assert not grid.errors, grid.errors
    finally:
        ray.shutdown()

    trials = optuna.load_study(study_name="pending", storage=url).get_trials()
    assert len(trials) == samples and {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert sorted(t.user_attrs[RAY_TRIAL_ATTR] for t in trials) == sorted(r.metrics["trial_id"] for r in grid)
    startup = startup_trials(samples)
    modelled = [t for t in trials if RELATIVE in t.system_attrs]
    for trial in trials:
        finished_before = sum(1 for t in trials if t.datetime_complete and t.datetime_complete <= trial.datetime_start)
        if trial in modelled:
            assert finished_before >= startup, (trial.number, finished_before)
    print(f"\n{len(modelled)} of {samples} trials modelled by TPE ({concurrent} at once, {startup} start-up): "
          f"{[t.number for t in modelled]}")
    # at most startup + concurrent - 1 proposals come before the start-up trials have finished
    assert len(modelled) >= samples - (startup + concurrent - 1)
    for trial in modelled:
        assert trial.params["ratio"] == pytest.approx(
            json.loads(trial.system_attrs[RELATIVE])["ratio"]), "the modelled value was used"
