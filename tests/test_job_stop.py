"""A study run as a Ray job and stopped as a user stops one: `ray job submit --no-wait`, then `ray job stop` while
its trials run. Ray starts a job's driver with SIGINT blocked and stops it with SIGTERM, then SIGKILL after
RAY_JOB_STOP_WAIT_TIME_S (read on the head): the study must stop as on Ctrl-C within that time, Tune's state saved
and its records true. Real `ray start --head` with its dashboard (the job server), the real CLI, an embedded MLflow
store, the smoke budget."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from study.orchestration.raycluster import HEAD_MARK, stop_ray_processes_under
from studytools import REPO, free_port, run_cli, study_runs

RAY = str(Path(sys.executable).with_name("ray"))
STOP_WAIT_S = 60  # RAY_JOB_STOP_WAIT_TIME_S on the head, as infra's RayJob sets it


@pytest.fixture
def ray_head(monkeypatch):
    """A one-node cluster's head with its dashboard on free ports (other tests may run a head), a private token,
    and the stop wait the study needs; yields the dashboard's address."""
    temp = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")  # Ray's socket paths must stay short
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    for key, value in dict(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                           RAY_JOB_STOP_WAIT_TIME_S=str(STOP_WAIT_S),
                           PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))).items():
        monkeypatch.setenv(key, value)
    dashboard = free_port()
    flags = ("--port", "--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--metrics-export-port", "--runtime-env-agent-port")
    ports = [(flag, str(free_port())) for flag in flags]
    command = [RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--temp-dir", temp, "--num-cpus", "2",
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               *[part for pair in ports for part in pair], "--disable-usage-stats"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO,
                              env={**os.environ, HEAD_MARK: temp, "MALLOC_ARENA_MAX": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        yield SimpleHead(f"http://127.0.0.1:{dashboard}", temp)
    finally:
        stop_ray_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


class SimpleHead:
    def __init__(self, address: str, temp: str):
        self.address, self.temp = address, temp

    def job(self, command: str, *args: str, timeout: float = 180) -> str:
        """`ray job <command> <args>` against this head; its output (Ray's CLI writes its own lines to stderr)."""
        done = subprocess.run([RAY, "job", command, "--address", self.address, *args], capture_output=True,
                              text=True, timeout=timeout, cwd=REPO)
        assert done.returncode == 0, f"ray job {command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout + done.stderr


def _statuses(study_dir: Path) -> list[str]:
    if not (study_dir / "study.json").is_file():
        return []
    try:
        return [c.info.status for c in study_runs(study_dir)[2]]
    except Exception:  # the store being created
        return []


def test_a_stopped_job_saves_its_study_which_resumes_under_another_folder_name(ray_head, tmp_path):
    storage = tmp_path / "shared_storage"  # as a bucket: both studies below keep their Tune state there
    study_dir = tmp_path / "first" / "smoke"
    job_id = f"study-{secrets.token_hex(4)}"
    ray_head.job("submit", "--no-wait", "--submission-id", job_id, "--", sys.executable, "-m", "study.run", "--space",
                 "hybrid_ratio", "--budget", "smoke", "--num-samples", "2", "--max-concurrent", "2", "--epochs", "2",
                 "--address", "auto", "--out", str(study_dir), "--storage-path", str(storage))

    deadline, asked = time.time() + 900, time.time()
    while _statuses(study_dir).count("RUNNING") < 2:  # both trials have started and are training
        if time.time() > asked + 15:  # (each `ray job` command costs a second of CPU)
            status, asked = ray_head.job("status", job_id, timeout=60), time.time()
            ended = any(word in status.lower() for word in ("failed", "succeeded", "stopped"))
            assert time.time() < deadline and not ended, status[-3000:]
        time.sleep(1)
    stopping = time.monotonic()
    ray_head.job("stop", job_id, timeout=STOP_WAIT_S + 60)
    stopped_in = time.monotonic() - stopping
    logs = subprocess.run([RAY, "job", "logs", "--address", ray_head.address, job_id], capture_output=True,
                          text=True, timeout=60).stdout  # the driver's output only
    print(f"`ray job stop` returned after {stopped_in:.1f} s")
    assert "stopped" in ray_head.job("status", job_id, timeout=60).lower()
    lines = [line for line in logs.splitlines() if line.strip()]
    # the study stopped itself (no SIGKILL): its last words are the resume command
    assert lines[-1].startswith(f"python -m study.run --resume {study_dir}"), logs[-3000:]
    assert stopped_in < STOP_WAIT_S
    _, parent, children = study_runs(study_dir)
    assert parent.info.status == "KILLED", logs[-4000:]
    assert len(children) == 2 and "RUNNING" not in {c.info.status for c in children}
    assert "KILLED" in {c.info.status for c in children}, "the stop came mid-trial"
    stop_ray_processes_under(ray_head.temp)  # the resume starts its own local Ray

    # issue 27 (3): the folder renamed, the resume still finds its own Tune state in the shared storage (by the
    # study id in study.json), and continues the same two trials under the same parent run
    moved = tmp_path / "first" / "smoke-renamed"
    study_dir.rename(moved)
    result = run_cli("study.run", "--resume", str(moved))
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = study_runs(moved)
    assert parent.info.status == "FINISHED"
    assert len(children) == 2 and len({c.data.tags["ray.trial_id"] for c in children}) == 2, "each trial once"
    assert {c.info.status for c in children} == {"FINISHED"}
    study_id = json.loads((moved / "study.json").read_text())["settings"]["study_id"]
    assert parent.data.params["study_id"] == study_id and study_id.startswith("smoke-")
    # issue 27 (6): after the resume in a new Ray session each trial's result.json in the storage still holds
    # every epoch once (Ray copies it back before appending; were it not, the upload would overwrite it)
    results = sorted((storage / study_id / "tune").glob("trial_*/result.json"))
    assert len(results) == 2, results
    for path in results:
        epochs = [json.loads(line)["training_iteration"] for line in path.read_text().splitlines() if line.strip()]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) == 2, (path, epochs)

    # a new study of the same folder name in the same storage gets its own Tune state: before study ids it
    # restored the first study's (finished) search and ran none of its own
    other = tmp_path / "second" / "smoke"
    result = run_cli("study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples", "1",
                     "--out", str(other), "--storage-path", str(storage))
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = study_runs(other)
    assert parent.info.status == "FINISHED" and len(children) == 1
    assert children[0].info.status == "FINISHED"
    prefixes = sorted(p.name for p in storage.iterdir())
    assert len(prefixes) == 2 and study_id in prefixes, prefixes
    for prefix in prefixes:
        assert (storage / prefix / "study_id").read_text() == prefix
