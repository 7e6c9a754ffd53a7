"""A tracking server that lets no one in by default, for real: `mlflow server --app-name basic-auth` with its
runs and its users in one private PostgreSQL server, set up as infra/mlflow sets it up (infra/mlflow/
basic_auth.ini's settings, the admin password only in the server's environment). The study CLI logs to it as a
user made through the auth API, with credentials in MLFLOW_TRACKING_USERNAME/PASSWORD or in the URI (moved to
those variables before MLflow sees it), and writes them nowhere; a wrong password stops it before any trial, and
credentials in --storage-path are refused."""

from __future__ import annotations

import configparser
import os
import secrets
import time
from types import SimpleNamespace

import pytest
import requests

from study.orchestration.tracking import EXPERIMENT
from studytools import REPO, free_port, mlflow_server, postgres_server, run_cli, study_runs

AUTH_INI = REPO / "infra" / "mlflow" / "basic_auth.ini"
STUDY_USER = "study"


@pytest.fixture(scope="module")
def postgres_uri():
    """One private PostgreSQL server for this module's tests."""
    with postgres_server(prefix="pg-auth-") as uri:
        yield uri


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
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)}
    with mlflow_server(postgres_uri, tmp, "--app-name", "basic-auth", env=env, timeout=240) as uri:
        from mlflow import MlflowClient
        from mlflow.server.auth.client import AuthServiceClient

        with pytest.MonkeyPatch.context() as mp:  # the admin, as MLflow's clients read credentials
            mp.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            mp.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
            auth = AuthServiceClient(uri)
            auth.create_user(STUDY_USER, study_password)
            experiment = MlflowClient(uri).create_experiment(EXPERIMENT)
            auth.grant_user_permission(STUDY_USER, "experiment", experiment, "EDIT")
        # The first authenticated requests of a fresh server are slow (seconds on a busy 2-core machine): pay
        # that start-up cost here, as the study's user.
        for _ in range(3):
            requests.get(uri + "/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                         auth=(STUDY_USER, study_password), timeout=60).raise_for_status()
        yield SimpleNamespace(uri=uri, log=tmp / "mlflow-server.log", admin_password=admin_password,
                              password=study_password, experiment=experiment, postgres_uri=postgres_uri)


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
    # the password in the URI (issue 27): MLflow would quote it in every request error; the study moves it to
    # MLFLOW_TRACKING_PASSWORD in its own process before MLflow sees the URI
    study_dir = tmp_path / "authenticated"
    with_password = server.uri.replace("http://", f"http://{STUDY_USER}:{server.password}@")
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--tracking-uri", with_password, "--out", str(study_dir), timeout=600)
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

    # the password is nowhere in what the study wrote (Ray's folder included), printed or logged to MLflow
    assert (study_dir / "ray").is_dir() and (study_dir / "study.json").is_file()
    files = [p for p in study_dir.rglob("*") if p.is_file()]
    assert files
    recorded = [f"{k}={v}" for run in (parent, *children) for k, v in {**run.data.params, **run.data.tags}.items()]
    assert len(recorded) > 20  # the settings, the trials' configurations, the run context
    for secret in (server.password, server.admin_password):
        leaked = [str(p.relative_to(study_dir)) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"a password was written to {leaked}"
        assert secret not in result.stdout + result.stderr
        assert not [entry for entry in recorded if secret in entry], "a password is in a run's params or tags"
    assert server.admin_password not in server.log.read_text()


def test_an_mlflow_error_does_not_quote_a_password_from_the_uri(monkeypatch):
    """MLflow quotes the request URL, built from the tracking URI, in its errors (here: nothing listens). A client
    from `client_for` no longer has the credentials in the URI: they are in MLFLOW_TRACKING_USERNAME/PASSWORD."""
    import traceback

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from study.orchestration.tracking import client_for

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, "placeholder")  # so that monkeypatch puts back their absence, whatever client_for sets
        monkeypatch.delenv(key)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    secret = "pw-" + secrets.token_urlsafe(12)
    uri = f"http://{STUDY_USER}:{secret}@127.0.0.1:{free_port()}"

    def error_text(client) -> str:
        with pytest.raises(MlflowException) as raised:
            client.get_run("0" * 32)
        return "".join(traceback.format_exception(raised.value))

    assert secret in error_text(MlflowClient(tracking_uri=uri)), "MLflow quotes the URL (else this test proves nothing)"
    text = error_text(client_for(uri))
    assert "127.0.0.1" in text and secret not in text
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == secret and os.environ["MLFLOW_TRACKING_USERNAME"] == STUDY_USER


def test_credentials_in_the_storage_path_are_refused_in_one_line(tmp_path):
    from study.errors import StorageError
    from study.orchestration.studydir import check_storage

    secret = "secret-" + secrets.token_urlsafe(12)
    study_dir = tmp_path / "keys"
    result = run_cli("study.run", "--budget", "smoke", "--storage-path", f"s3://AKIAEXAMPLE:{secret}@bucket/studies",
                     "--out", str(study_dir), timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --storage-path s3://***@bucket/studies holds credentials"), last
    assert "AWS_ACCESS_KEY_ID" in last
    assert secret not in result.stdout + result.stderr and not study_dir.exists()
    with pytest.raises(StorageError, match="access_key=, secret_key=") as refused:  # pyarrow's query form
        check_storage(f"s3://bucket/studies?region=us-east-1&access_key=AKIAEXAMPLE&secret_key={secret}")
    assert secret not in str(refused.value)
