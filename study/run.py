"""Run a study: `python -m study.run --space hybrid_ratio`.

Ray Tune runs the trials (local Ray by default, `--address` for a cluster), Optuna's TPE proposes the
configurations (the clean baseline r = 0 always first), ASHA stops weak trials early (single objective),
and every trial becomes a nested MLflow child run of the study's parent run. The untrained encoder is
evaluated once as the reference row. At the end: a report of the best trials against the baseline.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from search_spaces import SPACE_NAMES, load_space
from study import tracking
from study.budgets import resolve_budget
from study.data import load_english_pairs, load_tatoeba, resolve_data_dir
from study.errors import ConfigError, UsageError, cli_main
from study.languages import resolve_languages
from study.models import check_model
from study.raycluster import (
    cluster_has_gpus,
    default_max_concurrent,
    reference_row,
    require_shared_storage,
    start_ray,
)
from study.reporting import build_report
from study.robustness import OBJECTIVES, EvalConfig
from study.studydir import (
    check_storage,
    load_study,
    new_study_dir,
    ray_storage,
    save_study,
    tracking_record,
    tracking_uri,
)
from study.trials import load_trials
from study.tuning import study_tuner
from trainables.attacks import ATTACKS
from trainables.synonyms import load_wordnet


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.split("\n")[0])
    p.add_argument("--space", help=f"search space: {', '.join(SPACE_NAMES)} (default: hybrid_ratio)")
    p.add_argument("--list-spaces", action="store_true", help="list the search spaces and exit")
    p.add_argument("--budget", help="smoke, cpu, gpu, or auto (default: gpu when the Ray cluster has GPUs on any "
                                    "node, else cpu)")
    p.add_argument("--num-samples", type=int, help="trials, the r = 0 baseline included (default: budget's)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: budget's)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="robust: mean attacked accuracy over the low-resource group (default); clean; "
                        "pareto: both, multi-objective")
    p.add_argument("--range", action="append", default=[], metavar="KEY=LOW,HIGH",
                   help="narrow a searched key, e.g. --range ratio=0,0.5 --range epsilon=0.05,0.5 (repeatable)")
    p.add_argument("--method", help="attack method for every trial (pgd, fgsm, freelb, rs-rp, rs-da), "
                                    "unless the space searches it")
    p.add_argument("--langs", help="evaluation languages, comma-separated codes (default: budget's)")
    p.add_argument("--group", choices=["low", "high", "all"], help="evaluation language group")
    p.add_argument("--model", help="model directory or hub id (default: multilingual-e5-small)")
    p.add_argument("--data-dir", help="data directory (default: $STUDY_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="study directory (default: studies/<space>-<time>)")
    p.add_argument("--resume", metavar="STUDY_DIR", help="continue an interrupted study, with its own settings")
    p.add_argument("--seed", type=int, help="study seed (default 0)")
    p.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT of the head's GCS); default: a "
                                     "local Ray. Ray Client (ray://) is not supported: submit the study as a job")
    p.add_argument("--storage-path", metavar="URI",
                   help="where trials keep checkpoints and Tune its state: s3://BUCKET/PREFIX, gs://..., or a path "
                        "every node mounts; needed on a cluster whose nodes share no disk (default: STUDY_DIR/ray)")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU between trials, e.g. 0.5")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the resources allow)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or an "
                                          "embedded store in the study directory); credentials go in "
                                          "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="Ray dashboard host for a local Ray")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- validation (before any write)
def validate(args, cluster_has_gpus: bool | None = None) -> dict:
    """Check every input; return the study settings. Raises an InputError, writes nothing. `--budget auto`
    needs `cluster_has_gpus` (known once Ray is up); without it, the settings are those of the cpu budget."""
    ranges = {}
    for text in args.range:
        key, _, bounds = text.partition("=")
        try:
            low, high = (float(x) for x in bounds.split(","))
        except ValueError:
            raise UsageError(f"--range {text!r}: expected KEY=LOW,HIGH, e.g. ratio=0,0.5") from None
        ranges[key.strip()] = (low, high)
    space = load_space(args.space or "hybrid_ratio", ranges)
    budget_name, budget = resolve_budget(args.budget or "auto", cluster_has_gpus)
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
    if "rs-da" in {args.method, space.fixed.get("method"), *getattr(space.space.get("method"), "options", ())}:
        load_wordnet()  # rs-da's synonyms: without WordNet, one line naming the package, before anything starts
    try:
        langs = (resolve_languages(args.langs, args.group) if (args.langs or args.group)
                 else budget.eval.get("langs") or resolve_languages())
    except ValueError as err:
        raise ConfigError(str(err)) from None
    data_dir = resolve_data_dir(args.data_dir)
    seed = args.seed if args.seed is not None else 0
    eval_config = {**budget.eval, "langs": list(langs), "seed": seed}
    EvalConfig(**eval_config)  # radii etc. checked here
    storage_path = check_storage(args.storage_path) if args.storage_path else None
    return dict(space=space.name, ranges=ranges, budget=budget_name, objective=args.objective or "robust",
                seed=seed, num_samples=args.num_samples or budget.num_samples, epochs=args.epochs or budget.epochs,
                method=args.method, model=args.model or "multilingual-e5-small",
                data_dir=str(data_dir) if data_dir else None,
                eval=eval_config, max_train_pairs=budget.max_train_pairs, batch_size=budget.batch_size,
                train=budget.train,
                cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else budget.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else budget.gpus_per_trial,
                max_concurrent=args.max_concurrent, storage_path=storage_path)


def check_data(settings: dict) -> None:
    """Read every file the study needs once, so a missing or malformed one fails now, not mid-study."""
    data_dir = resolve_data_dir(settings["data_dir"]) if settings["data_dir"] else resolve_data_dir()
    for lang in settings["eval"]["langs"]:
        load_tatoeba(lang, data_dir)
    for split in ("train", "test"):
        load_english_pairs(split, data_dir)


# flags that set up a new study; a resumed study keeps the settings it started with
SETTING_FLAGS = ("space", "budget", "num_samples", "epochs", "objective", "range", "method", "langs", "group", "model",
                 "data_dir", "out", "seed", "storage_path", "cpus_per_trial", "gpus_per_trial", "max_concurrent")


def refuse_new_settings_on_resume(args) -> None:
    given = [f"--{name.replace('_', '-')}" for name in SETTING_FLAGS if getattr(args, name) not in (None, [])]
    if given:
        raise UsageError(f"--resume continues a study with the settings it started with: {', '.join(given)} "
                         "cannot change (only --tracking-uri, --address and --dashboard-host may be given)")


def resume_command(study_dir: Path, args) -> str:
    """The exact command that continues this study, with the --address and --tracking-uri it was given
    (credentials in a URI replaced by ***: they belong in MLFLOW_TRACKING_USERNAME / _PASSWORD)."""
    command = f"python -m study.run --resume {study_dir}"
    if args.address:
        command += f" --address {args.address}"
    if args.tracking_uri:
        command += f" --tracking-uri {tracking.redact(args.tracking_uri)}"
    return command


def _sigterm_as_sigint(signum, frame):
    # Tune stops a run gracefully on SIGINT (trials checkpointed, state saved); a SIGTERM (a scheduler, a
    # closing terminal, `kill`) gets the same treatment instead of killing the driver mid-write
    signal.raise_signal(signal.SIGINT)


def most_common_failure(client, experiment: str, parent: str) -> str:
    from collections import Counter

    reasons = Counter(t["failure"] or "unknown error" for t in load_trials(client, experiment, parent)
                      if t["status"] == "FAILED")
    return f"{reasons.most_common(1)[0][0]} ({reasons.most_common(1)[0][1]} trials)" if reasons else "none recorded"


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list_spaces:
        for name in SPACE_NAMES:
            print(f"{name:<14} {load_space(name).description}")
        return 0

    if args.resume:
        refuse_new_settings_on_resume(args)
        study_dir = Path(args.resume)
        saved = load_study(study_dir)
        settings = saved["settings"]
        uri = tracking_uri(study_dir, saved, args.tracking_uri)
    else:
        settings = validate(args)  # every input checked before Ray starts
        study_dir = new_study_dir(args.out, settings["space"])
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    tracking.check_reachable(uri or "")
    check_data(settings)
    check_model(settings["model"])  # prepares the default encoder once (with progress); a bad one fails here
    start_ray(args.address, args.dashboard_host)
    require_shared_storage(settings.get("storage_path"), joined=bool(args.address))
    if settings["budget"] == "auto":  # decided by the cluster's resources, not by this machine's
        settings = validate(args, cluster_has_gpus())
    if settings["max_concurrent"] is None:
        settings["max_concurrent"] = default_max_concurrent(settings["cpus_per_trial"], settings["gpus_per_trial"],
                                                            settings["num_samples"], joined=bool(args.address))

    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the study directory {study_dir}: {err.strerror}") from None
    record = tracking_record(uri)
    uri = uri or tracking.default_tracking_uri(study_dir)
    client = tracking.client_for(uri)
    experiment = tracking.experiment_id(client, study_dir, uri)
    if args.resume:
        parent = saved["parent_run_id"]
        tracking.check_parent_run(client, parent, uri)
        client.update_run(parent, status="RUNNING")
    else:
        parent = tracking.start_parent_run(
            client, experiment, name=f"{settings['space']} {study_dir.name}",
            params={**{k: v for k, v in settings.items() if k != "eval"},
                    **{f"eval.{k}": v for k, v in settings["eval"].items()}, "git_commit": tracking.git_commit()},
            tags={"study_dir": str(study_dir.resolve()), "space": settings["space"], "budget": settings["budget"],
                  "objective": settings["objective"]})
        save_study(study_dir, dict(settings=settings, parent_run_id=parent, experiment_id=experiment,
                                   tracking=record, created=time.strftime("%Y-%m-%d %H:%M:%S")))
    print(f"study {study_dir}  space {settings['space']}  budget {settings['budget']}  "
          f"{settings['num_samples']} trials x {settings['epochs']} epochs  objective {settings['objective']}",
          file=sys.stderr)
    print(f"MLflow: {tracking.redact(uri)}  (parent run {parent})", file=sys.stderr)
    print(f"  runs table: {tracking.experiment_url(uri, experiment)}", file=sys.stderr)
    print(f"Ray storage (checkpoints, Tune state): {ray_storage(settings, study_dir)}", file=sys.stderr)

    signal.signal(signal.SIGTERM, _sigterm_as_sigint)
    start = time.time()
    try:
        reference = reference_row(settings, study_dir)
        tracking.log_metrics(client, parent, {f"reference.{k}": v for k, v in reference["metrics"].items()}, 0)
        callback = tracking.ChildRunLogger(uri, experiment, parent)  # registers the URI for a restored callback too
        results = study_tuner(settings, study_dir, callback).fit()
    except KeyboardInterrupt:  # a second Ctrl-C while Tune was stopping, or one before it started
        return end_interrupted(client, experiment, parent, study_dir, args)
    except BaseException:
        tracking.end_running_children(client, experiment, parent, "KILLED")
        client.set_terminated(parent, status="FAILED")
        print(f"\nthe study failed; continue it with:\n{resume_command(study_dir, args)}", file=sys.stderr)
        raise
    seconds = time.time() - start
    done = results.num_terminated + results.num_errors
    if done < len(results) or len(results) < settings["num_samples"]:  # Tune stopped on SIGINT
        return end_interrupted(client, experiment, parent, study_dir, args)
    print(f"\n{len(results)} trials in {seconds / 60:.1f} min ({results.num_errors} failed)", file=sys.stderr)
    client.log_metric(parent, "study.minutes", seconds / 60)
    if results.num_terminated == 0:
        client.set_terminated(parent, status="FAILED")
        print(f"error: no trial finished: {results.num_errors} of {len(results)} failed, most often with: "
              f"{most_common_failure(client, experiment, parent)}", file=sys.stderr)
        return 1
    build_report(study_dir, client=client, print_table=True)
    client.set_terminated(parent, status="FINISHED")
    if uri.startswith("sqlite:"):
        print(f"\nOpen the trials in the MLflow UI:\n  mlflow ui --backend-store-uri {uri}\n"
              f"  then {tracking.experiment_url(uri, experiment)}")
    else:
        print(f"\nThe trials are in MLflow: {tracking.experiment_url(uri, experiment)} (parent run {parent})")
    return 0


def end_interrupted(client, experiment: str, parent: str, study_dir: Path, args) -> int:
    """An interrupted study: its open child runs and the parent KILLED, the resume command last; exit 130."""
    import ray

    ray.shutdown()  # no trial's dying words forwarded by Ray's log monitor after the resume command
    stopped = tracking.end_running_children(client, experiment, parent, "KILLED")
    client.set_terminated(parent, status="KILLED")
    print(f"\ninterrupted: the study is saved ({stopped} running trials stopped); continue it with:",
          file=sys.stderr)
    print(resume_command(study_dir, args), file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
