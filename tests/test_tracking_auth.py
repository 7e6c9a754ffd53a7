"""A tracking server that lets no one in by default, for real: `mlflow server --app-name basic-auth` with its
runs and its users in one private PostgreSQL server, set up as infra/mlflow sets it up (infra/mlflow/
basic_auth.ini's settings, the admin password only in the server's environment). The study CLI logs to it as a
user made through the auth API, with credentials only in MLFLOW_TRACKING_USERNAME/PASSWORD, and writes them
nowhere; a wrong password stops it before any trial."""

from __future__ import annotations

import configparser
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from study.tracking import EXPERIMENT
from studytools import REPO, run_cli, start_cli, study_runs, wait_for

AUTH_INI = REPO / "infra" / "mlflow" / "basic_auth.ini"
STUDY_USER = "study"


# Copied from tests/test_cluster.py (its PostgreSQL fixture is function-scoped; this module needs one server
# for all its tests, and that file is edited independently).
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres_uri():
    """A private PostgreSQL server on a free port, as the `postgres` account when run as root."""
    bindir = _postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="pg-auth-", dir="/tmp"))
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
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def auth_config(database_uri: str) -> str:
    """infra/mlflow/basic_auth.ini with this test's PostgreSQL as the user store."""
    parser = configparser.ConfigParser()
    parser.read_string(AUTH_INI.read_text())
    parser["mlflow"]["database_uri"] = database_uri
    lines = [f"{key} = {value}" for key, value in parser["mlflow"].items()]
    return "\n".join(["[mlflow]", *lines]) + "\n"


@pytest.fixture(scope="module")
def server(postgres_uri, tmp_path_factory):
    """`mlflow server --app-name basic-auth` on 127.0.0.1: runs and users in the PostgreSQL above; the admin
    password and the CSRF key only in its environment. Then, as the admin, a user for the study with EDIT on
    the study's experiment (infra/README.md, step 1)."""
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    config = tmp / "basic_auth.ini"
    config.write_text(auth_config(postgres_uri))
    admin_password = "admin-" + secrets.token_urlsafe(18)
    study_password = "study-" + secrets.token_urlsafe(18)
    port, log = free_port(), tmp / "mlflow-server.log"
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
    proc = start_cli("mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", postgres_uri,
                     "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                     "--workers", "1", log=log, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                return requests.get(uri + "/health", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(healthy, proc, log, timeout=240, what="the MLflow server with basic-auth")
        from mlflow import MlflowClient
        from mlflow.server.auth.client import AuthServiceClient

        with pytest.MonkeyPatch.context() as mp:  # the admin, as MLflow's clients read credentials
            mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            mp.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
            auth = AuthServiceClient(uri)
            auth.create_user(STUDY_USER, study_password)
            experiment = MlflowClient(uri).create_experiment(EXPERIMENT)
            auth.grant_user_permission(STUDY_USER, "experiment", experiment, "EDIT")
        # The first authenticated requests of a fresh server are slow (seconds on a busy 2-core machine), and the
        # CLI gives its credential check 5 s: pay that start-up cost here, as the study's user.
        for _ in range(3):
            requests.get(uri + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                         auth=(STUDY_USER, study_password), timeout=60).raise_for_status()
        yield SimpleNamespace(uri=uri, log=log, admin_password=admin_password, password=study_password,
                              experiment=experiment, postgres_uri=postgres_uri)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=30)


def as_study_user(password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": STUDY_USER, "MLFLOW_TRACKING_PASSWORD": password}


def test_the_server_lets_no_one_in_without_credentials(server):
    search = server.uri + "/api/2.0/mlflow/experiments/search"
    assert requests.get(server.uri + "/health", timeout=60).ok  # the only open door
    assert requests.get(search, params={"max_results": 1}, timeout=60).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=(STUDY_USER, "not-the-password"),
                        timeout=60).status_code == 401
    started = time.monotonic()
    mine = requests.get(search, params={"max_results": 10}, auth=(STUDY_USER, server.password), timeout=60)
    print(f"an authenticated search took {time.monotonic() - started:.2f} s")
    assert mine.status_code == 200
    # NO_PERMISSIONS: the study's user sees the experiment it was granted, not the Default one
    assert [e["name"] for e in mine.json()["experiments"]] == [EXPERIMENT]

    import sqlalchemy  # the users live in the same PostgreSQL database as the runs

    engine = sqlalchemy.create_engine(server.postgres_uri)
    with engine.connect() as conn:
        users = set(conn.execute(sqlalchemy.text("select username from users")).scalars())
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    engine.dispose()
    assert users == {"admin", STUDY_USER}
    assert {"runs", "experiments", "alembic_version_auth"} <= tables


def test_a_wrong_password_stops_the_study_before_any_trial(server, tmp_path):
    study_dir = tmp_path / "refused"
    wrong = "wrong-" + secrets.token_urlsafe(12)
    started = time.monotonic()
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--tracking-uri", server.uri, "--out", str(study_dir), env=as_study_user(wrong), timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    print(f"refused in {elapsed:.1f} s (study folder created: {study_dir.exists()}): {last}")
    assert last.startswith("error:") and "refused" in last, last
    assert elapsed < 60, f"took {elapsed:.0f} s to refuse"
    assert not (study_dir / "ray").exists() and not (study_dir / "study.json").exists()
    assert wrong not in result.stdout + result.stderr


def test_a_study_logs_to_the_server_as_its_user_and_writes_no_password(server, tmp_path, monkeypatch):
    study_dir = tmp_path / "authenticated"
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--tracking-uri", server.uri, "--out", str(study_dir), env=as_study_user(server.password),
                     timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (study_dir / "mlflow.db").exists(), "the server, not an embedded store, holds the runs"

    # read back through MLflow's client, authenticated the same way (the environment)
    for key, value in as_study_user(server.password).items():
        monkeypatch.setenv(key, value)
    client, parent, children = study_runs(study_dir, tracking_uri=server.uri)
    assert parent.info.experiment_id == server.experiment
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert "objective.robust" in child.data.metrics
    assert "report/summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    # ... and nobody else reads them
    anonymous = requests.get(server.uri + "/api/2.0/mlflow/runs/get", params={"run_id": parent.info.run_id},
                             timeout=60)
    assert anonymous.status_code == 401

    # the password is nowhere in what the study wrote (Ray's folder included) or printed
    assert (study_dir / "ray").is_dir() and (study_dir / "study.json").is_file()
    files = [p for p in study_dir.rglob("*") if p.is_file()]
    assert files
    for secret in (server.password, server.admin_password):
        leaked = [str(p.relative_to(study_dir)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"a password was written to {leaked}"
        assert secret not in result.stdout + result.stderr
    assert server.admin_password not in server.log.read_text()
