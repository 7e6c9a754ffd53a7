"""Scale-out, for real on one machine: a two-node Ray cluster started with `ray start`, and an MLflow tracking
server backed by a real PostgreSQL server. The study CLI joins them with --address and --tracking-uri."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from study.orchestration.raycluster import stop_ray_processes_under
from studytools import (
    free_port,
    metric_steps,
    mlflow_fluent_uri,
    postgres_server,
    run_cli,
    start_cli,
    study_runs,
    wait_for,
)
from studytools import mlflow_server as mlflow_server_on

RAY = str(Path(sys.executable).with_name("ray"))


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
    # both nodes of this test share the machine's disk, so a local folder is a shared mount for them
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--cpus-per-trial", "1", "--address", two_node_cluster, "--out", str(study_dir),
                     "--storage-path", str(tmp_path / "shared_storage"))
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = study_runs(study_dir)
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    # one CPU per node and one per trial: the two trials ran at once, one on each node
    assert {c.data.tags["ray.node_id"] for c in children} == set(nodes)


def test_a_local_default_storage_is_refused_on_two_nodes(two_node_cluster, tmp_path):
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--address", two_node_cluster,
                     "--out", str(tmp_path / "refused"), timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "2 nodes: pass --storage-path" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "refused").exists()


def test_ray_client_mode_is_refused_with_a_pointer_to_ray_job_submit(tmp_path):
    result = run_cli("study.run", "--budget", "smoke", "--address", "ray://127.0.0.1:10001", "--out",
                     str(tmp_path / "client"), timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Ray Client") and "ray job submit" in last
    assert not (tmp_path / "client").exists()


# ----------------------------------------------------------------------------- nodes that share no disk
@pytest.fixture
def s3_server(monkeypatch):
    """moto's standalone S3-protocol server on 127.0.0.1 (as Ray's and s3fs's own tests use), with a bucket;
    the AWS_* variables point boto3, pyarrow (Ray's storage) and every process started from here at it."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="moto-")) / "moto.log"
    server = start_cli("moto.server", "-H", "127.0.0.1", "-p", str(port), log=log)
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in dict(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                           AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint).items():
        monkeypatch.setenv(key, value)
    try:
        import boto3
        import requests

        def up():
            try:
                return requests.get(endpoint, timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_for(up, server, log, timeout=60, what="the S3 server")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="studies")
        yield s3
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


@pytest.fixture
def share_nothing_cluster(tmp_path, monkeypatch, s3_server):
    """A head node with no CPU (as KubeRay's manifests set it: trials never run there) and a worker node in its
    own mount namespace, with private tmpfs mounts over Ray's temp folder and over this test's folder: the
    worker sees neither the head's session files nor the study folder the driver writes. Model cache, data and
    the virtualenv stay visible (every node has them, as on a real cluster)."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray0d-", dir="/tmp")
    token = Path(tempfile.mkdtemp(prefix="ray0d-token-", dir="/tmp")) / "auth_token"  # outside the private mounts
    token.write_text(secrets.token_hex(32))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    private = tmp_path / "driver_only"
    private.mkdir()
    address = f"127.0.0.1:{port}"
    common = ["--object-store-memory", str(200 * 2**20), "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]
    try:
        start_ray("--head", "--port", str(port), "--temp-dir", temp, "--include-dashboard", "false",
                  "--num-cpus", "0", *common)
        script = (f"mount -t tmpfs tmpfs {temp} && mount -t tmpfs tmpfs {private} "
                  f"&& exec {RAY} start --address {address} --num-cpus 2 "
                  f"--num-gpus 1 --resources '{{\"worker_node\": 1}}' {' '.join(common)}")
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"worker node failed to start:\n{done.stderr[-3000:]}"
        yield address, private
    finally:
        stop_ray_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(token.parent, ignore_errors=True)


def _trial_processes_in_other_mount_namespaces() -> list:
    """The processes running a trial's function (Ray titles them after the trainable's actor) on the worker
    node: in another mount namespace than this one, so no other Ray instance on the machine is touched."""
    import psutil

    ours = os.readlink("/proc/self/ns/mnt")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            trial = "ImplicitFunc" in " ".join(proc.info["cmdline"] or [])
            if trial and os.readlink(f"/proc/{proc.pid}/ns/mnt") != ours:
                found.append(proc)
        except OSError:  # the process ended meanwhile
            pass
    return found


def test_a_study_on_nodes_that_share_no_disk_keeps_everything_in_the_bucket(share_nothing_cluster, s3_server):
    address, private = share_nothing_cluster
    nodes = alive_nodes(address)
    worker = next(node for node, resources in nodes.items() if "worker_node" in resources)
    assert len(nodes) == 2 and nodes[worker].get("GPU") == 1

    study_dir, log = private / "study", private / "study.log"
    storage = "s3://studies/ray"
    # pareto: no early stopping, so both trials train both epochs and the replication has a best r > 0
    proc = start_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "2",
                     "--epochs", "2", "--objective", "pareto", "--cpus-per-trial", "2", "--address", address,
                     "--storage-path", storage, "--out", str(study_dir), log=log)
    prefix = f"ray/{study_dir.name}-"  # ray/<study id>/tune/...: the id is the folder's name and 8 hex digits

    def first_checkpoint():
        listed = s3_server.list_objects_v2(Bucket="studies", Prefix=prefix).get("Contents", [])
        return [o["Key"] for o in listed if "/checkpoint_000000/trainable_weights.safetensors" in o["Key"]]

    try:
        wait_for(first_checkpoint, proc, log, timeout=600, what="the first checkpoint in the bucket")
        victims = wait_for(_trial_processes_in_other_mount_namespaces, proc, log, timeout=60,
                           what="the trial's process on the worker node")
        for victim in victims:
            victim.kill()  # SIGKILL, mid-study: the trial must come back from its checkpoint in the bucket
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)

    keys = [o["Key"] for o in s3_server.list_objects_v2(Bucket="studies", Prefix=prefix)["Contents"]]
    checkpoints = sorted({k.split("/checkpoint_")[0] + "/checkpoint_" + k.split("/checkpoint_")[1][:6]
                          for k in keys if "/checkpoint_" in k})
    study_id = json.loads((study_dir / "study.json").read_text())["settings"]["study_id"]
    assert {k.split("/")[1] for k in keys} == {study_id}, "one study's prefix, named by its id"
    assert any(k.endswith("tune/tuner.pkl") for k in keys), "Tune's state is in the bucket"
    assert len({c.split("/")[-2] for c in checkpoints}) == 2, "both trials checkpointed into the bucket"
    assert not (study_dir / "ray").exists(), "nothing of Ray's on the driver's disk"

    client, parent, children = study_runs(study_dir)
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["ray.node_id"] == worker, "trials ran on the worker node"
        for key in ("epoch", "objective.robust", "selection.acc.swh.clean"):
            assert metric_steps(client, child.info.run_id, key) == [1, 2], key  # no gap, no duplicate
    assert sorted(c.data.tags["ray.num_failures"] for c in children) == ["0", "1"], "one trial was killed"
    assert (study_dir / "report" / "summary.md").is_file()

    # --resume finds Tune's state in the bucket: nothing left to run, no trial duplicated
    result = run_cli("study.run", "--resume", str(study_dir), "--address", address, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(study_runs(study_dir)[2]) == 2

    result = run_cli("study.replicate", str(study_dir), "--top", "1", "--seeds", "1", "--address", address,
                     timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (study_dir / "replication" / "findings.md").is_file()
    replica_keys = [o["Key"] for o in s3_server.list_objects_v2(
        Bucket="studies", Prefix=f"ray/{study_id}/replicate/")["Contents"]]
    assert sum(k.endswith("/hits.json") for k in replica_keys) >= 2, "per-sentence hits came through the bucket"
    print("objects of the first trial:", *sorted(k for k in keys if checkpoints[0].split("/")[-2] in k), sep="\n  ")


def test_budget_auto_follows_the_gpus_of_the_cluster_not_of_the_driver(share_nothing_cluster):
    address, _ = share_nothing_cluster
    code = ("import sys, ray; ray.init(address=sys.argv[1], configure_logging=False); "
            "from study.orchestration.raycluster import cluster_has_gpus; "
            "from study.orchestration.budgets import resolve_budget; "
            "print(resolve_budget('auto', cluster_has_gpus())[0])")
    done = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "gpu", "the GPU is on the worker node only (faked)"


# ----------------------------------------------------------------------------- MLflow on PostgreSQL
@pytest.fixture
def postgres_uri():
    """A private PostgreSQL server on a free port (tests/studytools.postgres_server)."""
    with postgres_server() as uri:
        yield uri


@pytest.fixture
def mlflow_server(postgres_uri, tmp_path):
    """`mlflow server` on 127.0.0.1 with the PostgreSQL backend store and a local artifact store."""
    with mlflow_server_on(postgres_uri, tmp_path) as uri:
        yield uri


def _checkpoints(study_dir: Path) -> list[Path]:
    return sorted((study_dir / "ray" / "tune").glob("trial_*/checkpoint_*"))


def test_an_interrupted_study_on_a_postgresql_server_is_killed_then_resumed(mlflow_server, postgres_uri, tmp_path):
    """Ctrl-C (SIGINT) mid-study against the PostgreSQL-backed server, the tracking URI (with a password in it)
    given only in the environment: the record says KILLED, nothing stays RUNNING, the last line is the resume
    command; --resume finishes every trial once, the report reads the server, and the password is on no disk."""
    import signal as signals

    secret = f"pw-{secrets.token_hex(8)}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server.replace("http://", f"http://study:{secret}@")}
    study_dir, log = tmp_path / "interrupted", tmp_path / "first.log"
    proc = start_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "3",
                     "--max-concurrent", "1", "--out", str(study_dir), log=log, env=env)
    try:
        wait_for(lambda: _checkpoints(study_dir), proc, log, what="the first trial's checkpoint")
        proc.send_signal(signals.SIGINT)
        assert proc.wait(timeout=300) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines[-1] == f"python -m study.run --resume {study_dir}"
    client, parent, children = study_runs(study_dir, tracking_uri=mlflow_server)
    assert parent.info.status == "KILLED"
    assert 1 <= len(children) < 3 and "RUNNING" not in {c.info.status for c in children}

    result = run_cli("study.run", "--resume", str(study_dir), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = study_runs(study_dir, tracking_uri=mlflow_server)
    assert parent.info.status == "FINISHED"
    assert len(children) == 3 and len({c.data.tags["ray.trial_id"] for c in children}) == 3
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert "objective.robust" in child.data.metrics and "selection.acc.swh.attacked_eps0.2" in child.data.metrics
    assert "report/summary.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}

    import sqlalchemy  # the rows really are in PostgreSQL

    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select count(*) from runs")).scalar() == 4  # parent + 3 trials
    engine.dispose()

    (study_dir / "report" / "summary.md").unlink()
    result = run_cli("study.report", str(study_dir), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (study_dir / "report" / "summary.md").is_file() and not (study_dir / "mlflow.db").exists()
    # issue 16: the best trial exported and registered on the PostgreSQL-backed server, loaded back by alias
    exported = run_cli("study.export", str(study_dir), "--register", "xling-pg", env=env)
    assert exported.returncode == 0, exported.stderr[-3000:]
    import mlflow

    with mlflow_fluent_uri(mlflow_server):
        version = mlflow.MlflowClient().get_model_version_by_alias("xling-pg", "best")
        predicted = mlflow.pyfunc.load_model("models:/xling-pg@best").predict(["Habari ya asubuhi.", "Good morning."])
    assert version.tags["study"] == study_dir.name and version.run_id in {c.info.run_id for c in children}
    assert predicted.shape == (2, 384) and abs(float((predicted[0] ** 2).sum()) - 1) < 1e-4
    engine = sqlalchemy.create_engine(postgres_uri)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("select count(*) from model_versions")).scalar() == 1
    engine.dispose()

    leaked = [str(p) for p in study_dir.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, f"the password reached the disk: {leaked}"
    assert secret not in log.read_text() + result.stdout + result.stderr
    assert secret not in exported.stdout + exported.stderr
