"""Helpers for the tests that run the real CLI: run a command, read a study's MLflow runs back."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from study.orchestration.raycluster import free_port
from study.orchestration.studydir import tracking_uri as study_tracking_uri
from study.orchestration.tracking import PARENT_TAG

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=600, env=None, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <args>` from the repository root; returns the finished process (stdout, stderr captured)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def start_cli(*args, log: Path, env=None) -> subprocess.Popen:
    """`python -m <args>` in the background, in its own process group, output to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float = 400, what: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail if `proc` exits first or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def study_runs(study_dir: Path, tracking_uri: str | None = None):
    """(client, parent run, child runs) of a study, from its study.json."""
    saved = json.loads((study_dir / "study.json").read_text())
    client = MlflowClient(tracking_uri=study_tracking_uri(study_dir, saved, tracking_uri))
    parent = client.get_run(saved["parent_run_id"])
    children = client.search_runs([saved["experiment_id"]],
                                  filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    return client, parent, children


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@contextlib.contextmanager
def postgres_server(prefix: str = "pg-"):
    """A private PostgreSQL server on a free port (Debian's `postgresql`, installed by .ci/run), as the
    `postgres` account when run as root (PostgreSQL refuses root); yields an SQLAlchemy URI of database mlflow.
    Skips where PostgreSQL is not installed, fails on CI."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    data, port = root / "data", free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
                    "-o", f"-h 127.0.0.1 -p {port} -k {root}"], check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                        "-U", "mlflow", "mlflow"], check=True, capture_output=True, timeout=60)
        # +psycopg2: SQLAlchemy >= 2.1 maps a bare postgresql:// to psycopg 3 (as infra/mlflow/serve.sh notes)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path, *options: str, env=None, timeout: float = 180):
    """`mlflow server` on 127.0.0.1 (a free port) with `backend_store_uri` and artifacts under `workdir`, plus
    `options` (e.g. "--app-name", "basic-auth"); yields its URL once /health answers; stopped at the end."""
    import requests

    port, log = free_port(), Path(workdir) / "mlflow-server.log"
    server = start_cli("mlflow", "server", "--backend-store-uri", backend_store_uri, "--artifacts-destination",
                       str(Path(workdir) / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                       "--workers", "1", *options, log=log, env=env)
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return requests.get(uri + "/health", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(healthy, server, log, timeout=timeout, what="the MLflow server")
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker stuck on a connection: no reason to fail a test
                os.killpg(server.pid, 9)
                server.wait(timeout=30)


@contextlib.contextmanager
def mlflow_fluent_uri(uri: str):
    """MLflow's fluent API (e.g. `mlflow.pyfunc.load_model("models:/NAME@best")`) pointed at `uri`, tracking and
    registry, for one block. `mlflow.set_tracking_uri` and `set_registry_uri` also export MLFLOW_TRACKING_URI and
    MLFLOW_REGISTRY_URI so that subprocesses inherit them: every later study CLI of the test session would log to
    that store. Both the module state and the environment are put back."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    saved_env = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    saved = tracking._tracking_uri, registry._registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
