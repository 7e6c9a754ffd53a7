"""`python -m study.bench gpu --device cpu`: the GPU benchmark's own code at tiny sizes, on the real encoder and
data, as a subprocess: every section measured, its JSON plausible, the headline line last."""

from __future__ import annotations

import json
import re

import pytest

from tests.studytools import run_cli

SECTIONS = ("environment", "encode", "train_step", "memory", "evaluate", "bf16", "study", "trial")


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-gpu") / "bench.json"
    result = run_cli("study.bench", "gpu", "--device", "cpu", "--out", str(out), timeout=900)
    return result, json.loads(out.read_text()) if out.is_file() else None


def test_every_section_runs_and_the_last_line_is_the_headline(cpu_run):
    result, report = cpu_run
    assert report is not None, result.stderr[-3000:]
    failed = {name: r["error"] for name, r in report["results"].items() if not r["ok"]}
    assert not failed and result.returncode == 0, f"{failed}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert tuple(report["results"]) == SECTIONS and report["failed"] == []
    for name in SECTIONS:  # progress lines as each section starts: a killed run shows where it got to
        assert re.search(rf"^\[bench gpu\] \d/8 {name}: started", result.stdout, re.M)
    last = result.stdout.strip().splitlines()[-1]
    assert last == report["headline"]
    first = re.search(r"(\d+\.\d\d)x", last)
    assert first and last.startswith("our encoder path over the plain loop")
    assert float(first.group(1)) == pytest.approx(report["results"]["encode"]["encoder_over_plain_fp32"], abs=0.006)


def test_figures_are_plausible(cpu_run):
    _, report = cpu_run
    r = report["results"]
    assert r["environment"]["torch"] and r["environment"]["cpu_model"]
    enc = r["encode"]
    assert all(v > 0 for v in enc["sentences_per_second"].values()) and len(enc["sentences_per_second"]) == 8
    assert enc["tflops"]["fp32"] > 0 and enc["gflop_per_sentence"] > 0.1  # ~0.8 GFLOP a Tatoeba sentence
    assert 0.99 < enc["min_cosine_bf16_fp32"] <= 1.0 + 1e-6  # bf16 autocast on the CPU against fp32
    assert enc["min_cosine_paths_fp32"] > 0.9999  # the three paths compute the same embeddings
    assert enc["profile_bf16"]["top"] and enc["target_met"] is False  # the GPU's target: profiled on a CPU
    step = r["train_step"]
    assert set(step["by_ratio"]) == {"0", "0.5", "1"} and step["pgd_steps"] == 3
    assert all(v["pairs_per_second"] > 0 for v in step["by_ratio"].values())
    assert step["by_ratio"]["1"]["predicted_vs_r0"] == 2.5  # 2n + 3n sentences against 2n
    assert r["memory"]["evaluation"]["seconds"] > 0 and r["memory"]["cpu_max_rss"] > 0
    assert r["evaluate"]["speedup"] > 0 and r["evaluate"]["figures_identical"] == r["evaluate"]["figures"]
    bf16 = r["bf16"]
    assert 0.99 < bf16["min_cosine"] <= 1.0 + 1e-6
    assert set(bf16["figures"]) == {"clean"} | {f"attacked_eps{e:g}" for e in bf16["radii"]}
    assert len(bf16["radii"]) == 4 and len(bf16["langs"]) == 6  # every radius of the gpu budget, six languages
    assert all(isinstance(f["pass"], bool) and 0 <= f["fp32"] <= 100 for f in bf16["figures"].values())
    study = r["study"]
    assert study["returncode"] == 0 and study["statuses"] == ["FINISHED", "FINISHED"]
    assert study["sampling"].startswith("no GPU") and study["wall_seconds"] > 0
    trial = r["trial"]
    assert trial["seconds"] > trial["setup_seconds"] > 0 and trial["epochs"]
    hours = trial["study_projection"]["hours"]
    assert hours["1_gpu"] == pytest.approx(8 * hours["8_gpu"])
