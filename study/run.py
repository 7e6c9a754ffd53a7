"""Run a study: `python -m study.run --space hybrid_ratio`.

Ray Tune runs the trials (local Ray by default, `--address` for a cluster), Optuna's TPE proposes the
configurations (the clean baseline r = 0 always first), ASHA stops weak trials early (single objective),
and every trial becomes a nested MLflow child run of the study's parent run. The untrained encoder is
evaluated once as the reference row. At the end: a report of the best trials against the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from study.errors import UsageError, cli_main

# The classic reporter shows one live table with the columns we choose (r, epsilon, epoch, objective).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")
# one checkpoint per epoch is what we want; Ray warns about it on every short epoch
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

OBJECTIVES = {"robust": "objective.robust", "clean": "objective.clean"}
PARETO_METRICS = ["objective.clean", "objective.robust"]
STUDY_FILE = "study.json"


@dataclass
class Budget:
    """How big a study is. `eval` feeds `study.evaluate.EvalConfig` (fixed for the whole study)."""

    num_samples: int
    epochs: int
    max_train_pairs: int | None
    batch_size: int
    cpus_per_trial: float
    gpus_per_trial: float
    eval: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # trial config overrides, unless the space searches the key


BUDGETS = {
    # a handful of tiny trials: checks that everything runs, in minutes on a laptop CPU
    "smoke": Budget(3, 1, 32, 16, 1, 0, dict(langs=["swh", "uig", "deu"], max_sentences=16, radii=(0.05, 0.2),
                                             attack_steps=1, max_english_pairs=32),
                    train=dict(lr=1e-4, warmup_ratio=0.0)),  # two steps: a rate that moves the weights
    # a real but small study on a CPU-only machine (~15 minutes on 2 cores)
    "cpu": Budget(6, 2, 192, 32, 1, 0, dict(langs=["swh", "hye", "mal", "uig", "deu", "cmn"], max_sentences=48,
                                            radii=(0.05, 0.2), attack_steps=2, max_english_pairs=128)),
    # GPUs: the full English training data, every sentence, the default groups and radii
    "gpu": Budget(32, 3, None, 64, 4, 1, dict(langs=None, max_sentences=None, attack_steps=3)),
}


def parse_args(argv):
    from search_spaces import SPACE_NAMES

    p = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.split("\n")[0])
    p.add_argument("--space", default="hybrid_ratio", help=f"search space: {', '.join(SPACE_NAMES)}")
    p.add_argument("--list-spaces", action="store_true", help="list the search spaces and exit")
    p.add_argument("--budget", default="auto", help="smoke, cpu, gpu, or auto (gpu when GPUs are visible)")
    p.add_argument("--num-samples", type=int, help="trials, the r = 0 baseline included (default: budget's)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: budget's)")
    p.add_argument("--objective", default="robust", choices=["robust", "clean", "pareto"],
                   help="robust: mean attacked accuracy over the low-resource group (default); clean; "
                        "pareto: both, multi-objective")
    p.add_argument("--range", action="append", default=[], metavar="KEY=LOW,HIGH",
                   help="narrow a searched key, e.g. --range ratio=0,0.5 --range epsilon=0.05,0.5 (repeatable)")
    p.add_argument("--method", help="attack method for every trial (pgd, fgsm, freelb, rs-rp), "
                                    "unless the space searches it")
    p.add_argument("--langs", help="evaluation languages, comma-separated codes (default: budget's)")
    p.add_argument("--group", choices=["low", "high", "all"], help="evaluation language group")
    p.add_argument("--model", default="multilingual-e5-small", help="model directory or hub id")
    p.add_argument("--data-dir", help="data directory (default: $STUDY_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="study directory (default: studies/<space>-<time>)")
    p.add_argument("--resume", metavar="STUDY_DIR", help="continue an interrupted study")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: local Ray")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU between trials, e.g. 0.5")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the resources allow)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or an "
                                          "embedded store in the study directory)")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="Ray dashboard host for a local Ray")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- validation (before any write)
def validate(args) -> dict:
    """Check every input; return the study settings. Raises UsageError, writes nothing."""
    from search_spaces import load_space
    from study.data import resolve_data_dir
    from study.languages import resolve_languages
    from trainables.attacks import ATTACKS

    ranges = {}
    for text in args.range:
        key, _, bounds = text.partition("=")
        try:
            low, high = (float(x) for x in bounds.split(","))
        except ValueError:
            raise UsageError(f"--range {text!r}: expected KEY=LOW,HIGH, e.g. ratio=0,0.5") from None
        ranges[key.strip()] = (low, high)
    try:
        space = load_space(args.space, ranges)
    except ValueError as err:
        raise UsageError(str(err)) from None
    budget_name = args.budget
    if budget_name == "auto":
        import torch

        budget_name = "gpu" if torch.cuda.is_available() else "cpu"
    if budget_name not in BUDGETS:
        raise UsageError(f"unknown budget '{args.budget}' (smoke, cpu, gpu or auto)")
    budget = BUDGETS[budget_name]
    for name in ("num_samples", "epochs", "max_concurrent"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.method and args.method not in ATTACKS:
        raise UsageError(f"unknown attack method '{args.method}' (one of {', '.join(ATTACKS)})")
    try:
        langs = (resolve_languages(args.langs, args.group) if (args.langs or args.group)
                 else budget.eval.get("langs") or resolve_languages())
    except ValueError as err:
        raise UsageError(str(err)) from None
    data_dir = resolve_data_dir(args.data_dir)
    eval_config = {**budget.eval, "langs": list(langs), "seed": args.seed}
    from study.evaluate import EvalConfig

    EvalConfig(**eval_config)  # radii etc. checked here
    return dict(space=space.name, ranges=ranges, budget=budget_name, objective=args.objective, seed=args.seed,
                num_samples=args.num_samples or budget.num_samples, epochs=args.epochs or budget.epochs,
                method=args.method, model=args.model, data_dir=str(data_dir) if data_dir else None,
                eval=eval_config, max_train_pairs=budget.max_train_pairs, batch_size=budget.batch_size,
                train=budget.train,
                cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else budget.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else budget.gpus_per_trial,
                max_concurrent=args.max_concurrent)


def check_data(settings: dict) -> None:
    """Read every file the study needs once, so a missing or malformed one fails now, not mid-study."""
    from study.data import load_english_pairs, load_tatoeba, resolve_data_dir

    data_dir = resolve_data_dir(settings["data_dir"]) if settings["data_dir"] else resolve_data_dir()
    for lang in settings["eval"]["langs"]:
        load_tatoeba(lang, data_dir)
    for split in ("train", "test"):
        load_english_pairs(split, data_dir)


def new_study_dir(args, space: str) -> Path:
    out = Path(args.out) if args.out else Path("studies") / f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and (out / STUDY_FILE).exists():
        raise UsageError(f"{out} already holds a study: use --resume {out}, or another --out")
    parent = out.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"output directory {out} is not writable ({parent} is "
                         f"{'not a directory' if not parent.is_dir() else 'read-only'})")
    return out


def load_study(path: str) -> dict:
    study_file = Path(path) / STUDY_FILE
    if not study_file.is_file():
        raise UsageError(f"{path} is not a study directory (no {STUDY_FILE})")
    try:
        return json.loads(study_file.read_text())
    except json.JSONDecodeError:
        raise UsageError(f"{study_file} is corrupt (not JSON)") from None


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


# ----------------------------------------------------------------------------- Ray
def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when nothing listens at a host:port Ray address
    (ray.init would retry for many minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"cannot connect to Ray at {address}: {err.strerror or type(err).__name__}") from None


def start_ray(address: str | None, dashboard_host: str):
    import logging

    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    if address:
        check_ray_address(address)
    try:
        if address:
            context = ray.init(address=address, logging_level=logging.WARNING)
        else:
            context = ray.init(include_dashboard=True, dashboard_host=dashboard_host, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        # a wrong or missing token looks like any other failed connection (after ~20 s of retries)
        hint = " (a cluster with token auth needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH)" if address else ""
        raise UsageError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                         f"{str(err).splitlines()[0][:200]}{hint}") from None
    url = getattr(context, "dashboard_url", None)
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", file=sys.stderr)
    return context


def _reference_task(model: str, data_dir: str | None, eval_config: dict) -> dict:
    """The untrained encoder, evaluated once per study with the trials' evaluation (a Ray task)."""
    from study.data import resolve_data_dir
    from study.encoding import Encoder
    from study.evaluate import EvalConfig, evaluate_encoder
    from study.models import resolve_model

    encoder = Encoder.load(resolve_model(model))
    directory = resolve_data_dir(data_dir) if data_dir else resolve_data_dir()
    return evaluate_encoder(encoder, EvalConfig(**eval_config), directory)


def reference_row(settings: dict, study_dir: Path) -> dict:
    path = study_dir / "reference.json"
    if path.is_file():
        return json.loads(path.read_text())
    import ray

    print("evaluating the untrained encoder (reference row) ...", file=sys.stderr)
    # before the trials start, the reference may use every core of one node (up to 8); a task asking for
    # more CPUs than any single node has would never be scheduled
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    cpus = min(8, max(settings["cpus_per_trial"], largest_node))
    task = ray.remote(num_cpus=cpus, num_gpus=settings["gpus_per_trial"])(_reference_task)
    result = ray.get(task.remote(settings["model"], settings["data_dir"], settings["eval"]))
    write_json(path, result)
    return result


# ----------------------------------------------------------------------------- Tune
def make_searcher(settings: dict, space, defaults: dict):
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    class PruningAwareOptunaSearch(OptunaSearch):
        """Ray's OptunaSearch tells Optuna a trial that ASHA stopped early is COMPLETE, with the value of
        its last (early) epoch, as if that were its final score. Here it is told PRUNED instead, with its
        per-epoch values, which is what Optuna's samplers expect of a trial stopped early."""

        def on_trial_complete(self, trial_id, result=None, error=False):
            epochs = (result or {}).get("config", {}).get("epochs", settings["epochs"])
            stopped_early = result and not error and result.get("training_iteration", epochs) < epochs
            if stopped_early and not isinstance(self.metric, list) and trial_id not in self._completed_trials:
                self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    baseline = space.baseline_point(defaults)
    sampler = optuna.samplers.TPESampler(seed=settings["seed"])
    if settings["objective"] == "pareto":
        searcher = PruningAwareOptunaSearch(metric=PARETO_METRICS, mode=["max", "max"], sampler=sampler,
                                            points_to_evaluate=[baseline])
    else:
        searcher = PruningAwareOptunaSearch(sampler=sampler, points_to_evaluate=[baseline])
    return ConcurrencyLimiter(searcher, max_concurrent=settings["max_concurrent"])


def trial_config(settings: dict, space) -> dict:
    config = {**space.to_tune(), "model": settings["model"], "data_dir": settings["data_dir"],
              "eval": settings["eval"], "seed": settings["seed"], "batch_size": settings["batch_size"],
              "max_train_pairs": settings["max_train_pairs"]}
    config.update({k: v for k, v in settings.get("train", {}).items() if k not in space.space})
    if "epochs" not in space.space:
        config["epochs"] = settings["epochs"]
    if settings["method"] and "method" not in space.space:
        config["method"] = settings["method"]
    return config


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def build_tuner(settings: dict, study_dir: Path, callback):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search_spaces import load_space
    from trainables.trainable import DEFAULT_CONFIG, train_hybrid

    space = load_space(settings["space"], settings.get("ranges"))
    trainable = tune.with_resources(train_hybrid, {"cpu": settings["cpus_per_trial"],
                                                   "gpu": settings["gpus_per_trial"]})
    reporter = tune.CLIReporter(
        parameter_columns={"ratio": "r", "epsilon": "epsilon", "method": "method"},
        metric_columns={"epoch": "epoch", "objective.robust": "robust", "objective.clean": "clean",
                        "train.loss": "loss"},
        max_report_frequency=30, sort_by_metric=True)
    run_config = tune.RunConfig(
        name="tune", storage_path=str((study_dir / "ray").resolve()), callbacks=[callback],
        progress_reporter=reporter, verbose=1,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        failure_config=tune.FailureConfig(max_failures=2))  # a crashed worker resumes from its checkpoint
    ray_path = study_dir.resolve() / "ray" / "tune"
    if tune.Tuner.can_restore(str(ray_path)):
        return tune.Tuner.restore(str(ray_path), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False)
    if settings["objective"] == "pareto":
        tune_config = tune.TuneConfig(search_alg=make_searcher(settings, space, DEFAULT_CONFIG),
                                      num_samples=settings["num_samples"], trial_dirname_creator=_trial_dirname)
    else:
        epochs = settings["epochs"]
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(epochs, 1), grace_period=1,
                                  reduction_factor=2) if epochs > 1 else None
        tune_config = tune.TuneConfig(metric=OBJECTIVES[settings["objective"]], mode="max",
                                      search_alg=make_searcher(settings, space, DEFAULT_CONFIG),
                                      scheduler=scheduler, num_samples=settings["num_samples"],
                                      trial_dirname_creator=_trial_dirname)
    return tune.Tuner(trainable, param_space=trial_config(settings, space), tune_config=tune_config,
                      run_config=run_config)


# ----------------------------------------------------------------------------- main
@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_spaces:
        from search_spaces import SPACE_NAMES, load_space

        for name in SPACE_NAMES:
            print(f"{name:<14} {load_space(name).description}")
        return 0

    from study import tracking

    if args.resume:
        study_dir = Path(args.resume)
        saved = load_study(args.resume)
        settings = saved["settings"]
        uri = args.tracking_uri or saved.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    else:
        settings = validate(args)
        study_dir = new_study_dir(args, settings["space"])
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    tracking.check_reachable(uri or "")
    check_data(settings)

    from study.models import resolve_model

    resolve_model(settings["model"])  # prepares the default encoder once (with progress)
    start_ray(args.address, args.dashboard_host)
    if settings["max_concurrent"] is None:
        import ray

        cpus = ray.cluster_resources().get("CPU", 1)
        gpus = ray.cluster_resources().get("GPU", 0)
        by_cpu = int(cpus // settings["cpus_per_trial"]) if settings["cpus_per_trial"] else 64
        by_gpu = int(gpus // settings["gpus_per_trial"]) if settings["gpus_per_trial"] else 64
        settings["max_concurrent"] = max(1, min(by_cpu, by_gpu, settings["num_samples"]))

    study_dir.mkdir(parents=True, exist_ok=True)
    uri = uri or tracking.default_tracking_uri(study_dir)
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, study_dir, uri)
    if args.resume:
        parent = saved["parent_run_id"]
        client.update_run(parent, status="RUNNING")
    else:
        parent = tracking.start_parent_run(
            client, experiment, name=f"{settings['space']} {study_dir.name}",
            params={**{k: v for k, v in settings.items() if k != "eval"},
                    **{f"eval.{k}": v for k, v in settings["eval"].items()}, "git_commit": tracking.git_commit()},
            tags={"study_dir": str(study_dir.resolve()), "space": settings["space"], "budget": settings["budget"],
                  "objective": settings["objective"]})
        # the tracking URI is kept for --resume only when it carries no credentials
        write_json(study_dir / STUDY_FILE, dict(settings=settings, parent_run_id=parent, experiment_id=experiment,
                                                tracking_uri=uri if "@" not in uri else None,
                                                created=time.strftime("%Y-%m-%d %H:%M:%S")))
    print(f"study {study_dir}  space {settings['space']}  budget {settings['budget']}  "
          f"{settings['num_samples']} trials x {settings['epochs']} epochs  objective {settings['objective']}",
          file=sys.stderr)
    print(f"MLflow: {tracking.redact(uri)}  (parent run {parent})", file=sys.stderr)

    reference = reference_row(settings, study_dir)
    tracking.log_metrics(client, parent, {f"reference.{k}": v for k, v in reference["metrics"].items()}, 0)

    callback = tracking.ChildRunLogger(uri, experiment, parent)
    start = time.time()
    results = build_tuner(settings, study_dir, callback).fit()
    seconds = time.time() - start
    errors = [r for r in results if r.error]
    print(f"\n{len(results)} trials in {seconds / 60:.1f} min ({len(errors)} failed)", file=sys.stderr)

    from study.report import build_report

    build_report(study_dir, client=client, print_table=True)
    client.log_metric(parent, "study.minutes", seconds / 60)
    client.set_terminated(parent, status="FINISHED")
    if uri.startswith("sqlite:"):
        print(f"\nOpen the trials in the MLflow UI:\n  mlflow ui --backend-store-uri {uri}")
    else:
        print(f"\nThe trials are in MLflow at {tracking.redact(uri)} (parent run {parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
