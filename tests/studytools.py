"""Helpers for the tests that run the real CLI: run a command, read a study's MLflow runs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from study.studydir import tracking_uri as study_tracking_uri
from study.tracking import PARENT_TAG

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
