"""The structure the code promises: commands import only library modules, the library's layers import only
the layers beneath them, and a trial's configuration keys are defined in one place (trainables/config.py),
from which everything else derives.

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
COMMANDS = {"run", "replicate", "report", "evaluate", "bench", "export", "bundle", "models"}  # python -m study.<name>
PACKAGES = ("study", "trainables", "search_spaces")
# the library's layers, from the bottom: a module imports its own layer and those beneath, never one above
# (trainables and study.evaluation share a layer: a trial is trained and evaluated with the same attacks)
LAYERS = {"study.errors": 0, "study.encoder": 1, "study.evaluation": 2, "trainables": 2, "search_spaces": 3,
          "study.orchestration": 4, "study.analysis": 5, "study.benchmarks": 6}


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


def _library_files():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _layer(module: str) -> int | None:
    """The layer of a module name; None for a command module, the top-level packages, and what is not ours."""
    return next((rank for prefix, rank in LAYERS.items() if module == prefix or module.startswith(prefix + ".")),
                None)


def test_no_module_imports_a_command_module():
    offenders = []
    for path in _library_files():
        imported = {name.removeprefix("study.") for name in _imported_modules(path) if name.startswith("study.")}
        for command in COMMANDS & imported:
            offenders.append(f"{path.relative_to(REPO)} imports study.{command}")
    assert not offenders, offenders


def test_every_study_module_is_a_command_or_in_a_layer():
    top = {p.stem for p in (REPO / "study").glob("*.py")} - {"__init__"}
    assert top == COMMANDS | {"errors"}, "study/ holds the commands (and errors); the library lives in its layers"
    for path in (REPO / "study").rglob("*.py"):
        name = _module_name(path)
        assert name == "study" or path.stem in COMMANDS or _layer(name) is not None, name


def test_layers_import_only_the_layers_beneath():
    offenders = []
    for path in _library_files():
        own = _layer(_module_name(path))
        if own is None:
            continue
        for name in _imported_modules(path):
            other = _layer(name)
            if other is not None and other > own:
                offenders.append(f"{_module_name(path)} (layer {own}) imports {name} (layer {other})")
    assert not offenders, offenders


def _listed(doc: str) -> set[str]:
    """The names a docstring lists: the first word of each line indented by two spaces (deeper: continuation)."""
    return {line.split()[0] for line in doc.splitlines() if line.startswith("  ") and line[2:3].strip()}


def test_each_package_docstring_lists_its_modules():
    """study/__init__.py names the commands and the layers; each layer's __init__ names its modules."""
    import importlib

    import study

    listed = _listed(study.__doc__)
    assert COMMANDS | {"study.errors", "trainables/", "search_spaces/"} | set(LAYERS) - {"trainables",
                                                                                         "search_spaces"} <= listed
    for package in (p for p in LAYERS if p.startswith("study.") and p != "study.errors"):
        listed = _listed(importlib.import_module(package).__doc__)
        folder = REPO / package.replace(".", "/")
        present = {p.stem for p in folder.glob("*.py")} - {"__init__"}
        assert listed == present, f"{package}'s docstring lists {sorted(listed)}, the folder holds {sorted(present)}"


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
