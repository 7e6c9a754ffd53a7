"""MLflow: one parent run per study, one nested child run per trial.

All writes happen in the driver, through `ChildRunLogger`, a Ray Tune callback: trials only report to Ray,
Ray hands every result to the driver, and the driver writes it. So there is a single writer (SQLite stores
are safe with parallel trials), trials on remote nodes need no access to the tracking server, and child runs
can be nested under the study's parent run (Ray's own MLflow integration does not nest).

Re-reported epochs (a trial restored from its checkpoint after a crash) and resumed studies reuse their
child runs and skip steps already logged: no duplicate runs, no duplicate steps.

Lineage, as `mlflow.start_run` would record it: every run carries MLflow's context tags (`context_tags`: user,
source, git commit), each child run the data files its trial read as dataset inputs (`trial_datasets`: name,
file URI, content digest, context training / selection / report / english_check), and the study's parent run a
description (`describe_study`, mlflow.note.content: what it asks, and at its end the best trial).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION  # Ray's epoch counter: the step of every logged metric

from study.errors import DataError, TrackingError

if TYPE_CHECKING:  # settings imports this module
    from study.orchestration.settings import StudySettings

# MLflow prints a "View run ... at: <tracking URI>" line whenever a run ends: with a password in the URI that
# line leaks it to the terminal and to logs, and a study ends dozens of runs; it prints its own runs-table link
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

EXPERIMENT = "xling-robust"
TRIAL_TAG = "ray.trial_id"
PARENT_TAG = "mlflow.parentRunId"


def redact(uri: str) -> str:
    """A tracking URI safe to print: credentials removed."""
    return re.sub(r"//[^/@]*@", "//***@", uri or "")


def has_password(uri: str) -> bool:
    """Whether a URI carries a password (user:password@host); a bare user@host does not."""
    from urllib.parse import urlsplit

    try:
        return urlsplit(uri).password is not None
    except ValueError:
        return True  # unparsable: treat as secret


_CONTEXT_TAGS: dict[str, str] = {}


def context_tags() -> dict[str, str]:
    """The run-context tags `mlflow.start_run` sets and `MlflowClient.create_run` does not (mlflow.user,
    mlflow.source.name / .type, mlflow.source.git.commit / .branch / .repoURL, $MLFLOW_RUN_CONTEXT's), resolved
    once per process by MLflow's context registry. Every run is created by the driver (parents, and children in
    `ChildRunLogger`), so these describe the driver: its user, its command, its checkout. The commit is the
    project's own checkout (the code that ran), whatever the entry point; a repository URL loses credentials."""
    if not _CONTEXT_TAGS:
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.git_utils import get_git_commit
        from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

        tags = {key: str(value) for key, value in resolve_tags().items()}
        commit = get_git_commit(os.path.dirname(os.path.abspath(__file__)))
        if commit:
            tags[MLFLOW_GIT_COMMIT] = commit
        if MLFLOW_GIT_REPO_URL in tags:
            tags[MLFLOW_GIT_REPO_URL] = redact(tags[MLFLOW_GIT_REPO_URL])
        _CONTEXT_TAGS.update(tags)
    return dict(_CONTEXT_TAGS)


def credentials_to_env(uri: str) -> str:
    """`uri` without the user:password@ of an http(s) tracking URI, which go to MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD in this process (as MLflow's client reads them) instead. MLflow builds every request
    URL from the URI and quotes it in its errors (a timeout, a refused connection, with a traceback): a password
    left in the URI reaches the terminal and the logs. MLFLOW_TRACKING_URI, when it held `uri`, is set to the URI
    without them too (the fluent API and the processes started from here read it)."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    if not (uri or "").startswith(("http://", "https://")) or "@" not in urlsplit(uri).netloc:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    if parts.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    clean = urlunsplit(parts._replace(netloc=host))
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


# parent run id -> tracking URI. The ChildRunLogger looks its URI up here instead of holding it: Ray Tune pickles
# its callbacks into the experiment's state (tuner.pkl), and a URI there could hold a password, and would win
# over a new --tracking-uri on resume. The driver registers the URI before every fit.
_TRACKING_URIS: dict[str, str] = {}


def use_tracking_uri(parent_run_id: str, uri: str) -> None:
    _TRACKING_URIS[parent_run_id] = uri


ENDED_TAG = "ended_by"  # why a child run was ended by the study rather than by its trial


def end_running_children(client, experiment: str, parent: str, status: str, reason: str | None = None) -> int:
    """Set every child run of `parent` still RUNNING to `status` (an interrupted or failed study leaves no run
    RUNNING), with `reason` as its ENDED_TAG; returns how many."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and "
                                                          "attributes.status = 'RUNNING'", max_results=5000)
    for run in runs:
        if reason:
            client.set_tag(run.info.run_id, ENDED_TAG, reason)
        client.set_terminated(run.info.run_id, status=status)
    return len(runs)


# a resumed study first ends the child runs its killed driver left RUNNING; Tune then continues those of the trials
# in its last snapshot (their runs RUNNING again, the tag removed), and the others stay KILLED with this reason
DRIVER_LOST = ("the study's driver stopped without ending this trial; a trial missing from Tune's last snapshot "
               "is run again under a new trial id, not continued here")


def experiment_url(uri: str, experiment: str) -> str:
    """The link that opens the experiment's runs table (MLflow 3 otherwise opens its GenAI overview)."""
    from urllib.parse import urlsplit

    base = "http://127.0.0.1:5000"  # `mlflow ui`'s default, for an embedded store
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)  # without any user:password@ (a link is printed, and may be pasted anywhere)
        base = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path.rstrip('/')}"
    return f"{base}/#/experiments/{experiment}/runs?workflowType=machine_learning"


def default_tracking_uri(study_dir: Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0, search_timeout: float = 30.0) -> None:
    """Fail early, with one line, when a tracking server does not answer or refuses our credentials
    (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, as MLflow's client sends them)."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    base = uri.rstrip("/")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    try:
        requests.get(base + "/health", timeout=timeout).raise_for_status()
    except requests.RequestException as err:
        raise TrackingError(f"tracking server {redact(uri)} is unreachable ({type(err).__name__})") from None
    try:  # a basic-auth server's first logins are slow (password hashing): a longer wait than /health's
        answer = requests.get(base + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                              auth=(user, password or "") if user else None, timeout=search_timeout)
    except requests.RequestException as err:
        raise TrackingError(f"tracking server {redact(uri)} answers /health but not a search "
                            f"({type(err).__name__} after {search_timeout:g} s)") from None
    if answer.status_code in (401, 403):
        who = f"user {user!r}" if user else "no credentials"
        raise TrackingError(f"tracking server {redact(uri)} refused {who} (HTTP {answer.status_code}): set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if not answer.ok:
        raise TrackingError(f"tracking server {redact(uri)} answered HTTP {answer.status_code} to a search")


def client_for(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=credentials_to_env(uri))


def open_experiment(uri: str, study_dir: Path):
    """(client, experiment id): the store at `uri` opened (a new SQLite store creates its schema), the
    project's experiment in it."""
    client = client_for(uri)
    return client, experiment_id(client, study_dir, uri)


def experiment_id(client, study_dir: Path, uri: str) -> str:
    """The project's experiment, created on first use (with the embedded store, artifacts next to it)."""
    from mlflow.exceptions import MlflowException

    try:
        existing = client.get_experiment_by_name(EXPERIMENT)
        if existing:
            return existing.experiment_id
        location = None if uri.startswith("http") else (Path(study_dir).resolve() / "mlartifacts").as_uri()
        # a training experiment: without this tag MLflow 3's UI opens it in its GenAI view
        return client.create_experiment(EXPERIMENT, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException as err:
        if err.get_http_status_code() in (401, 403):  # an authenticated server, and a user without a grant
            raise TrackingError(f"tracking server {redact(uri)} refused access to experiment '{EXPERIMENT}' "
                                f"(HTTP {err.get_http_status_code()}): ask its admin for EDIT permission") from None
        raise


def check_parent_run(client, parent: str, uri: str) -> None:
    """A resumed study's parent run must be in this store (else the URI is not the one the study logged to)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(parent)
    except MlflowException:
        raise TrackingError(f"the study's parent run {parent} is not in {redact(uri)}: pass the --tracking-uri "
                            "(or MLFLOW_TRACKING_URI) the study logged to") from None


def numeric_metrics(result: dict) -> dict[str, float]:
    """The figures of a Ray result worth logging (numbers, the per-language ones unpacked, minus Ray's
    bookkeeping)."""
    from study.evaluation.robustness import unpack_result

    result = unpack_result(result)
    skip = {TRAINING_ITERATION, "time_this_iter_s", "time_total_s", "timestamp", "pid", "time_since_restore",
            "iterations_since_restore", "done"}
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in skip}


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    entries = [Metric(k, v, now, step) for k, v in metrics.items()]
    for start in range(0, len(entries), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=entries[start : start + 900])


def log_params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    entries = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for start in range(0, len(entries), 90):
        client.log_batch(run_id, params=entries[start : start + 90])


# ----------------------------------------------------------------------------- lineage: the data a trial reads
DATA_CONTEXT = "mlflow.data.context"  # the input tag `mlflow.log_input(dataset, context=...)` sets
# what a trial reads, by context: "training" its English training pairs (whole files); "english_check" the English
# test pairs every evaluation measures (whole files); and a Tatoeba split ("selection" every epoch, "report" at the
# last one): the split's half of each study language's Tatoeba pair and of the translated STS-B dev files
WHOLE_FILE_CONTEXTS = ("training", "english_check")


def trial_datasets(config, context: str) -> list:
    """The `mlflow.entities.DatasetInput`s of one context of a trial (`config`: its TrialConfig): one dataset per
    file (name: its path in the data directory, with the split read, for a Tatoeba split; source: its file URI;
    digest: `study.evaluation.data.file_digest`), tagged mlflow.data.context. Only the files the trial reads: its
    evaluation languages, its translated STS-B languages, the English check if it runs. Called in the driver: the
    digests describe the driver's copy of the data directory (on a cluster whose nodes share no disk, each node reads
    its own copy). Hub data (no data directory): none."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    from study.evaluation import data

    try:
        data_dir = data.resolve_data_dir(config.data_dir) if config.data_dir else data.resolve_data_dir()
    except DataError:  # the trial fails on it with its own message; the study goes on
        return []
    if context == "training":
        files = data.english_pair_files("train", data_dir)
    elif context == "english_check":
        files = data.english_pair_files("test", data_dir) if config.eval.english_check else []
    elif context in data.SPLITS:
        files = [f for lang in config.eval.langs for f in data.tatoeba_files(lang, data_dir)]
        files += [f for lang in config.eval.xsts_langs for f in data.crosslingual_sts_files(lang, data_dir)]
    else:
        raise ValueError(f"unknown data context {context!r}")
    inputs = []
    for path in dict.fromkeys(files):  # stsb-en-dev.csv once, however many translations
        if not path.is_file():  # the trial fails on it with its own message
            continue
        name = path.relative_to(data_dir).as_posix()
        if context not in WHOLE_FILE_CONTEXTS and context != "all":
            name = f"{name} ({context} half)"
        source = get_dataset_source_from_json(json.dumps({"uri": path.resolve().as_uri()}), source_type="local")
        dataset = MetaDataset(source, name=name, digest=data.file_digest(path))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(DATA_CONTEXT, context)]))
    return inputs


def log_trial_inputs(client, run_id: str, config, contexts) -> None:
    """Record on a trial's run the datasets of `contexts` (`trial_datasets`); logging one again adds nothing."""
    inputs = [entry for context in dict.fromkeys(contexts) for entry in trial_datasets(config, context)]
    for start in range(0, len(inputs), 500):  # MLflow takes at most 1000 datasets per call
        client.log_inputs(run_id, datasets=inputs[start : start + 500])


class ChildRunLogger(Callback):
    """Ray Tune callback: a nested MLflow child run per trial, written from the driver. The run's parameters
    are the trial's `TrialConfig` (`mlflow_params`), its metrics every reported figure, one step per epoch."""

    def __init__(self, tracking_uri: str, experiment: str, parent_run_id: str):
        self.experiment, self.parent = experiment, parent_run_id
        use_tracking_uri(parent_run_id, tracking_uri)
        self._client = None
        self._runs: dict[str, str] = {}       # trial id -> run id
        self._last_step: dict[str, int] = {}  # trial id -> last step logged
        self._nodes: dict[str, str] = {}      # trial id -> the Ray node it last ran on

    @property
    def uri(self) -> str:
        try:
            return _TRACKING_URIS[self.parent]
        except KeyError:
            raise RuntimeError(f"no tracking URI registered for parent run {self.parent}: call "
                               "tracking.use_tracking_uri before Tuner.fit") from None

    @property
    def client(self):
        if self._client is None:
            self._client = client_for(self.uri)
        return self._client

    def __getstate__(self):  # Ray pickles callbacks with the experiment: no client, and no URI (see above)
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def run_for(self, trial) -> str:
        """The trial's child run: found again (resume, restore) or created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = self.client.search_runs(
            [self.experiment], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent}' and "
                                             f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "epoch")  # the trainable's own epoch counter
            self._last_step[trial_id] = max((m.step for m in history), default=0)
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            if ENDED_TAG in found[0].data.tags:  # ended at a resume (DRIVER_LOST), and continued after all
                self.client.delete_tag(run_id, ENDED_TAG)
        else:
            from trainables.config import TrialConfig

            config = TrialConfig.from_dict(trial.config)
            name = f"{trial_id} r={config.ratio:.2f} eps={config.epsilon:.3g}"
            if config.replica:
                name = f"{config.replica} seed={config.seed} {name}"
            run = self.client.create_run(self.experiment, run_name=name,
                                         tags={**context_tags(), PARENT_TAG: self.parent, TRIAL_TAG: trial_id,
                                               "ray.trial_name": str(trial)})
            run_id = run.info.run_id
            log_params(self.client, run_id, config.mlflow_params())
            # what every epoch reads; the report split's files once the trial reports on them (on_trial_result)
            log_trial_inputs(self.client, run_id, config, ("training", config.eval.split, "english_check"))
            self._last_step[trial_id] = 0
        self._runs[trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id, step = self.run_for(trial), int(result.get(TRAINING_ITERATION, 0))
        if step <= self._last_step.get(trial.trial_id, 0):
            return  # this epoch was logged before the trial was restored
        metrics = numeric_metrics(result)
        log_metrics(self.client, run_id, metrics, step)
        if any(key.startswith("report.") for key in metrics):  # the last epoch read the report split too
            from trainables.config import TrialConfig

            config = TrialConfig.from_dict(trial.config)
            if config.eval.split != "report":  # (else logged with the run)
                log_trial_inputs(self.client, run_id, config, ("report",))
        node = result.get("node_id")
        if node and self._nodes.get(trial.trial_id) != node:  # once per trial, again if it moved (a restart)
            self.client.set_tag(run_id, "ray.node_id", node)
            self._nodes[trial.trial_id] = node
        self._last_step[trial.trial_id] = step

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_for(trial)
        epochs_done = (trial.last_result or {}).get(TRAINING_ITERATION, 0)
        if epochs_done < trial.config.get("epochs", 1):
            self.client.set_tag(run_id, "stopped_early", f"after epoch {epochs_done} (ASHA)")
            self._end(run_id, trial, "KILLED")
        else:
            self._end(run_id, trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_for(trial)
        self.client.set_tag(run_id, "failure_reason", failure_reason(trial))
        self._end(run_id, trial, "FAILED")

    def _end(self, run_id: str, trial, status: str) -> None:
        # how often Ray restarted the trial from its checkpoint after a crash (FailureConfig)
        self.client.set_tag(run_id, "ray.num_failures", str(getattr(trial, "num_failures", 0)))
        self.client.set_terminated(run_id, status=status)


def failure_reason(trial) -> str:
    """The last meaningful line of the trial's error (e.g. 'TrainingDiverged: training loss became nan ...')."""
    text = ""
    try:
        # the driver-side copy first: get_error() reads the storage copy, which only appears once Tune syncs
        local = Path(trial.error_file) if trial.error_file else None
        text = local.read_text() if local and local.is_file() else trial.get_error() or ""
    except Exception:  # error file unavailable
        pass
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "Diverged" in line:
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"


def start_parent_run(client, experiment: str, name: str, params: dict, tags: dict) -> str:
    run = client.create_run(experiment, run_name=name, tags={**context_tags(), **tags})
    log_params(client, run.info.run_id, {k: str(v)[:6000] for k, v in params.items()})
    return run.info.run_id


# ----------------------------------------------------------------------------- the study's description
NOTE_TAG = "mlflow.note.content"  # a run's description (Markdown) in MLflow's UI
OBJECTIVE_TEXT = {
    "robust": "`objective.robust`, attacked Tatoeba retrieval accuracy (mean over the low-resource group)",
    "clean": "`objective.clean`, clean Tatoeba retrieval accuracy (mean over the low-resource group)",
    "pareto": "the Pareto front of clean accuracy, attacked accuracy and cross-lingual similarity (ranked by "
              "`objective.robust`)",
}


def _searched(space, key: str) -> str:
    """How a search space sets `key`: its distribution, or the value every trial takes."""
    from search_spaces import Choice, IntRange, LogUniform, Uniform
    from trainables.config import DEFAULTS

    spec = space.space.get(key)
    if isinstance(spec, (Uniform, IntRange)):
        return f"uniform on [{spec.low:g}, {spec.high:g}]"
    if isinstance(spec, LogUniform):
        return f"log-uniform on [{spec.low:g}, {spec.high:g}]"
    if isinstance(spec, Choice):
        return "one of " + ", ".join(map(str, spec.options))
    return f"fixed at {space.fixed.get(key, getattr(DEFAULTS, key))}"


def study_note(settings: StudySettings, study_dir: Path, best: dict | None = None, answered: bool = False) -> str:
    """The parent run's description (Markdown): what the study asks (space, r and epsilon ranges, objective,
    constraint, budget, languages, data) and where it answers (the report); `answered`: with the best trial's
    line (`best`, as study.analysis.trials gives it; None: no trial met the constraint)."""
    from search_spaces import load_space
    from study.evaluation.robustness import objective_metric

    space = load_space(settings.space, settings.ranges)
    report = Path(study_dir).resolve() / "report" / "summary.md"
    method = settings.method or _searched(space, "method").removeprefix("fixed at ")
    lines = [
        f"## Study `{Path(study_dir).name}`: search space `{settings.space}`",
        "",
        f"Hybrid-batch robust fine-tuning of `{settings.model}` on English pairs, for zero-shot cross-lingual "
        "retrieval: a share **r** of every batch is made adversarial, by an attack of radius **epsilon** on the "
        "token embeddings.",
        "",
        f"**Asks:** which r and epsilon maximise {OBJECTIVE_TEXT.get(settings.objective, settings.objective)} "
        "on the selection half of Tatoeba, among the trials whose cross-lingual similarity (translated STS-B) is "
        "no worse than the untrained encoder's?",
        "",
        f"- **Space**: r {_searched(space, 'ratio')}, epsilon {_searched(space, 'epsilon')}; method {method}",
        f"- **Budget** `{settings.budget}`: {settings.num_samples} trials (the r = 0 baseline first) x "
        f"{settings.epochs} epoch(s), Optuna TPE"
        + (", ASHA early stopping" if settings.objective != "pareto" and settings.epochs > 1 else ""),
        f"- **Languages**: {', '.join(settings.eval['langs'])}",
        f"- **Data**: `{settings.data_dir or 'hub'}`; each trial's run lists the files it read as dataset "
        "inputs (sha256 digest of the driver's copy, context training / selection / report / english_check)",
        f"- **Report**: `{report}`, and this run's artifacts under `report/`",
    ]
    if answered:
        key = objective_metric(settings.objective)
        if best is None:
            lines += ["", "**Answer:** no finished trial met the constraint (see the report)."]
        else:
            params, metrics = best["params"], best["metrics"]
            lines += ["", f"**Answer:** trial `{best['name']}` (run `{best['run_id']}`): r = "
                          f"{float(params.get('ratio', 0)):.3g}, epsilon = {float(params.get('epsilon', 0)):.3g}; "
                          f"{key} {metrics.get(key, float('nan')):.4f} on the selection half (report-half figures "
                          "in the report)."]
    return "\n".join(lines)


def describe_study(client, parent: str, settings: StudySettings, study_dir: Path, best: dict | None = None,
                   answered: bool = False) -> None:
    """Set the study's description on its parent run; `answered`, once the trials are done: with the best
    trial's line (`best`, `study.analysis.trials.best_trial` read back from MLflow; None: no trial met the
    constraint)."""
    client.set_tag(parent, NOTE_TAG, study_note(settings, study_dir, best, answered=answered))


def git_commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(__file__)).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
