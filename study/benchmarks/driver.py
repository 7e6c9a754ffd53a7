"""`python -m study.bench driver`: the study's Ray Tune driver, time per reported result, 100 vs 1,000 trials.

What the driver of a study does per reported result: Optuna's searcher (study.orchestration.tuning.make_searcher),
ASHA (make_scheduler), the MLflow callback (study.orchestration.tracking.ChildRunLogger), the progress table,
checkpoint bookkeeping and Tune's experiment snapshots. The trials do no training: each reports, per epoch, a metric
dict with exactly the keys `study.evaluation.robustness.flatten` gives for the languages, packed by `tune_result` as a
trial packs them, plus the trainer's, and a tiny checkpoint, pruned as a trial prunes (trainables.storage). The Tuner
is built like `study.orchestration.tuning.study_tuner`, from the same pieces. --legacy measures the set-up before
issue 13: per-language figures as numeric fields, Tune's retention (num_to_keep=1, a forced experiment snapshot per
checkpoint), and Tune's CSV/JSON/TensorBoard loggers.
"""

from __future__ import annotations

import statistics
import sys
import time

from study.errors import UsageError

TRAINER_KEYS = ("train.loss", "train.adversarial_share", "train.seconds", "epoch", "eval.seconds", "node_id")
# the figures the fake trials scale by their quality (headline accuracies and means); en.* are left alone
_SCALED = ("selection.", "objective.")


def add_arguments(parser) -> None:
    parser.add_argument("--trials", default="100,1000", help="trials per Tune run, comma-separated; the ratio is "
                                                             "last vs first")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (>= 2: ASHA stops some after one)")
    parser.add_argument("--langs", choices=("26", "112"), default="26",
                        help="26: the default groups (low and high), 112: every Tatoeba language")
    parser.add_argument("--tracking-uri", help="an MLflow server (e.g. on PostgreSQL) measured after the embedded "
                                               "SQLite store")
    parser.add_argument("--legacy", action="store_true",
                        help="the set-up before issue 13 (per-language figures as numeric fields, num_to_keep=1, "
                             "Tune's three loggers), for comparison")
    parser.add_argument("--reuse-actors", action="store_true",
                        help="TuneConfig(reuse_actors=True): a trial process runs trial after trial (the study "
                             "starts one per trial); spares the workers' start-up, not the driver's work")
    parser.add_argument("--max-concurrent", type=int, default=16, help="trials at once (the same for every size)")
    parser.add_argument("--cpus-per-trial", type=float, default=0.05)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", metavar="DIR", help="cProfile the driver during each fit: DIR/*.pstats and "
                                                         "the time per component")
    parser.add_argument("--every", type=int, default=100, help="say how the time per result goes every N results "
                                                               "(stderr); 0: never")
    parser.add_argument("--top", type=int, default=15, help="profile entries shown")
    parser.add_argument("--quiet", action="store_true", help="no progress table (the study prints one)")
    parser.add_argument("--keep", action="store_true", help="keep each run's Ray storage and MLflow store")
    parser.add_argument("--work-dir", help="where the runs' temporary folders go (default: the temp dir)")


def _fake_evaluation(langs: list[str], rng) -> dict[str, float]:
    """A realistic flat metric dict: random but valid per-language figures (the keys of
    `study.evaluation.robustness.evaluate_query_sets`, with the default radii and typo rate, means consistent),
    flattened by `study.evaluation.robustness.flatten` with the English check, for the selection and (as a trial's
    last epoch reports them) the report split."""
    from study.evaluation.robustness import EvalConfig, flatten, fmt

    cfg = EvalConfig(langs=langs)
    keep = {0.02: 0.95, 0.05: 0.82, 0.1: 0.58, 0.2: 0.3}  # attacked / clean L->English of the untrained encoder
    per_lang = {}
    for lang in langs:
        l2e, e2l = rng.uniform(0.3, 0.97), rng.uniform(0.3, 0.97)
        fig = {"l2e": l2e, "e2l": e2l, "clean": (l2e + e2l) / 2}
        for eps in cfg.radii:
            fig[f"attacked_eps{fmt(eps)}"] = l2e * keep.get(eps, 0.5) * rng.uniform(0.9, 1.0)
            fig[f"noise_eps{fmt(eps)}"] = l2e * rng.uniform(0.97, 1.0)
        for rate in cfg.typo_rates:
            fig[f"typo_p{fmt(rate)}"] = l2e * rng.uniform(0.6, 0.9)
        fig["robust"] = statistics.mean(fig[f"attacked_eps{fmt(eps)}"] for eps in cfg.radii)
        fig["n"] = rng.randint(200, 1000)
        per_lang[lang] = fig
    english = {"paraphrase_acc": rng.uniform(0.8, 0.95), "stsb_spearman": rng.uniform(0.75, 0.85)}
    return {**flatten(per_lang, english, "selection"), **flatten(per_lang, None, "report", objectives=False)}


def _fake_trainable(templates: list[dict]):
    """The trial function: per epoch, one of `templates` scaled by a quality that depends on r and epsilon (so
    TPE and ASHA see a signal), the trainer's keys, a tiny checkpoint, `tune.report`. Built as a closure so Ray
    ships it by value: the trial processes import neither torch nor this module."""

    scaled = _SCALED
    legacy = "per_language" not in templates[0]

    def fake_trial(config: dict) -> None:
        import json
        import math
        import os
        import random
        import tempfile
        import time

        import ray
        from ray import tune

        storage = tune.get_context().get_storage()
        rng = random.Random(repr((config["ratio"], config["epsilon"], config["seed"])))
        template = templates[rng.randrange(len(templates))]
        quality = max(0.2, 1 - 0.4 * abs(config["ratio"] - 0.3)
                      - 0.1 * abs(math.log10(config["epsilon"]) + 1) - 0.1 * rng.random())
        epoch, checkpoint = 0, tune.get_checkpoint()
        if checkpoint:  # a restarted trial continues after its last epoch, as the real one does
            with checkpoint.as_directory() as directory:
                with open(os.path.join(directory, "state.json")) as f:
                    epoch = json.load(f)["epoch"]
        node = ray.get_runtime_context().get_node_id()
        while epoch < config["epochs"]:
            epoch += 1
            factor = quality * min(1.0, 0.9 + 0.05 * epoch)
            metrics = {k: v * factor if k.startswith(scaled) else v for k, v in template.items()}
            metrics.update({"train.loss": 2.0 / (epoch + quality), "train.adversarial_share": config["ratio"],
                            "train.seconds": 0.0, "epoch": epoch, "eval.seconds": 0.0, "node_id": node})
            with tempfile.TemporaryDirectory() as directory:
                with open(os.path.join(directory, "state.json"), "w") as f:
                    json.dump({"epoch": epoch, "time": time.time()}, f)
                if not legacy:
                    from trainables.storage import CheckpointRetention

                    CheckpointRetention(storage).make_room()
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    return fake_trial


def _driver_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _result_clock(label: str, every: int):
    """A Tune callback (the run's last) that notes when the driver handed each result to the callbacks, and
    every `every` results says on stderr how the time per result goes as trials accumulate."""
    from ray.tune import Callback

    class ResultClock(Callback):
        def __init__(self):
            self.times: list[float] = []
            self.mark = (time.perf_counter(), _driver_cpu())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            now = time.perf_counter()
            self.times.append(now)
            if every and len(self.times) % every == 0:
                cpu = _driver_cpu()
                print(f"[bench driver] {label}: {len(trials)} trials, {len(self.times)} results, last {every}: "
                      f"{1000 * (now - self.mark[0]) / every:.1f} ms/result, driver CPU "
                      f"{1000 * (cpu - self.mark[1]) / every:.1f} ms/result", file=sys.stderr, flush=True)
                self.mark = (now, cpu)

    return ResultClock()


# (label, file the function is in, function names): what the profile attributes the driver's time to. Nested
# entries (two leading spaces) are part of the entry above them.
_COMPONENTS = (
    ("Tune step loop (TuneController.step)", "ray/tune/execution/tune_controller.py", {"step"}),
    ("experiment snapshots (TuneController.checkpoint)", "ray/tune/execution/tune_controller.py", {"checkpoint"}),
    ("  writing the snapshot (save_to_dir)", "ray/tune/execution/tune_controller.py", {"save_to_dir"}),
    ("    searcher state pickled (save_to_dir)", "ray/tune/search/search_generator.py", {"save_to_dir"}),
    ("    trials' JSON state (get_json_state)", "ray/tune/experiment/trial.py", {"get_json_state"}),
    ("  waiting for the previous sync", "ray/train/_internal/syncer.py", {"wait"}),
    ("searcher (ConcurrencyLimiter: Optuna TPE)", "ray/tune/search/concurrency_limiter.py",
     {"suggest", "on_trial_complete", "on_trial_result"}),
    ("scheduler (ASHA)", "ray/tune/schedulers/async_hyperband.py",
     {"on_trial_add", "on_trial_result", "on_trial_complete", "on_trial_remove", "choose_trial_to_run"}),
    ("MLflow callback (ChildRunLogger)", "study/orchestration/tracking.py",
     {"on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"}),
    ("Tune's CSV logger", "ray/tune/logger/csv.py", {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("Tune's JSON logger", "ray/tune/logger/json.py", {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("Tune's TensorBoard logger", "ray/tune/logger/tensorboardx.py",
     {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("progress table (_report_progress)", "ray/tune/tune.py", {"_report_progress"}),
)


def _profile_summary(profile, results: int, top: int) -> list[str]:
    import pstats

    stats = pstats.Stats(profile)
    lines = [f"    {'component (cProfile, main thread)':<50} {'calls':>8} {'s':>8} {'ms/result':>10}"]
    for label, path, names in _COMPONENTS:
        calls = seconds = 0.0
        for (filename, _, name), (_, ncalls, _, cumtime, _) in stats.stats.items():
            if name in names and filename.endswith(path):
                calls, seconds = calls + ncalls, seconds + cumtime
        lines.append(f"    {label:<50} {calls:>8.0f} {seconds:>8.1f} {1000 * seconds / max(results, 1):>10.2f}")
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        lines.append(f"    top {top} by {title}:")
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3], reverse=True)
        for (filename, line, name), (_, ncalls, tottime, cumtime, _) in entries[:top]:
            where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
            lines.append(f"      {tottime:>7.1f} own {cumtime:>7.1f} cum {ncalls:>8} calls  {where}:{line}({name})")
    return lines


def _driver_run(args, trials: int, backend: str, uri: str | None, templates: list[dict]) -> dict:
    """One Tune run of `trials` trials on a fresh storage and (embedded store) a fresh MLflow store."""
    import cProfile
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from ray import tune

    from search_spaces import load_space
    from study.encoder.loading import DEFAULT_MODEL
    from study.evaluation.robustness import objective_metric
    from study.orchestration import tracking
    from study.orchestration.settings import StudySettings
    from study.orchestration.studydir import ray_storage
    from study.orchestration.tuning import (
        STUDY_EXPERIMENT,
        _run_config,
        make_scheduler,
        make_searcher,
        progress_columns,
        trial_param_space,
    )

    work = Path(tempfile.mkdtemp(prefix=f"bench-driver-{backend}-{trials}-", dir=args.work_dir))
    # a cluster-sized study's driver; the trials are fake (no budget's training or evaluation runs)
    settings = StudySettings(space="hybrid_ratio", budget="gpu", seed=args.seed, num_samples=trials,
                             epochs=args.epochs, max_concurrent=args.max_concurrent, model=DEFAULT_MODEL,
                             eval={"langs": args.lang_codes, "seed": args.seed}, batch_size=32)
    space = load_space(settings.space)
    uri = uri or tracking.default_tracking_uri(work)
    client, experiment = tracking.open_experiment(uri, work)
    parent = tracking.start_parent_run(client, experiment, name=f"bench driver {trials} trials {backend}",
                                       params={"trials": trials, "epochs": args.epochs, "langs": len(args.lang_codes),
                                               "legacy": args.legacy}, tags={"bench": "driver"})
    clock = _result_clock(f"{backend} {trials}", args.every)
    scheduler = make_scheduler(settings, space)
    tune_config = tune.TuneConfig(metric=objective_metric("robust"), mode="max",
                                  search_alg=make_searcher(settings, space, scheduler), scheduler=scheduler,
                                  num_samples=trials, reuse_actors=args.reuse_actors,
                                  trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}")
    callback = tracking.ChildRunLogger(uri, experiment, parent)
    # Tune reads this when the Tuner is built: the study's JSON logger only, or (legacy) Tune's three loggers
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if args.legacy else "1"
    run_config = _run_config(STUDY_EXPERIMENT, ray_storage(settings, work), callback,
                             progress_columns([*space.space, "method"]), max_failures=2)
    if args.legacy:
        run_config.callbacks = [callback]
        run_config.checkpoint_config = tune.CheckpointConfig(num_to_keep=1)
    run_config.callbacks.append(clock)
    if args.quiet:
        run_config.verbose = 0
    trainable = tune.with_resources(_fake_trainable(templates), {"cpu": args.cpus_per_trial})
    tuner = tune.Tuner(trainable, param_space=trial_param_space(settings, space), tune_config=tune_config,
                       run_config=run_config)

    profile = cProfile.Profile() if args.profile else None
    cpu_start = _driver_cpu()
    start = time.perf_counter()
    if profile:
        profile.enable()
    grid = tuner.fit()
    if profile:
        profile.disable()
    wall = time.perf_counter() - start
    cpu = _driver_cpu() - cpu_start
    client.set_terminated(parent, status="FINISHED")

    disk = sum(f.stat().st_size for f in (work / "ray").rglob("*") if f.is_file())
    times = clock.times
    results = len(times)
    quarters = [times[round(i * (results - 1) / 4)] for i in range(5)] if results > 4 else []
    run = dict(backend=backend, trials=trials, results=results, errors=sum(1 for r in grid if r.error), wall=wall,
               ms=1000 * wall / max(results, 1),
               steady=1000 * (times[-1] - times[0]) / max(results - 1, 1) if results > 1 else float("nan"),
               quarters=[1000 * (b - a) / max((results - 1) / 4, 1) for a, b in zip(quarters, quarters[1:])],
               cpu=1000 * cpu / max(results, 1), disk=disk, metrics=len(templates[0]))
    if profile:
        stats_file = Path(args.profile) / f"driver-{backend}-{trials}.pstats"
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        profile.dump_stats(stats_file)
        run["profile"] = [f"    profile: {stats_file}", *_profile_summary(profile, results, args.top)]
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        run["kept"] = str(work)
    return run


def _run_line(run: dict) -> str:
    quarters = " / ".join(f"{q:.1f}" for q in run["quarters"])
    return (f"{run['backend']:<7} {run['trials']:>6} {run['results']:>8} {run['errors']:>6} {run['wall']:>8.1f} "
            f"{run['ms']:>10.1f} {run['steady']:>10.1f} {run['cpu']:>10.1f} {run['disk'] / 2**20:>9.1f}"
            f"   {quarters}")


def bench_driver(args) -> None:
    import logging
    import random

    import ray

    from study.evaluation.languages import resolve_languages
    from study.evaluation.robustness import is_per_language, tune_result

    sizes = [int(n) for n in args.trials.split(",")]
    if len(sizes) < 2 or min(sizes) < 1:
        raise UsageError("--trials needs two or more sizes >= 1, e.g. 100,1000")
    if args.epochs < 2:
        raise UsageError("--epochs must be >= 2 (ASHA acts on the epochs)")
    args.lang_codes = resolve_languages(group="all") if args.langs == "112" else resolve_languages()
    rng = random.Random(args.seed)
    templates = [_fake_evaluation(args.lang_codes, rng) for _ in range(8)]
    per_language = sum(1 for k in templates[0] if is_per_language(k))
    if not args.legacy:
        templates = [tune_result(t) for t in templates]
    numeric = sum(1 for v in templates[0].values() if not isinstance(v, str)) + len(TRAINER_KEYS) - 1

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    backends = [("sqlite", None)] + ([("server", args.tracking_uri)] if args.tracking_uri else [])
    runs = []
    for backend, uri in backends:
        for trials in sizes:
            print(f"[bench driver] {backend}: {trials} trials x {args.epochs} epochs ...", file=sys.stderr, flush=True)
            runs.append(_driver_run(args, trials, backend, uri, templates))
            print(f"[bench driver] {_run_line(runs[-1])}", file=sys.stderr, flush=True)
    ray.shutdown()

    setup = ("legacy set-up: per-language figures as numeric fields, CheckpointConfig(num_to_keep=1), Tune's "
             "CSV/JSON/TensorBoard loggers" if args.legacy else
             "the study's set-up: per-language figures packed in one field, no Tune retention (each trial keeps "
             "its newest two checkpoints), Tune's JSON logger only")
    print(f"\nRay Tune driver: {args.langs} languages ({per_language} per-language figures), {numeric} numeric "
          f"metrics per result, {args.epochs} epochs, ASHA, Optuna TPE (max {args.max_concurrent} concurrent), "
          f"reuse_actors={args.reuse_actors}, {args.num_cpus} Ray CPUs, {args.cpus_per_trial} CPU/trial; {setup}")
    print("ms/result = wall of tuner.fit() / results; steady = first to last result; driver CPU = the driver "
          "process's CPU time / results; by quarter = ms/result in each quarter of the results")
    print(f"{'store':<7} {'trials':>6} {'results':>8} {'errors':>6} {'wall s':>8} {'ms/result':>10} {'steady':>10} "
          f"{'driver CPU':>10} {'disk MiB':>9}   by quarter")
    for run in runs:
        print(_run_line(run))
    for run in runs:
        if "profile" in run:
            print(f"  {run['backend']} {run['trials']} trials:")
            print("\n".join(run["profile"]))
        if "kept" in run:
            print(f"  {run['backend']} {run['trials']} trials kept in {run['kept']}")
    ratios = []
    for backend, _ in backends:
        first, last = [r for r in runs if r["backend"] == backend][0], [r for r in runs if r["backend"] == backend][-1]
        ratios.append(f"{last['cpu'] / first['cpu']:.2f}x{' (bar <= 1.5x)' if not ratios else ''} on {backend} "
                      f"(wall per result {last['ms'] / first['ms']:.2f}x, "
                      f"steady {last['steady'] / first['steady']:.2f}x)")
    # the driver process's CPU time per result is the headline: the wall time also counts the trials' own work
    # and, on a shared machine, whatever else runs
    print(f"driver CPU time per result at {sizes[-1]} trials vs {sizes[0]}: " + "; ".join(ratios))
