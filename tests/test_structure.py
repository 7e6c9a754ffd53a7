"""The structure the code promises: commands import only library modules, and a trial's configuration keys
are defined in one place (trainables/config.py), from which everything else derives.

The last test adds a made-up key to a copy of the code, in that one place, and runs a real smoke study with a
search space that searches it: the key must reach the trainable, the MLflow child runs, the progress table
and the report, with nothing else edited.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from study.errors import ConfigError
from trainables.config import DEFAULTS, KEYS, SEARCHABLE, TrialConfig, rule_of

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {"run", "replicate", "report", "evaluate", "bench", "export", "bundle"}  # python -m study.<name>
PART_OF = {"bench_gpu": "bench"}  # `python -m study.bench gpu`: a part of that command may use its helpers
PACKAGES = ("study", "trainables", "search_spaces")


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function ("from study import x" counts as study.x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_imports_a_command_module():
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            imported = {name.removeprefix("study.") for name in _imported_modules(path) if name.startswith("study.")}
            for command in (COMMANDS & imported) - {PART_OF.get(path.stem)}:
                offenders.append(f"{path.relative_to(REPO)} imports study.{command}")
    assert not offenders, offenders


def test_module_map_lists_every_module():
    import study

    listed = {line.split()[0] for line in study.__doc__.splitlines() if line.startswith("  study.")}
    present = {f"study.{p.stem}" for p in (REPO / "study").glob("*.py") if p.stem != "__init__"}
    assert listed == present


def test_trial_config_refuses_unknown_keys_and_values_outside_its_rules():
    with pytest.raises(ConfigError, match="unknown trial configuration key.*'lerning_rate'"):
        TrialConfig.from_dict({"ratio": 0.5, "lerning_rate": 1e-4})
    with pytest.raises(ConfigError, match="key 'method': 'pgdx' is not one of"):
        TrialConfig(method="pgdx")
    with pytest.raises(ConfigError, match="key 'attack_steps': 2.5 is not an int"):
        TrialConfig(attack_steps=2.5)
    for key in SEARCHABLE:  # every default obeys its own rule, and the rule is well formed
        rule = rule_of(key)
        assert isinstance(rule, tuple) and rule, key
        assert getattr(DEFAULTS, key) is None or (rule[1] <= getattr(DEFAULTS, key) <= rule[2]
                                                   if isinstance(rule[0], type) else getattr(DEFAULTS, key) in rule)


def test_trial_config_round_trips_through_ray_and_mlflow():
    config = TrialConfig(ratio=0.3, epsilon=1.5, method="freelb", step_ratio=0.5, freeze_embeddings=False,
                         max_train_pairs=64, replica="best2", data_dir="/data", eval={"langs": ["swh"], "seed": 3})
    assert TrialConfig.from_dict(config.to_dict()) == config  # Ray's dict and back
    params = config.mlflow_params()
    assert set(params) == set(KEYS) - {"eval", "data_dir"}  # the parent run records those once
    back = TrialConfig.from_params(params, data_dir="/data", eval={"langs": ["swh"], "seed": 3})
    assert back == config


MADE_UP_FIELD = ('    made_up_knob: float = _knob(0.25, within=(float, 0.0, 1.0), label="knob")'
                 '  # a key added in one place\n')
PROBE_SPACE = '''"""A space that searches the made-up key (written by tests/test_structure.py)."""

from search_spaces import Uniform

DESCRIPTION = "r and the made-up knob"
SPACE = {"ratio": Uniform(0.0, 1.0), "made_up_knob": Uniform(0.1, 0.9)}
FIXED = {"method": "fgsm"}
'''


@pytest.fixture(scope="module")
def code_with_a_made_up_key(tmp_path_factory, data_dir) -> tuple[Path, dict]:
    """A copy of the packages with one field added to TrialConfig (and a space that searches it)."""
    root = tmp_path_factory.mktemp("madeup")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    config = root / "trainables" / "config.py"
    text = config.read_text()
    anchor = "    # -- set by the driver\n"
    assert anchor in text
    config.write_text(text.replace(anchor, MADE_UP_FIELD + anchor))
    (root / "search_spaces" / "probe.py").write_text(PROBE_SPACE)
    spaces = root / "search_spaces" / "__init__.py"
    spaces.write_text(spaces.read_text().replace('SPACE_NAMES = (', 'SPACE_NAMES = ("probe", '))
    # the copy comes first on the path, in the driver and in Ray's workers (they inherit the environment)
    env = {**os.environ, "PYTHONPATH": str(root), "STUDY_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    return root, env


def test_a_key_added_in_one_place_reaches_trainable_mlflow_and_report(code_with_a_made_up_key, tmp_path):
    root, env = code_with_a_made_up_key
    study_dir = tmp_path / "probe"
    result = subprocess.run([sys.executable, "-m", "study.run", "--space", "probe", "--budget", "smoke",
                             "--num-samples", "3", "--out", str(study_dir)], cwd=root, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    from studytools import study_runs

    _, _, children = study_runs(study_dir)
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    knobs = sorted(float(c.data.params["made_up_knob"]) for c in children)
    assert knobs[0] == 0.25, "the r = 0 baseline takes the new key's default"
    assert all(0.1 <= k <= 0.9 for k in knobs) and len(set(knobs)) == 3, "Optuna searched it"
    # the trainable received it: Ray's record of what each trial was called with
    from ray.tune import ExperimentAnalysis

    configs = ExperimentAnalysis(str(study_dir / "ray" / "tune")).get_all_configs().values()
    assert sorted(c["made_up_knob"] for c in configs) == knobs
    headers = [line for line in result.stdout.splitlines() if line.startswith("| Trial name")]
    assert headers and "knob" in [column.strip() for column in headers[-1].split("|")], "a progress column"
    summary = (study_dir / "report" / "summary.md").read_text()
    assert "made_up_knob=" in summary.split("Accuracy@1")[0], "the report describes trials by it"
    importances = json.loads((study_dir / "report" / "importances.json").read_text())
    assert "made_up_knob" in importances


def test_a_key_the_config_does_not_define_is_refused_by_spaces_and_trainable(code_with_a_made_up_key):
    root, env = code_with_a_made_up_key
    probe = root / "search_spaces" / "probe.py"
    original = probe.read_text()
    probe.write_text(original.replace('"made_up_knob"', '"undefined_knob"'))
    try:
        result = subprocess.run([sys.executable, "-m", "study.run", "--space", "probe", "--budget", "smoke",
                                 "--out", str(root / "never")], cwd=root, env=env, capture_output=True, text=True,
                                timeout=300)
    finally:
        probe.write_text(original)
    assert result.returncode == 2
    assert "key 'undefined_knob': unknown key" in result.stderr.strip().splitlines()[-1]
    assert not (root / "never").exists()
