"""Bad input to every CLI: one clear line on stderr, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.orchestration.settings import StudySettings
from studytools import free_port

REPO = Path(__file__).resolve().parent.parent


def _not_a_model(tmp: Path) -> Path:
    (tmp / "empty_model").mkdir()
    return tmp / "empty_model"


def _config_of_no_model(tmp: Path, config: str) -> Path:
    """A folder with a config.json that names no usable model (and no tokenizer files)."""
    folder = tmp / "not_a_model_config"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    return folder


def _a_study(tmp: Path, **changes) -> Path:
    """A folder that looks like a study (study.json), for the flags --resume must refuse before reading more;
    `changes` edit its settings (None: without that key)."""
    folder = tmp / "a_study"
    folder.mkdir()
    settings = StudySettings(space="hybrid_ratio", budget="smoke", num_samples=1, epochs=1).to_json() | changes
    settings = {key: value for key, value in settings.items() if key not in changes or changes[key] is not None}
    (folder / "study.json").write_text(json.dumps({"settings": settings, "parent_run_id": "x", "experiment_id": "0"}))
    return folder


_UNFINISHED_STUDY: list[Path] = []  # built once per session, copied per test


def _a_study_without_finished_trials(tmp: Path) -> Path:
    """A study folder whose embedded MLflow store holds the parent run and one trial that failed."""
    import json
    import shutil
    import tempfile

    if not _UNFINISHED_STUDY:
        import atexit

        from mlflow import MlflowClient

        folder = Path(tempfile.mkdtemp(prefix="unfinished-study-")) / "study"
        atexit.register(shutil.rmtree, folder.parent, True)
        folder.mkdir()
        client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
        experiment = client.create_experiment("xling-robust", artifact_location=(folder / "mlartifacts").as_uri())
        parent = client.create_run(experiment, run_name="hybrid_ratio study").info.run_id
        child = client.create_run(experiment, run_name="abc12345 r=0.50 eps=0.1",
                                  tags={"mlflow.parentRunId": parent, "ray.trial_id": "abc12345"}).info.run_id
        client.log_param(child, "ratio", "0.5")
        client.set_terminated(child, status="FAILED")
        settings = StudySettings(space="hybrid_ratio", budget="smoke", num_samples=1, epochs=1,
                                 eval={"langs": ["swh"]}).to_json()
        (folder / "study.json").write_text(json.dumps({"settings": settings, "parent_run_id": parent,
                                                       "experiment_id": experiment, "tracking": {"embedded": True}}))
        _UNFINISHED_STUDY.append(folder)
    shutil.copytree(_UNFINISHED_STUDY[0], tmp / "unfinished")
    return tmp / "unfinished"


def _non_empty_dir(tmp: Path) -> Path:
    (tmp / "taken").mkdir()
    (tmp / "taken" / "something.txt").write_text("already here")
    return tmp / "taken"


def _not_a_study(tmp: Path) -> Path:
    (tmp / "not_a_study").mkdir()
    return tmp / "not_a_study"


def _malformed_data(tmp: Path) -> Path:
    data = tmp / "bad_data"
    (data / "tatoeba").mkdir(parents=True)
    (data / "tatoeba" / "tatoeba.swh-eng.swh").write_text("habari\nasante\n")
    (data / "tatoeba" / "tatoeba.swh-eng.eng").write_text("hello\n")
    return data


def _empty_data(tmp: Path) -> Path:
    data = tmp / "empty_data"
    (data / "tatoeba").mkdir(parents=True)
    (data / "tatoeba" / "tatoeba.swh-eng.swh").write_text("")
    (data / "tatoeba" / "tatoeba.swh-eng.eng").write_text("")
    return data


def _unwritable_dir(tmp: Path) -> Path:
    """Unwritable even for root (CI runs as root): the would-be parent is a file."""
    blocker = tmp / "a_file"
    blocker.write_text("not a directory")
    return blocker / "study"


# (name, argv builder, what the message must mention)
CASES = [
    ("unknown space", lambda t: ["study.run", "--space", "nope", "--out", str(t / "o")], "unknown search space"),
    ("unknown language", lambda t: ["study.run", "--langs", "xyz", "--out", str(t / "o")], "'xyz'"),
    ("bad budget", lambda t: ["study.run", "--budget", "huge", "--out", str(t / "o")], "unknown budget"),
    ("r outside [0, 1]", lambda t: ["study.run", "--range", "ratio=0,1.5", "--out", str(t / "o")],
     "key 'ratio': 1.5 outside [0.0, 1.0]"),
    ("malformed range", lambda t: ["study.run", "--range", "epsilon=small", "--out", str(t / "o")],
     "KEY=LOW,HIGH"),
    ("unreachable Ray address", lambda t: ["study.run", "--budget", "smoke", "--address", "127.0.0.1:9",
                                           "--out", str(t / "o")], "cannot connect to Ray"),
    ("bad attack method", lambda t: ["study.run", "--method", "pgdx", "--out", str(t / "o")], "pgdx"),
    ("zero samples", lambda t: ["study.run", "--num-samples", "0", "--out", str(t / "o")], "--num-samples"),
    ("negative gpus", lambda t: ["study.run", "--gpus-per-trial", "-1", "--out", str(t / "o")], "--gpus-per-trial"),
    ("missing data dir", lambda t: ["study.run", "--data-dir", str(t / "none"), "--out", str(t / "o")],
     "does not exist"),
    ("malformed data file", lambda t: ["study.run", "--langs", "swh", "--data-dir", str(_malformed_data(t)),
                                       "--out", str(t / "o")], "line"),
    ("empty data file", lambda t: ["study.evaluate", "--langs", "swh", "--data-dir", str(_empty_data(t))], "empty"),
    ("unreachable tracking server", lambda t: ["study.run", "--budget", "smoke", "--tracking-uri",
                                               "http://user:secret@127.0.0.1:9", "--out", str(t / "o")],
     "unreachable"),
    ("output dir not writable", lambda t: ["study.run", "--budget", "smoke", "--out", str(_unwritable_dir(t))],
     "not writable"),
    ("resume of a non-study", lambda t: ["study.run", "--resume", str(_not_a_study(t))], "not a study directory"),
    ("report of a non-study", lambda t: ["study.report", str(_not_a_study(t))], "not a study directory"),
    ("model dir missing", lambda t: ["study.evaluate", "--model", str(t / "nomodel"), "--langs", "swh"],
     "does not exist"),
    ("model dir not a model", lambda t: ["study.evaluate", "--model", str(_not_a_model(t)), "--langs", "swh"],
     "not a model directory"),
    ("negative radius", lambda t: ["study.evaluate", "--radii", "-1", "--langs", "swh"], "radii"),
    ("unknown language (evaluate)", lambda t: ["study.evaluate", "--langs", "swh,qqq"], "'qqq'"),
    ("check of a missing model", lambda t: ["study.models", "check", "--model", str(t / "nomodel")],
     "does not exist"),
    ("model config of no known model", lambda t: ["study.evaluate", "--langs", "swh", "--model",
                                                  str(_config_of_no_model(t, '{"foo": 1}'))], "not a usable model"),
    ("model config without a tokenizer", lambda t: ["study.run", "--budget", "smoke", "--out", str(t / "o"), "--model",
                                                    str(_config_of_no_model(t, '{"model_type": "xlm-roberta"}'))],
     "not a usable model"),
    ("output dir cannot be created", lambda t: ["study.run", "--budget", "smoke", "--out", "/proc/1/xling-study"],
     "not writable"),
    ("resume with new settings", lambda t: ["study.run", "--resume", str(_a_study(t)), "--epochs", "3"],
     "--epochs cannot change"),
    ("report from an unreachable server", lambda t: ["study.report", str(_a_study(t)), "--tracking-uri",
                                                     "http://user:secret@127.0.0.1:9"], "unreachable"),
    ("replicate of a non-study", lambda t: ["study.replicate", str(_not_a_study(t))], "not a study directory"),
    ("report of a study.json with foreign settings", lambda t: ["study.report", str(_a_study(t, epochs=None,
                                                                                       colour="blue"))],
     "settings are not a study's: unknown colour; missing epochs"),
    ("export of a study with no finished trial", lambda t: ["study.export", str(_a_study_without_finished_trials(t))],
     "no finished trial"),
    ("export of an unknown trial", lambda t: ["study.export", str(_a_study_without_finished_trials(t)), "--trial",
                                              "nope1234"], "no trial 'nope1234'"),
    ("export into a non-empty folder", lambda t: ["study.export", str(_a_study(t)), "--out", str(_non_empty_dir(t))],
     "exists and is not empty"),
    ("export to an unreachable registry", lambda t: ["study.export", str(_a_study(t)), "--register", "m",
                                                     "--tracking-uri", f"http://127.0.0.1:{free_port()}"],
     "unreachable"),
    ("export of a non-study", lambda t: ["study.export", str(_not_a_study(t))], "not a study directory"),
]


@pytest.mark.parametrize("name, argv, mention", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(tmp_path, name, argv, mention):
    args = argv(tmp_path)
    before = {p for p in tmp_path.rglob("*")}
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    stderr_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert stderr_lines and stderr_lines[-1].startswith("error:"), result.stderr[-2000:]
    assert mention in stderr_lines[-1], stderr_lines[-1]
    assert "secret" not in result.stderr + result.stdout, "credentials must not be printed"
    assert {p for p in tmp_path.rglob("*")} == before, "nothing may be written on bad input"
