"""Ray: joining a cluster or starting a local instance, and the work the driver sends to it directly
(the untrained encoder's reference row)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

from study.errors import ClusterError, StorageError
from study.orchestration.settings import StudySettings
from study.orchestration.studydir import REFERENCE_FILE, write_json


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
        raise ClusterError(f"cannot connect to Ray at {address}: {err.strerror or type(err).__name__}") from None


# Tune runs each trial in a new thread of its worker process. glibc gives a new thread its own malloc arena,
# which hands freed memory back to the OS at once, so the trial's tensors are page-faulted in again and again:
# a smoke trial trained 37% slower than in a main thread (`study.bench study`). One arena, as in the main
# thread, removes that. Ray's node processes must start with it: infra/docker/Dockerfile sets it for clusters.
ONE_MALLOC_ARENA = ("MALLOC_ARENA_MAX", "1")


def _sigterm_as_sigint(signum, frame):
    # Tune stops a run gracefully on SIGINT (trials stopped, its state saved); a SIGTERM (`ray job stop`, a deleted
    # RayJob, a scheduler, `kill`) gets the same treatment instead of killing the driver mid-write. The SIGINT
    # handler is called here, not sent a SIGINT: Ray starts a job's processes with SIGINT blocked, and a raised one
    # would stay pending. Tune's handler sets its stop flag; outside Tuner.fit, Python's raises KeyboardInterrupt.
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # SIG_IGN (e.g. started in the background by a shell) or SIG_DFL
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


# `ray job stop` (and deleting a RayJob) sends SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S, 3 s by default,
# read on the head (a job's driver inherits the head's environment): stopping Tune, saving its state and marking the
# runs KILLED takes longer (~10-20 s)
JOB_STOP_WAIT_NEEDED_S = 30


def stop_gracefully_on_sigterm() -> None:
    """SIGINT unblocked (Ray blocks it in the processes it starts: a job's driver) and SIGTERM stopping the study
    as Ctrl-C does. Called by the commands at start, and by `start_ray` again after ray.init, which installs its
    own SIGTERM handler (sys.exit: the study would end FAILED with Tune's state unsaved)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread (and ray.init sets none from another)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGTERM, _sigterm_as_sigint)


def warn_if_job_stop_wait_is_short() -> None:
    """In a Ray job whose head gives it too little time to stop, one warning line."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # set by Ray's job supervisor in a job's driver
        try:
            wait = float(os.environ.get("RAY_JOB_STOP_WAIT_TIME_S", "3"))
        except ValueError:
            wait = 3.0
        if wait < JOB_STOP_WAIT_NEEDED_S:
            print(f"warning: `ray job stop` gives this study {wait:g} s before SIGKILL, too little to save its state "
                  f"and records: set RAY_JOB_STOP_WAIT_TIME_S={2 * JOB_STOP_WAIT_NEEDED_S} in the Ray head's "
                  "environment", file=sys.stderr)


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1"):
    """Join the cluster at `address`, or start a local Ray with its dashboard; print the dashboard URL.

    Ray Client (`ray://`) is refused: its driver would run Tune on the head while the study's folder, the
    embedded MLflow store and `--resume` stay on this machine. Run the study on the cluster instead."""
    import logging

    import ray

    if address and address.startswith("ray://"):
        raise ClusterError(f"Ray Client addresses ({address}) are not supported: run the study on the cluster, e.g. "
                           "`ray job submit --address http://HEAD:8265 --working-dir . -- python -m study.run "
                           "--address auto --storage-path s3://BUCKET/PREFIX ...` (see infra/README.md)")
    if ray.is_initialized():
        return ray.get_runtime_context()
    if address:
        check_ray_address(address)
    try:
        if address:
            context = ray.init(address=address, logging_level=logging.WARNING)
        else:
            os.environ.setdefault(*ONE_MALLOC_ARENA)  # the local Ray's processes inherit it
            context = ray.init(include_dashboard=True, dashboard_host=dashboard_host, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as err:
        # a wrong or missing token looks like any other failed connection (after ~20 s of retries)
        hint = " (a cluster with token auth needs RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH)" if address else ""
        raise ClusterError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                         f"{str(err).splitlines()[0][:200]}{hint}") from None
    stop_gracefully_on_sigterm()  # ray.init replaced it
    url = getattr(context, "dashboard_url", None)
    login = " (it asks for Ray's token: `ray get-auth-token` prints it)" if token_auth_on(address) else ""
    print(f"Ray dashboard: http://{url}{login}" if url else "Ray dashboard: not running", file=sys.stderr)
    return context


def start_ray_alongside(task, address: str | None, dashboard_host: str = "127.0.0.1"):
    """`start_ray`, with `task()` run in a thread meanwhile; returns what the task returns (or raises what
    either raised). ray.init spends most of its 4-6 s waiting for Ray's processes to come up; opening a new
    SQLite MLflow store (2-3 s of imports and schema migrations) fits in that wait (`study.bench study`)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="beside-ray-start") as pool:
        opened = pool.submit(task)
        start_ray(address, dashboard_host)
        return opened.result()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on just now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# in the environment of every process of a head started by `start_ray_head`: its Ray Client server and its
# agents name neither the temp dir in their command line nor live under a process that does, once stopped
HEAD_MARK = "STUDY_RAY_HEAD"


def start_ray_head(temp_dir: str, cpus: int) -> str:
    """`ray start --head` with its dashboard, as a cluster's head is started (one malloc arena, as infra's
    image sets), its files under `temp_dir`; its address. Stop it with `stop_ray_processes_under(temp_dir)`."""
    import subprocess

    port = free_port()
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port), "--node-ip-address",
               "127.0.0.1", "--temp-dir", temp_dir, "--num-cpus", str(cpus), "--disable-usage-stats"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, ONE_MALLOC_ARENA[0]: ONE_MALLOC_ARENA[1], HEAD_MARK: temp_dir})
    if done.returncode:
        raise ClusterError(f"ray start --head failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    return f"127.0.0.1:{port}"


def stop_ray_processes_under(temp_dir: str) -> None:
    """Kill one Ray instance's processes (its temp dir in their command line or in `HEAD_MARK`), and the
    processes they started, unlike `ray stop`, which would stop every Ray instance on the machine."""
    import psutil

    def of_this_instance(proc) -> bool:
        try:
            return temp_dir in " ".join(proc.cmdline()) or proc.environ().get(HEAD_MARK) == temp_dir
        except psutil.Error:
            return False

    mine = {p for p in psutil.process_iter() if of_this_instance(p)}
    for proc in list(mine):
        try:
            mine.update(proc.children(recursive=True))
        except psutil.Error:
            pass
    for proc in mine:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(mine, timeout=30)


def token_auth_on(address: str | None) -> bool:
    """Whether Ray's token authentication guards the dashboard: Ray 2.60 turns it on for a new local instance
    unless RAY_AUTH_MODE says otherwise, and for a joined cluster when a token is configured."""

    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    return not address or bool(os.environ.get("RAY_AUTH_TOKEN")) or token.is_file()


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def require_shared_storage(storage_path: str | None, joined: bool) -> None:
    """A cluster whose nodes share no disk needs --storage-path: refuse a local default on several nodes
    (every trial would fail at its first checkpoint), and warn when joining a cluster of one node so far."""
    if storage_path:
        return
    nodes = len(alive_nodes())
    if nodes > 1:
        raise StorageError(f"this Ray cluster has {nodes} nodes: pass --storage-path s3://BUCKET/PREFIX (or a path "
                           "on a mount every node shares), where trials keep their checkpoints")
    if joined:
        print("warning: no --storage-path: trials on nodes that join this cluster later cannot checkpoint",
              file=sys.stderr)


def cluster_has_gpus() -> bool:
    """Whether any node of the connected cluster offers a GPU (the driver's own machine may have none)."""
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def trial_slots(resources: dict, cpus_per_trial: float, gpus_per_trial: float) -> int:
    """How many trials `resources` ({"CPU": n, "GPU": m}) hold at once."""
    by_cpu = int(resources.get("CPU", 0) // cpus_per_trial) if cpus_per_trial else 1 << 30
    by_gpu = int(resources.get("GPU", 0) // gpus_per_trial) if gpus_per_trial else 1 << 30
    return min(by_cpu, by_gpu)


def autoscaler_max_resources() -> dict | None:
    """The most resources the cluster's autoscaler may bring up ({"CPU": n, "GPU": m}), from the configuration
    the autoscaler reports to the GCS (node groups' max counts; what Ray Train v2 checks its workers against);
    None where no autoscaler reports one (a fixed cluster, a local Ray)."""
    from ray._private import state

    try:
        return state.state.get_max_resources_from_cluster_config() or None
    except Exception:  # an older GCS without the key, or a field this Ray does not know: no answer
        return None


def default_max_concurrent(cpus_per_trial: float, gpus_per_trial: float, num_samples: int, joined: bool) -> int:
    """Trials at once when --max-concurrent is not given (Tune keeps that many proposed, running or pending).

    On a local Ray: what its resources hold. On a joined cluster, which may autoscale, two needs pull apart: the
    autoscaler scales up only for pending demand, and Optuna's TPE models a proposal only once its start-up
    trials have finished (every trial proposed before that is random; with every trial at once, as before, all
    of them were). So: the trials the autoscaler's largest configuration holds, or where it reports none, twice
    what the cluster holds now (a pending demand as large as the running one); at most what leaves TPE half the
    study (about startup + concurrency - 1 trials are proposed before the start-up trials have finished); never
    fewer than the cluster holds now, nor more than the study's trials."""
    import ray

    from study.orchestration.tuning import startup_trials

    now = max(1, trial_slots(ray.cluster_resources(), cpus_per_trial, gpus_per_trial))
    if not joined:
        return max(1, min(now, num_samples))
    most = autoscaler_max_resources()
    demand = trial_slots(most, cpus_per_trial, gpus_per_trial) if most else 0
    if demand < 1:  # no configuration, or one that names neither resource a trial asks for
        most, demand = None, 2 * now
    for_tpe = num_samples // 2 - startup_trials(num_samples) + 1
    chosen = max(1, min(num_samples, max(now, min(demand, for_tpe))))
    source = "the autoscaler's maximum" if most else "twice the cluster's current"
    print(f"trials at once: {chosen} (slots now {now}, {source} {demand}, at most {max(1, for_tpe)} so that TPE "
          f"proposes half of the {num_samples} trials; --max-concurrent to choose)", file=sys.stderr)
    return chosen


def evaluate_on_cluster(settings: StudySettings, eval_config: dict, path: Path, what: str,
                        also_report: bool = False) -> dict:
    """The untrained encoder evaluated with `eval_config` as a Ray task (a cluster's head may have no CPU for
    it), kept at `path` in the study folder so a resumed study or replication does not evaluate it again."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    import ray

    from study.evaluation.robustness import evaluate_model

    print(f"evaluating the untrained encoder ({what}) ...", file=sys.stderr)
    # before the trials start, the reference may use every core of one node (up to 8); a task asking for
    # more CPUs than any single node has would never be scheduled
    largest_node = max((n["Resources"].get("CPU", 0) for n in alive_nodes()), default=1)
    cpus = min(8, max(settings.cpus_per_trial, largest_node))
    task = ray.remote(num_cpus=cpus, num_gpus=settings.gpus_per_trial)(evaluate_model)
    result = ray.get(task.remote(settings.model, settings.data_dir, eval_config, also_report))
    write_json(path, result)
    return result


def reference_row(settings: StudySettings, study_dir: Path) -> dict:
    """The study's reference row: the untrained encoder with the trials' own evaluation, on the selection split
    and the report split."""
    return evaluate_on_cluster(settings, settings.eval, Path(study_dir) / REFERENCE_FILE, "reference row",
                               also_report=True)
