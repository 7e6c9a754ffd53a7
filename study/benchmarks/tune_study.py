"""`python -m study.bench study`: N tiny real trials as a Ray Tune study (on a running Ray, and starting its
own) vs the same trials by hand."""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from study.orchestration.settings import StudySettings


def add_arguments(parser) -> None:
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--budget", choices=("smoke", "cpu"), default="smoke", help="the trials' size")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray, all given to the one trial")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each side (by hand, by hand beside an idle Ray, Tune on a running Ray, "
                             "Tune starting Ray), alternating order")
    parser.add_argument("--work-dir", help="where the study's temporary folder goes (default: the temp dir)")


def trials_by_hand(trials: list, cpus: int) -> dict:
    """The trials' work without Tune: each (config, epochs) trained and evaluated as its Tune trial did, back to
    back, in this process. Returns the seconds of each trial and of all training and all evaluation, and the
    process's involuntary context switches meanwhile."""
    import resource

    from study.evaluation.robustness import evaluate_encoder
    from trainables.config import TrialConfig
    from trainables.trainable import HybridTrainer

    torch.set_num_threads(cpus)
    measured = {"trials": [], "train": 0.0, "eval": 0.0}
    preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    for config, epochs in trials:
        trial_start = time.perf_counter()
        trainer = HybridTrainer(TrialConfig.from_dict(config))
        while trainer.epoch < epochs:
            measured["train"] += trainer.train_epoch()["train.seconds"]
            if trainer.cfg.eval_every_epoch or trainer.epoch == trainer.cfg.epochs:
                eval_start = time.perf_counter()
                evaluate_encoder(trainer.encoder, trainer.cfg.eval, trainer.data_dir,
                                 also_report=trainer.epoch == trainer.cfg.epochs,
                                 untrained_pairs=trainer.untrained_pairs)
                measured["eval"] += time.perf_counter() - eval_start
        measured["trials"].append(time.perf_counter() - trial_start)
    # how often the kernel took a CPU from this process's threads for another process
    measured["preempted"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - preempted
    return measured


def _tune_study(args, settings: StudySettings, address: str | None = None) -> dict:
    """One Ray Tune study of the trials, as `study.run` runs it: Ray started (or, with `address`, joined; the
    MLflow store opened meanwhile), the parent run, the study's Tuner, Ray shut down (or left). Seconds, and
    the trials' configurations."""
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    from study.orchestration import tracking
    from study.orchestration.raycluster import start_ray_alongside
    from study.orchestration.tuning import study_tuner

    work = Path(tempfile.mkdtemp(prefix="bench-study-", dir=args.work_dir))
    start = time.perf_counter()
    uri = tracking.default_tracking_uri(work)
    client, experiment = start_ray_alongside(lambda: tracking.open_experiment(uri, work), address)
    ray_start = time.perf_counter() - start
    parent = tracking.start_parent_run(client, experiment, name="bench study", params={"trials": args.trials},
                                       tags={"bench": "study"})
    driver_cpu = time.process_time()
    grid = study_tuner(settings, work, tracking.ChildRunLogger(uri, experiment, parent)).fit()
    driver_cpu = time.process_time() - driver_cpu
    client.set_terminated(parent, status="FINISHED")
    stop = time.perf_counter()
    ray.shutdown()
    total = time.perf_counter() - start
    done = [r for r in grid if not r.error]
    if len(done) != args.trials:
        raise SystemExit(f"{args.trials - len(done)} of {args.trials} Tune trials failed; see {work}")
    shutil.rmtree(work, ignore_errors=True)
    # each trial's own time in its worker process, and what the trials report of training and evaluation
    return {"total": total, "ray_start": ray_start, "ray_stop": start + total - stop, "driver_cpu": driver_cpu,
            "trials": [r.metrics["time_total_s"] for r in done],
            **{part: sum(r.metrics_dataframe[f"{part}.seconds"].sum() for r in done) for part in ("train", "eval")},
            "configs": [(r.config, r.metrics["training_iteration"]) for r in done]}


@contextlib.contextmanager
def _idle_ray_head(cpus: int):
    """A Ray head started with `ray start` as a cluster's is, left 10 s to settle, stopped on exit; its address.
    Neither its start nor its stop is inside a timing."""
    import shutil
    import tempfile

    from study.orchestration.raycluster import start_ray_head, stop_ray_processes_under

    temp = tempfile.mkdtemp(prefix="rayb-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        address = start_ray_head(temp, cpus)
        time.sleep(10)
        yield address
    finally:
        stop_ray_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _study_by_hand(configs: list, cpus: int) -> dict:
    """The same trials by hand (`trials_by_hand`) in a fresh Python process: its start and imports count."""
    import json
    import subprocess

    script = ("import json, sys; from study.benchmarks.tune_study import trials_by_hand; "
              "print(json.dumps(trials_by_hand(*json.loads(sys.argv[1]))))")
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", script, json.dumps([configs, cpus])],
                             capture_output=True, text=True)
    total = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"the trials by hand failed:\n{process.stderr[-2000:]}")
    return {"total": total, **json.loads(process.stdout.strip().splitlines()[-1])}


def bench_study(args) -> None:
    """N tiny real trials as a Ray Tune study (the study's own Tuner: Optuna, ASHA, checkpoints, the MLflow
    callback, one trial at a time on all the CPUs) against the same trials, with the same configurations and
    epochs, trained and evaluated by hand back to back in one fresh process. The study runs twice: joining a
    Ray that was already up (a cluster's case), and starting and stopping its own local Ray (a laptop's). The
    trials by hand also run beside an idle Ray head: what Ray's own processes cost a trial just by being on
    the machine (a cluster's nodes run them whether or not a study uses Tune), apart from what Tune adds.
    Both sides start Python processes that import torch and load the model (Tune's worker, the by-hand
    process); neither starts from a warm one. Rounds alternate the order: on a machine whose speed drifts by
    10% within minutes, one pass of each measures the drift as much as the overhead."""
    import os
    import secrets
    import tempfile
    from pathlib import Path

    if "RAY_AUTH_MODE" not in os.environ:  # one private token for both Rays (a joining driver must be told,
        # before Ray is imported: it reads the mode then)
        token = Path(tempfile.mkdtemp(prefix="bench-token-")) / "auth_token"
        token.write_text(secrets.token_hex(32))
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))

    from study.orchestration.settings import parse_args, validate
    from trainables.config import TrialConfig
    from trainables.trainable import HybridTrainer

    settings = validate(parse_args(["--budget", args.budget, "--num-samples", str(args.trials),
                                    "--max-concurrent", "1", "--cpus-per-trial", str(args.cpus)]))
    HybridTrainer(TrialConfig(model=settings.model, max_train_pairs=8))  # model files and data in the page cache

    runs: dict[str, list[dict]] = {"running": [], "local": [], "beside": [], "hand": []}
    configs = None
    for round_ in range(args.rounds):
        order = ("local", "running", "beside", "hand")  # the by-hand sides need the configurations Tune chose
        for side in order if round_ % 2 == 0 else order[::-1]:
            if side == "hand":
                runs["hand"].append(_study_by_hand(configs, args.cpus))
                continue
            if side == "beside":
                with _idle_ray_head(args.cpus):
                    runs["beside"].append(_study_by_hand(configs, args.cpus))
                continue
            if side == "running":
                with _idle_ray_head(args.cpus) as address:
                    run = _tune_study(args, settings, address)
            else:
                run = _tune_study(args, settings)
            configs = configs or run["configs"]
            if run["configs"] != configs:
                print("note: Tune proposed other configurations than in its first run", file=sys.stderr)
            runs[side].append(run)
        last = {side: sides[-1]["total"] for side, sides in runs.items()}
        print(f"round {round_ + 1}: by hand {last['hand']:.1f} s, beside an idle Ray {last['beside']:.1f} s, Tune on "
              f"a running Ray {last['running']:.1f} s ({last['running'] / last['hand']:.2f}x), Tune starting Ray "
              f"{last['local']:.1f} s ({last['local'] / last['hand']:.2f}x)", file=sys.stderr)

    def mean(side, key):
        return statistics.mean(run[key] if not isinstance(run[key], list) else sum(run[key]) for run in runs[side])

    epochs = sum(e for _, e in configs)
    print(f"{args.trials} trials ({epochs} epochs in all; budget {args.budget}: {settings.max_train_pairs} "
          f"training pairs, {len(settings.eval['langs'])} languages x {settings.eval['max_sentences']} "
          f"sentences), one at a time, {args.cpus} CPUs; means over {args.rounds} rounds")
    for side, label in (("hand", "by hand, one process"), ("beside", "the same, beside idle Ray")):
        total, inside = mean(side, "total"), mean(side, "trials")
        print(f"{label:<25} {total:>8.1f} s  (Python start and imports {total - inside:.1f} s, then "
              f"{inside / args.trials:.1f} s a trial; training {mean(side, 'train'):.1f} s, evaluation "
              f"{mean(side, 'eval'):.1f} s; preempted {mean(side, 'preempted'):,.0f} times)")
    for side, label, ray_words in (("running", "Tune on a running Ray", "joining Ray and leaving it"),
                                   ("local", "Tune starting Ray", "starting Ray (the MLflow store opened meanwhile) "
                                                                  "and its shutdown")):
        total, inside = mean(side, "total"), mean(side, "trials")
        ray_s = mean(side, "ray_start") + mean(side, "ray_stop")
        print(f"{label:<25} {total:>8.1f} s  ({ray_words} {ray_s:.1f} s; inside the trials {inside:.1f} s: "
              f"training {mean(side, 'train'):.1f} s, evaluation {mean(side, 'eval'):.1f} s; the rest "
              f"{total - ray_s - inside:.1f} s: the worker's start, Tune's start and end, between trials; "
              f"the driver's CPU {mean(side, 'driver_cpu'):.1f} s)")
    for n in range(args.rounds):
        print(f"  round {n + 1}: a trial by hand {', '.join(f'{t:.1f}' for t in runs['hand'][n]['trials'])} s; "
              f"beside an idle Ray {', '.join(f'{t:.1f}' for t in runs['beside'][n]['trials'])} s; "
              f"on a running Ray {', '.join(f'{t:.1f}' for t in runs['running'][n]['trials'])} s; "
              f"starting Ray {', '.join(f'{t:.1f}' for t in runs['local'][n]['trials'])} s")
    hand_s = mean("hand", "total")
    running, local = mean("running", "total") / hand_s, mean("local", "total") / hand_s
    by_round = ", ".join(f"{r['total'] / h['total']:.2f}x/{lo['total'] / h['total']:.2f}x"
                         for r, lo, h in zip(runs["running"], runs["local"], runs["hand"]))
    per_trial = (mean("running", "total") - hand_s) / args.trials
    print(f"overhead {running:.2f}x the trials run by hand, as a study on a running Ray ({per_trial:+.1f} s a trial); "
          f"{local:.2f}x starting and stopping a local Ray; by round (running/local) {by_round}; Tune's own part, "
          f"on a running Ray against the trials by hand beside an idle one, "
          f"{mean('running', 'total') / mean('beside', 'total'):.2f}x")
