"""Scale-out, for real on one machine: a two-node Ray cluster started with `ray start`, and an MLflow tracking
server backed by a real PostgreSQL server. The study CLI joins them with --address and --tracking-uri."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from studytools import run_cli, start_cli, study_runs, wait_for

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- two Ray nodes
def start_ray(*args: str) -> None:
    done = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ray start {' '.join(args)} failed:\n{done.stderr[-3000:]}"


@pytest.fixture
def two_node_cluster(tmp_path, monkeypatch):
    """A head node and a worker node (one CPU each; the worker carries a custom resource), both local,
    with token authentication on and a private token, set explicitly: Ray 2.60's `ray start --head` turns
    token auth on by itself whenever ~/.ray/auth_token exists (any earlier local ray.init writes one),
    but `ray start --address` does not, so the worker could not join."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray2n-", dir="/tmp")  # Ray's socket paths must stay short
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    # both nodes, alive_nodes and the study CLI (child processes inherit os.environ) use this token
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    common = ["--num-cpus", "1", "--object-store-memory", str(200 * 2**20), "--disable-usage-stats"]
    address = f"127.0.0.1:{port}"
    try:
        start_ray("--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--temp-dir", temp,
                  "--include-dashboard", "false", *common)
        start_ray("--address", address, "--node-ip-address", "127.0.0.1", "--resources", '{"second_node": 1}',
                  *common)
        yield address
    finally:
        stop_ray_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_ray_processes_under(temp: str) -> None:
    """Kill this cluster's processes only (all carry its temp dir in their command line), unlike
    `ray stop`, which would stop every Ray instance on the machine."""
    import psutil

    mine = [p for p in psutil.process_iter(["cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
    for proc in mine:
        proc.kill()
    psutil.wait_procs(mine, timeout=30)


def alive_nodes(address: str) -> dict[str, dict]:
    """{node id: resources} of the cluster, asked from a fresh process: this one's Ray config (the auth mode
    included) is fixed once any earlier test has started Ray in it."""
    code = ("import json, sys, ray; ray.init(address=sys.argv[1], configure_logging=False); "
            "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))")
    done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_study_spreads_its_trials_over_two_ray_nodes(two_node_cluster, tmp_path):
    nodes = alive_nodes(two_node_cluster)
    assert len(nodes) == 2 and sum("second_node" in r for r in nodes.values()) == 1

    study_dir = tmp_path / "two_nodes"
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--cpus-per-trial", "1", "--address", two_node_cluster, "--out", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = study_runs(study_dir)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    # one CPU per node and one per trial: the two trials ran at once, one on each node
    assert {c.data.tags["ray.node_id"] for c in children} == set(nodes)


# ----------------------------------------------------------------------------- MLflow on PostgreSQL
def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_uri():
    """A private PostgreSQL server on a free port (Debian's `postgresql`, installed by .ci/run)."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    data, port = root / "data", free_port()
    # PostgreSQL refuses to run as root: run it as the `postgres` account the Debian package creates
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


@pytest.fixture
def mlflow_server(postgres_uri, tmp_path):
    """`mlflow server` on 127.0.0.1 with the PostgreSQL backend store and a local artifact store."""
    port = free_port()
    log = tmp_path / "mlflow-server.log"
    server = start_cli("mlflow", "server", "--backend-store-uri", postgres_uri, "--artifacts-destination",
                       str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                       log=log)
    uri = f"http://127.0.0.1:{port}"
    try:
        import requests

        def healthy():
            try:
                return requests.get(uri + "/health", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(healthy, server, log, timeout=180, what="the MLflow server")
        yield uri
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)


def test_study_logs_to_an_mlflow_server_on_postgresql(mlflow_server, postgres_uri, tmp_path):
    study_dir = tmp_path / "on_server"
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--tracking-uri", mlflow_server, "--out", str(study_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (study_dir / "mlflow.db").exists(), "the server, not an embedded store, holds the runs"
    client, parent, children = study_runs(study_dir, tracking_uri=mlflow_server)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert "objective.robust" in child.data.metrics and "acc.swh.attacked_eps0.2" in child.data.metrics
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/summary.md" in logged

    import sqlalchemy  # the rows really are in PostgreSQL

    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.connect() as conn:
        runs = conn.execute(sqlalchemy.text("select count(*) from runs")).scalar()
    engine.dispose()
    assert runs == 3
