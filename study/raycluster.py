"""Ray: joining a cluster or starting a local instance, and the work the driver sends to it directly
(the untrained encoder's reference row)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from study.errors import ClusterError, StorageError
from study.studydir import REFERENCE_FILE, write_json


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


def default_max_concurrent(cpus_per_trial: float, gpus_per_trial: float, num_samples: int, joined: bool) -> int:
    """Trials at once when --max-concurrent is not given. On a local Ray: what its resources hold. On a cluster
    that may autoscale: every trial (Tune then keeps as many pending, and the autoscaler sees the demand)."""
    import ray

    if joined:
        return num_samples
    cpus = ray.cluster_resources().get("CPU", 1)
    gpus = ray.cluster_resources().get("GPU", 0)
    by_cpu = int(cpus // cpus_per_trial) if cpus_per_trial else 64
    by_gpu = int(gpus // gpus_per_trial) if gpus_per_trial else 64
    return max(1, min(by_cpu, by_gpu, num_samples))


def evaluate_on_cluster(settings: dict, eval_config: dict, path: Path, what: str, also_report: bool = False) -> dict:
    """The untrained encoder evaluated with `eval_config` as a Ray task (a cluster's head may have no CPU for
    it), kept at `path` in the study folder so a resumed study or replication does not evaluate it again."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    import ray

    from study.robustness import evaluate_model

    print(f"evaluating the untrained encoder ({what}) ...", file=sys.stderr)
    # before the trials start, the reference may use every core of one node (up to 8); a task asking for
    # more CPUs than any single node has would never be scheduled
    largest_node = max((n["Resources"].get("CPU", 0) for n in alive_nodes()), default=1)
    cpus = min(8, max(settings["cpus_per_trial"], largest_node))
    task = ray.remote(num_cpus=cpus, num_gpus=settings["gpus_per_trial"])(evaluate_model)
    result = ray.get(task.remote(settings["model"], settings["data_dir"], eval_config, also_report))
    write_json(path, result)
    return result


def reference_row(settings: dict, study_dir: Path) -> dict:
    """The study's reference row: the untrained encoder with the trials' own evaluation, on the selection split
    and the report split."""
    return evaluate_on_cluster(settings, settings["eval"], Path(study_dir) / REFERENCE_FILE, "reference row",
                               also_report=True)
