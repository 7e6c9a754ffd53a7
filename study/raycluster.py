"""Ray: joining a cluster or starting a local instance, and the work the driver sends to it directly
(the untrained encoder's reference row)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from study.errors import ClusterError
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


def start_ray(address: str | None, dashboard_host: str = "127.0.0.1"):
    """Join the cluster at `address`, or start a local Ray with its dashboard; print the dashboard URL."""
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
        raise ClusterError(f"cannot connect to Ray at {address or 'a new local instance'}: "
                         f"{str(err).splitlines()[0][:200]}{hint}") from None
    url = getattr(context, "dashboard_url", None)
    print(f"Ray dashboard: http://{url}" if url else "Ray dashboard: not running", file=sys.stderr)
    return context


def default_max_concurrent(cpus_per_trial: float, gpus_per_trial: float, num_samples: int) -> int:
    """How many trials the connected cluster's resources hold at once (at most `num_samples`)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 1)
    gpus = ray.cluster_resources().get("GPU", 0)
    by_cpu = int(cpus // cpus_per_trial) if cpus_per_trial else 64
    by_gpu = int(gpus // gpus_per_trial) if gpus_per_trial else 64
    return max(1, min(by_cpu, by_gpu, num_samples))


def reference_row(settings: dict, study_dir: Path) -> dict:
    """The untrained encoder evaluated once per study, with the trials' evaluation, as a Ray task;
    kept in the study directory, so a resumed study does not evaluate it again."""
    path = Path(study_dir) / REFERENCE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    import ray

    from study.robustness import evaluate_model

    print("evaluating the untrained encoder (reference row) ...", file=sys.stderr)
    # before the trials start, the reference may use every core of one node (up to 8); a task asking for
    # more CPUs than any single node has would never be scheduled
    largest_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    cpus = min(8, max(settings["cpus_per_trial"], largest_node))
    task = ray.remote(num_cpus=cpus, num_gpus=settings["gpus_per_trial"])(evaluate_model)
    result = ray.get(task.remote(settings["model"], settings["data_dir"], settings["eval"]))
    write_json(path, result)
    return result
