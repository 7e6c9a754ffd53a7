"""Run a study: `python -m study.run --space hybrid_ratio`.

Ray Tune runs the trials (local Ray by default, `--address` for a cluster), Optuna's TPE proposes the
configurations (the clean baseline r = 0 always first), ASHA stops weak trials early (single objective),
and every trial becomes a nested MLflow child run of the study's parent run. The untrained encoder is
evaluated once as the reference row. At the end: a report of the best trials against the baseline.

Ctrl-C, SIGTERM, `ray job stop` and deleting a RayJob stop a study cleanly: Tune stops the trials and saves its
state, the runs are marked KILLED, the last line is the command that resumes it. A Ray job gets SIGKILL after
RAY_JOB_STOP_WAIT_TIME_S seconds (3 by default, read from the environment of the Ray head, not of the job):
set it to 60 there, or a stopped job's records stay RUNNING and its last trials are lost.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from search_spaces import SPACE_NAMES, load_space
from study.analysis.reporting import build_report
from study.analysis.trials import best_trial, load_trials
from study.encoder.loading import check_model
from study.errors import UsageError, cli_main
from study.orchestration import tracking
from study.orchestration.raycluster import (
    cluster_has_gpus,
    default_max_concurrent,
    reference_row,
    require_shared_storage,
    start_ray_alongside,
    stop_gracefully_on_sigterm,
    warn_if_job_stop_wait_is_short,
)
from study.orchestration.settings import StudySettings, check_data, parse_args, validate
from study.orchestration.studydir import (
    load_study,
    missing_folders,
    new_study_dir,
    new_study_id,
    ray_storage,
    save_study,
    tracking_record,
    tracking_uri,
)
from study.orchestration.tuning import ended_trials, optuna_storage_url, study_tuner

# flags that set up a new study; a resumed study keeps the settings it started with
SETTING_FLAGS = ("space", "budget", "num_samples", "epochs", "objective", "range", "method", "langs", "group", "model",
                 "data_dir", "out", "seed", "storage_path", "cpus_per_trial", "gpus_per_trial", "max_concurrent",
                 "optuna_storage")


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


def most_common_failure(client, experiment: str, parent: str) -> str:
    from collections import Counter

    reasons = Counter(t["failure"] or "unknown error" for t in load_trials(client, experiment, parent)
                      if t["status"] == "FAILED")
    return f"{reasons.most_common(1)[0][0]} ({reasons.most_common(1)[0][1]} trials)" if reasons else "none recorded"


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    stop_gracefully_on_sigterm()
    warn_if_job_stop_wait_is_short()
    if args.list_spaces:
        for name in SPACE_NAMES:
            print(f"{name:<14} {load_space(name).description}")
        return 0

    if args.resume:
        refuse_new_settings_on_resume(args)
        study_dir = Path(args.resume)
        saved = load_study(study_dir)
        settings = StudySettings.from_json(saved["settings"])
        uri = tracking_uri(study_dir, saved, args.tracking_uri)
    else:
        settings = validate(args)  # every input checked before Ray starts
        study_dir = new_study_dir(args.out, settings.space)
        # credentials in the URI go to MLFLOW_TRACKING_USERNAME / _PASSWORD before MLflow sees it (its errors
        # quote the URI); study.json then keeps the URI without them
        uri = tracking.credentials_to_env(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "") or None
    tracking.check_reachable(uri or "")
    check_data(settings)
    check_model(settings.model)  # prepares the default encoder once (with progress); a bad one fails here
    created = [] if args.resume else missing_folders(study_dir)
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the study directory {study_dir}: {err.strerror}") from None
    record = tracking_record(uri)
    uri = uri or tracking.default_tracking_uri(study_dir)
    try:
        client, experiment = start_ray_alongside(lambda: tracking.open_experiment(uri, study_dir), args.address,
                                                 args.dashboard_host)
        require_shared_storage(settings.storage_path, joined=bool(args.address))
        if settings.budget == "auto":  # decided by the cluster's resources, not by this machine's
            settings = validate(args, cluster_has_gpus())
        # its prefix in shared storage, whatever the folder is called later (study.orchestration.studydir)
        if not args.resume:
            settings = settings.replace(study_id=new_study_id(study_dir))
    except BaseException:
        if created:  # a new study that could not start leaves nothing behind
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    if settings.max_concurrent is None:
        settings = settings.replace(max_concurrent=default_max_concurrent(
            settings.cpus_per_trial, settings.gpus_per_trial, settings.num_samples, joined=bool(args.address)))

    if args.resume:
        parent = saved["parent_run_id"]
        tracking.check_parent_run(client, parent, uri)
        # child runs a killed driver left RUNNING: Tune continues those of the trials in its last snapshot (and
        # marks them RUNNING again); the others are not continued, and stay KILLED with the reason
        orphans = tracking.end_running_children(client, experiment, parent, "KILLED", tracking.DRIVER_LOST)
        if orphans:
            print(f"{orphans} trials were left running by a stopped driver: those Tune did not save are run again",
                  file=sys.stderr)
        client.update_run(parent, status="RUNNING")
    else:
        parent = tracking.start_parent_run(
            client, experiment, name=f"{settings.space} {study_dir.name}",
            params={**{k: v for k, v in settings.to_json().items() if k != "eval"},
                    **{f"eval.{k}": v for k, v in settings.eval.items()}, "git_commit": tracking.git_commit()},
            tags={"study_dir": str(study_dir.resolve()), "space": settings.space, "budget": settings.budget,
                  "objective": settings.objective})
        tracking.describe_study(client, parent, settings, study_dir)  # its description: what the study asks
        save_study(study_dir, dict(settings=settings.to_json(), parent_run_id=parent, experiment_id=experiment,
                                   tracking=record, created=time.strftime("%Y-%m-%d %H:%M:%S")))
    print(f"study {study_dir}  space {settings.space}  budget {settings.budget}  "
          f"{settings.num_samples} trials x {settings.epochs} epochs  objective {settings.objective}",
          file=sys.stderr)
    print(f"MLflow: {tracking.redact(uri)}  (parent run {parent})", file=sys.stderr)
    print(f"  runs table: {tracking.experiment_url(uri, experiment)}", file=sys.stderr)
    print(f"Ray storage (checkpoints, Tune state): {ray_storage(settings, study_dir)}", file=sys.stderr)

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
    if ended_trials(results) < len(results) or len(results) < settings.num_samples:  # Tune stopped on SIGINT
        return end_interrupted(client, experiment, parent, study_dir, args)
    print(f"\n{len(results)} trials in {seconds / 60:.1f} min ({results.num_errors} failed)", file=sys.stderr)
    client.log_metric(parent, "study.minutes", seconds / 60)
    if results.num_terminated == 0:
        client.set_terminated(parent, status="FAILED")
        print(f"error: no trial finished: {results.num_errors} of {len(results)} failed, most often with: "
              f"{most_common_failure(client, experiment, parent)}", file=sys.stderr)
        return 1
    # a finished study leaves no child RUNNING (one whose trial Tune lost with a killed driver)
    tracking.end_running_children(client, experiment, parent, "KILLED", tracking.DRIVER_LOST)
    build_report(study_dir, client=client, print_table=True)
    best = best_trial(load_trials(client, experiment, parent), settings.objective)
    tracking.describe_study(client, parent, settings, study_dir, best, answered=True)  # ... and now its answer
    client.set_terminated(parent, status="FINISHED")
    if uri.startswith("sqlite:"):
        print(f"\nOpen the trials in the MLflow UI:\n  mlflow ui --backend-store-uri {uri}\n"
              f"  then {tracking.experiment_url(uri, experiment)}")
    else:
        print(f"\nThe trials are in MLflow: {tracking.experiment_url(uri, experiment)} (parent run {parent})")
    print(f"Open the search in Optuna's dashboard:\n  optuna-dashboard "
          f"{tracking.redact(optuna_storage_url(settings, study_dir))}")
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
