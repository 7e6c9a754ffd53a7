"""Ray Tune set-up, shared by the study (`study.run`) and its replication (`study.replicate`): the trials'
param space, Optuna's searcher, ASHA, the progress table and the run config.

r and epsilon enter here: the search space's domains become the Ray param space of `trainables.trainable.
train_hybrid`, whose `TrialConfig` hands them to the hybrid-batch step.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from study.evaluation.crosslingual import CONSTRAINT
from study.evaluation.robustness import PARETO_METRICS, objective_metric
from study.orchestration.settings import StudySettings
from study.orchestration.studydir import ray_storage
from trainables.config import DEFAULTS, KEYS, TrialConfig, column_label

STUDY_EXPERIMENT = "tune"  # ray/tune: the study's trials
REPLICATION_EXPERIMENT = "replicate"  # ray/replicate: its replication
# The classic reporter shows one live table with the columns we choose (r, epsilon, epoch, objective).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# Tune's CSV and TensorBoard loggers would write every scalar again on the driver; MLflow is the record, and
# the one JSON logger `_run_config` adds keeps result.json, from which Ray's ResultGrid reads trial histories
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

METRIC_COLUMNS = {"epoch": "epoch", "objective.robust": "robust", "objective.clean": "clean",
                  "objective.xsts": "xsts", CONSTRAINT: "harm", "train.loss": "loss"}


# ----------------------------------------------------------------------------- what the trials run
def base_trial_config(settings: StudySettings, space) -> TrialConfig:
    """The configuration every trial of the study shares, before Optuna sets the searched keys. Precedence:
    TrialConfig defaults < the space's fixed keys < the budget's and the command line's settings (a key the
    space searches is left to the search)."""
    overrides = {**space.fixed, **settings.train, "epochs": settings.epochs}
    if settings.method:
        overrides["method"] = settings.method
    overrides = {k: v for k, v in overrides.items() if k not in space.space}
    return TrialConfig(**overrides, model=settings.model, data_dir=settings.data_dir,
                       eval=settings.eval_config, seed=settings.seed,
                       batch_size=settings.batch_size, max_train_pairs=settings.max_train_pairs)


def trial_param_space(settings: StudySettings, space) -> dict:
    """Ray's param space: the base configuration for the keys the space does not search (the searcher proposes
    the others: a searched key it leaves out, as FGSM leaves out the steps, runs at its TrialConfig default)."""
    base = base_trial_config(settings, space).to_dict()
    return {k: v for k, v in base.items() if k not in space.space}


def progress_columns(keys) -> dict[str, str]:
    """The progress table's parameter columns for these config keys, titled as TrialConfig says."""
    return {key: column_label(key) for key in keys if key in KEYS}


# ----------------------------------------------------------------------------- searcher and scheduler
def startup_trials(num_samples: int) -> int:
    """TPE's random start-up trials: a quarter of the study, from 2 to 10 (Optuna's default of 10 would make
    the smoke and cpu budgets pure random search)."""
    return max(2, min(10, num_samples // 4))


# ----------------------------------------------------------------------------- the Optuna study's storage
OPTUNA_FILE = "optuna.db"  # STUDY_DIR/optuna.db: the default storage (SQLite; only the driver writes it)
RAY_TRIAL_ATTR = "ray_trial_id"  # user attr of each Optuna trial: the Ray trial it was proposed for


def optuna_storage_url(settings: StudySettings, study_dir: Path) -> str:
    """The study's Optuna storage: --optuna-storage (never with a password: settings refuses one), else
    sqlite:///STUDY_DIR/optuna.db."""
    return settings.optuna_storage or study_dir_optuna_url(study_dir)


def study_dir_optuna_url(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / OPTUNA_FILE).resolve()}"


# a pickled searcher names the default storage by this marker, not by its path: a study folder that was moved or
# renamed finds its optuna.db where the folder is now (study_tuner says where, while Tune unpickles the searcher)
IN_STUDY_DIR = "in-the-study-folder"
_restoring_study_dir: Path | None = None


def optuna_study_name(study_dir: Path) -> str:
    """The study's name in its Optuna storage: the folder's name and its MLflow parent run, so that studies
    sharing one database (--optuna-storage) never share a name."""
    from study.orchestration.studydir import STUDY_FILE, load_study

    study_dir = Path(study_dir)
    parent = load_study(study_dir).get("parent_run_id") if (study_dir / STUDY_FILE).is_file() else None
    return f"{study_dir.name}-{parent[:8]}" if parent else study_dir.name


def open_optuna_storage(url: str):
    """Optuna's RDB storage at `url` (SQLAlchemy URL; PostgreSQL's driver reads PGPASSWORD / ~/.pgpass)."""
    import optuna

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


class StudyOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, with the selection constraint and two repairs for early stopping:

    - Each trial's CONSTRAINT (no worse than the untrained encoder at cross-lingual similarity, within its
      tolerance: study.evaluation.crosslingual) is set on its Optuna trial (`Trial.set_constraint`, Optuna's constrained
      optimisation) before it is told, so TPE models infeasible trials apart from the feasible ones.
    - A trial ASHA stopped is told to Optuna as PRUNED, after its last value is reported (Ray skips
      `on_trial_result` for the result that triggered the stop), not COMPLETE with an early epoch's value as if
      it were final. Its epochs are read from the flattened result Ray hands searchers (`config/epochs`).
    - ASHA's rung records, which Tune does not save (ray-project/ray#30838), are saved and restored with the
      searcher's own state, so a resumed study stops trials by the same standard as before.

    With `storage_url`, the Optuna study lives in that database (STUDY_DIR/optuna.db by default), one Optuna
    trial per Ray trial (user attr RAY_TRIAL_ATTR), for optuna-dashboard, `optuna.load_study` and the report's
    importances. The database, not the pickle, is then the record: Tune's snapshots of the searcher keep only
    the Optuna trial ids, and a restored searcher reconnects and reconciles with what the database holds.
    Trials the killed driver had proposed after Tune's last snapshot (RUNNING in the database, unknown to Tune)
    are handed, with their parameters, to the first trials Tune proposes again, and trials told after that
    snapshot are not told twice: a resumed study has each trial once, none left RUNNING.
    """

    def __init__(self, *args, study_epochs: int, scheduler=None, storage_url: str | None = None,
                 study_name: str | None = None, **kwargs):
        self._storage_url, self._orphans = storage_url, []
        if storage_url:
            storage = open_optuna_storage(storage_url)
            try:  # a new search: what a driver killed before Tune's first snapshot left under this name is void
                optuna.delete_study(study_name=study_name, storage=storage)
            except KeyError:
                pass
            kwargs.update(storage=storage, study_name=study_name)
        super().__init__(*args, **kwargs)
        self._study_epochs, self._scheduler = study_epochs, scheduler

    # the database holds the study: a pickle (Tune's tuner.pkl and its searcher snapshots) keeps trial ids only
    def __getstate__(self):
        state = self.__dict__.copy()
        if getattr(self, "_storage_url", None):  # absent from a searcher pickled before the storage existed
            if self._storage_url.startswith("sqlite:///") and self._storage_url.endswith(f"/{OPTUNA_FILE}"):
                state.update(_storage_url=IN_STUDY_DIR, _storage_url_when_saved=self._storage_url)
            state.update(_ot_study=None, _storage=None,
                         _ot_trials={ray_id: trial._trial_id for ray_id, trial in self._ot_trials.items()})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.__dict__.get("_storage_url"):
            self._reconnect()

    def _reconnect(self):
        if self._storage_url == IN_STUDY_DIR:  # the study folder's, where it is now (else where it was)
            self._storage_url = (study_dir_optuna_url(_restoring_study_dir) if _restoring_study_dir
                                 else self.__dict__.pop("_storage_url_when_saved"))
        storage = open_optuna_storage(self._storage_url)
        self._storage = storage
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=storage, sampler=self._sampler,
                                           pruner=optuna.pruners.NopPruner())
        ids = self._ot_trials
        stored = {t._trial_id: t for t in self._ot_study.get_trials(deepcopy=False)}
        self._ot_trials = {ray_id: optuna.Trial(self._ot_study, trial_id) for ray_id, trial_id in ids.items()}
        self._completed_trials |= {ray_id for ray_id, trial_id in ids.items() if stored[trial_id].state.is_finished()}
        known = set(ids.values())
        self._orphans = [t._trial_id for t in sorted(stored.values(), key=lambda t: t.number)
                         if t.state == optuna.trial.TrialState.RUNNING and t._trial_id not in known]

    def suggest(self, trial_id):
        # a trial proposed before the driver died, that Tune's snapshot did not record: Tune's next, as it was
        if trial_id not in self._ot_trials and getattr(self, "_orphans", None):
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, self._orphans.pop(0))
        config = super().suggest(trial_id)
        if getattr(self, "_storage_url", None) and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ATTR, trial_id)
        return config

    def on_trial_result(self, trial_id, result):
        if trial_id not in self._completed_trials:  # a resumed trial Optuna was told of before the restart
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        if trial_id in self._completed_trials:
            return
        result = result or {}
        if CONSTRAINT in result and not error and trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_constraint("xsts", result[CONSTRAINT])
        epochs = result.get("config/epochs") or self._study_epochs
        stopped_early = result and not error and result.get(TRAINING_ITERATION, epochs) < epochs
        if stopped_early and not isinstance(self.metric, list) and trial_id not in self._completed_trials:
            trial = self._ot_trials[trial_id]
            if self.metric in result:
                trial.report(result[self.metric], step=result[TRAINING_ITERATION])
            self._ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str):
        scheduler, self._scheduler = self._scheduler, None  # the live scheduler is Tune's; keep its records only
        self._rung_records = rung_records(scheduler) if scheduler else None
        try:
            with open(checkpoint_path, "wb") as f:
                pickle.dump(self.__getstate__(), f)
        finally:
            self._scheduler = scheduler

    def restore(self, checkpoint_path: str):
        scheduler = self._scheduler
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if state.get("_storage_url") == IN_STUDY_DIR and getattr(self, "_storage_url", None):
            state["_storage_url"] = self._storage_url  # where this searcher, unpickled by study_tuner, found it
        self.__setstate__(state)
        self._scheduler = scheduler
        if scheduler and getattr(self, "_rung_records", None):
            restore_rung_records(scheduler, self._rung_records)


def rung_records(scheduler) -> list[list[dict]]:
    """ASHA's state: per bracket, per rung, {trial id: objective at that rung's epoch}."""
    return [[dict(recorded) for _, recorded in bracket._rungs] for bracket in scheduler._brackets]


def restore_rung_records(scheduler, records: list[list[dict]]) -> None:
    for bracket, saved in zip(scheduler._brackets, records):
        for (_, recorded), values in zip(bracket._rungs, saved):
            recorded.update(values)


def make_searcher(settings: StudySettings, space, scheduler=None, points: list[dict] | None = None,
                  storage: str | None = None, study_name: str = "optuna"):
    """Optuna's TPE (multivariate, grouped for conditional keys; constant liar, so trials running at once are
    proposed apart) behind Ray's OptunaSearch over the space's define-by-run function, told the r = 0 baseline
    first, at most `max_concurrent` trials at once. A new Optuna study named `study_name` in the `storage` URL
    (replacing one of that name), else in memory."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # multivariate and constant_liar are marked experimental in Optuna; their notice says nothing actionable
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    points = points or [space.baseline_point(DEFAULTS)]  # what is proposed first: the baseline, unless told
    sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=startup_trials(
        settings.num_samples), multivariate=True, group=True, constant_liar=True)
    common = dict(space=space.define_by_run, sampler=sampler, points_to_evaluate=points,
                  study_epochs=settings.epochs, scheduler=scheduler, storage_url=storage, study_name=study_name)
    if settings.objective == "pareto":
        searcher = StudyOptunaSearch(metric=list(PARETO_METRICS), mode=["max"] * len(PARETO_METRICS), **common)
    else:
        searcher = StudyOptunaSearch(metric=objective_metric(settings.objective), mode="max", **common)
    return ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent)


class BaselineKeepingASHA(ASHAScheduler):
    """ASHA that never stops the r = 0 baseline: its figures are recorded in the rungs like any trial's, but it
    always trains to the end, as the report and the replication compare every trial with it."""

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and trial.config.get("ratio") == 0:
            return self.CONTINUE
        return decision


def max_epochs(settings: StudySettings, space) -> int:
    """The most epochs a trial of this study may train: the space's upper bound when it searches epochs."""
    return space.space["epochs"].high if "epochs" in space.space else settings.epochs


def make_scheduler(settings: StudySettings, space):
    """ASHA on the epochs (single objective, trials of more than one epoch), else none."""
    longest = max_epochs(settings, space)
    if settings.objective == "pareto" or longest <= 1:
        return None
    return BaselineKeepingASHA(time_attr=TRAINING_ITERATION, max_t=longest, grace_period=1, reduction_factor=2)


# ----------------------------------------------------------------------------- tuners
def _run_config(name: str, storage: str, callback, parameter_columns: dict, max_failures: int):
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    reporter = tune.CLIReporter(parameter_columns=parameter_columns, metric_columns=METRIC_COLUMNS,
                                max_report_frequency=30, sort_by_metric=True)
    return tune.RunConfig(name=name, storage_path=storage, callbacks=[JsonLoggerCallback(), callback],
                          progress_reporter=reporter, verbose=1,
                          # a crashed worker resumes from its checkpoint
                          failure_config=tune.FailureConfig(max_failures=max_failures))


def _trainable(settings: StudySettings):
    from ray import tune

    from trainables.trainable import train_hybrid

    return tune.with_resources(train_hybrid, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def ended_trials(results) -> int:
    """How many trials of a ResultGrid really ended: finished, stopped by the scheduler (both report done) or
    failed. Tune marks the trials still running when it is interrupted TERMINATED too (after saving its state),
    so num_terminated cannot tell an interrupted study from a finished one."""
    return sum(1 for result in results if result.error is not None or result.metrics.get("done"))


def study_tuner(settings: StudySettings, study_dir: Path, callback):
    """The study's Tuner: restored from ray/tune when a previous run left one, else new."""
    from ray import tune

    from search_spaces import load_space

    space = load_space(settings.space, settings.ranges)
    trainable = _trainable(settings)
    storage = ray_storage(settings, study_dir)
    state = f"{storage}/{STUDY_EXPERIMENT}"  # a path or a URI (s3://...): Ray reads both
    from study.orchestration.studydir import claim_ray_storage

    claim_ray_storage(storage, settings.study_id)  # this study's Tune state, or none yet; never another's
    if tune.Tuner.can_restore(state):
        global _restoring_study_dir
        _restoring_study_dir = Path(study_dir)
        try:
            return tune.Tuner.restore(state, trainable=trainable, resume_unfinished=True,
                                      resume_errored=False, restart_errored=False)
        finally:
            _restoring_study_dir = None
    single = settings.objective != "pareto"
    scheduler = make_scheduler(settings, space)
    searcher = make_searcher(settings, space, scheduler, storage=optuna_storage_url(settings, study_dir),
                             study_name=optuna_study_name(study_dir))
    tune_config = tune.TuneConfig(metric=objective_metric(settings.objective) if single else None,
                                  mode="max" if single else None, search_alg=searcher,
                                  scheduler=scheduler, num_samples=settings.num_samples,
                                  # a trial process runs trial after trial: torch, transformers and the data
                                  # loaders are imported once per worker, not once per trial (study.bench study)
                                  reuse_actors=True,
                                  trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}")
    columns = progress_columns([*space.space, "method"])
    # no Tune retention (it would force an experiment snapshot per checkpoint): the trainable keeps its newest two
    run_config = _run_config(STUDY_EXPERIMENT, storage, callback, columns, max_failures=2)
    return tune.Tuner(trainable, param_space=trial_param_space(settings, space), tune_config=tune_config,
                      run_config=run_config)


def replication_tuner(configs: list[TrialConfig], settings: StudySettings, study_dir: Path, callback):
    """One trial per configuration, exactly these: Ray's variant generator is handed them as its points, over
    a param space in which the keys that differ between them are choices (so every point is a valid value)."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    points = [c.to_dict() for c in configs]
    param_space = {}
    for key in points[0]:
        distinct = list({repr(p[key]): p[key] for p in points}.values())
        param_space[key] = tune.choice(distinct) if len(distinct) > 1 else distinct[0]
    tune_config = tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                  num_samples=len(points),
                                  trial_dirname_creator=lambda trial: f"replica_{trial.trial_id}")
    columns = progress_columns(["replica", "seed", "ratio", "epsilon", "method"])
    return tune.Tuner(_trainable(settings), param_space=param_space, tune_config=tune_config,
                      run_config=_run_config(REPLICATION_EXPERIMENT, ray_storage(settings, study_dir), callback,
                                             columns, max_failures=1))
