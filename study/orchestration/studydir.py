"""A study's directory on disk: where each file lives, how it is created, read and written.

    study.json       settings, MLflow ids, which tracking store (never credentials: see `tracking_record`)
    reference.json   the untrained encoder's figures (the reference row)
    mlflow.db, mlartifacts/   the embedded MLflow store (unless a tracking server is used)
    ray/             Ray Tune's state and checkpoints (ray/tune: the study, ray/replicate: its replication),
                     unless --storage-path puts them in shared storage (a bucket or a shared mount), as a
                     cluster whose nodes share no disk needs: then <storage path>/<study id>/tune, /replicate,
                     the study id being the folder's name at creation and 8 random hex digits (study.json keeps
                     it): two studies of the same name never share Tune state, and a renamed folder finds its own
    report/          study.report's tables and plots
    replication/     study.replicate's findings
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from study.errors import StorageError, StudyError
from study.orchestration.tracking import credentials_to_env, default_tracking_uri, has_password, redact

if TYPE_CHECKING:  # settings imports this module
    from study.orchestration.settings import StudySettings

STUDY_FILE = "study.json"
REFERENCE_FILE = "reference.json"


def write_json(path: Path, payload) -> None:
    """Write JSON whole or not at all: into a temporary sibling, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def missing_folders(path: Path) -> list[Path]:
    """The folders that creating `path` would create, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    return missing


def new_study_dir(out: str | None, space: str) -> Path:
    """The directory of a new study: `out`, or studies/<space>-<time>. Checked by creating it (and removing
    what was created): whatever would stop it later (a file in the way, no permission, a read-only or absent
    filesystem) stops it now, with nothing left behind."""
    path = Path(out) if out else Path("studies") / f"{space}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (path / STUDY_FILE).exists():
        raise StudyError(f"{path} already holds a study: use --resume {path}, or another --out")
    missing = missing_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise StudyError(f"output directory {path} is not writable ({err.strerror or type(err).__name__})") from None
    finally:
        for folder in missing:  # the study creates it for real once every check has passed
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


def load_study(path: str | Path) -> dict:
    """The saved study.json of a study directory."""
    study_file = Path(path) / STUDY_FILE
    if not study_file.is_file():
        raise StudyError(f"{path} is not a study directory (no {STUDY_FILE})")
    try:
        return json.loads(study_file.read_text())
    except json.JSONDecodeError:
        raise StudyError(f"{study_file} is corrupt (not JSON)") from None


def save_study(study_dir: Path, payload: dict) -> None:
    write_json(Path(study_dir) / STUDY_FILE, payload)


def tracking_record(uri: str | None) -> dict:
    """What study.json keeps of the tracking store: the embedded one (no URI: it is found again next to
    study.json, so the folder can move), or a server's URI, kept only when it holds no password (else only
    its redacted form, to name it in messages)."""
    if uri is None:
        return {"embedded": True}
    return {"embedded": False, "uri": None if has_password(uri) else uri, "shown": redact(uri)}


def tracking_uri(study_dir: Path, saved: dict, given: str | None = None) -> str:
    """The tracking URI of a saved study: `given` (--tracking-uri) first; then the embedded store in the study
    folder; then $MLFLOW_TRACKING_URI; then the URI study.json kept. Never one from Ray's pickled state.
    Credentials in it are moved to MLFLOW_TRACKING_USERNAME / _PASSWORD (`tracking.credentials_to_env`)."""
    if given:
        return credentials_to_env(given)
    record = saved.get("tracking") or _old_tracking_record(saved)
    if record.get("embedded"):
        return default_tracking_uri(study_dir)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or record.get("uri")
    if not uri:
        raise StudyError(f"study {study_dir} logs to {record.get('shown', 'a tracking server')}, whose URI holds a "
                         "password and was not kept: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return credentials_to_env(uri)


def _old_tracking_record(saved: dict) -> dict:
    uri = saved.get("tracking_uri")  # study.json before 2026-12: an absolute URI, None when it had an '@'
    if uri is None or uri.startswith("sqlite:"):
        return {"embedded": uri is not None}
    return {"embedded": False, "uri": uri, "shown": redact(uri)}


def new_study_id(study_dir: Path) -> str:
    """A new study's id: its folder's name and 8 random hex digits (its prefix in shared storage)."""
    import uuid

    return f"{Path(study_dir).resolve().name}-{uuid.uuid4().hex[:8]}"


def ray_storage(settings: StudySettings, study_dir: Path) -> str:
    """Where Ray Tune keeps this study's experiments (state, checkpoints): `<--storage-path>/<study id>`, which
    every node reaches, or STUDY_DIR/ray on one machine (absolute: Ray needs one). A study from before study ids
    (or a benchmark's settings) uses its folder's name."""
    if settings.storage_path:
        return f"{settings.storage_path.rstrip('/')}/{settings.study_id or Path(study_dir).resolve().name}"
    return str((Path(study_dir) / "ray").resolve())


OWNER_FILE = "study_id"  # in a study's Ray storage: the id of the study whose Tune state it holds


def claim_ray_storage(storage: str, study_id: str | None) -> None:
    """Check that the Ray storage `storage` (a path or a URI) holds this study's Tune state, or none yet, and
    mark it as this study's. A StudyError (one line) when it holds another study's: restoring it would run that
    study's search under this study's records. Studies from before study ids are not checked."""
    if not study_id:
        return
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(storage)
    owner_file = f"{root.rstrip('/')}/{OWNER_FILE}"
    if filesystem.get_file_info(owner_file).type == pyarrow.fs.FileType.File:
        with filesystem.open_input_stream(owner_file) as stream:
            owner = stream.read().decode().strip()
        if owner != study_id:
            raise StudyError(f"the Ray storage {storage} holds the Tune state of study {owner}, not of this study "
                             f"({study_id}, study.json): was study.json or the storage copied from another study?")
        return
    filesystem.create_dir(root, recursive=True)
    with filesystem.open_output_stream(owner_file) as stream:
        stream.write(study_id.encode())


def check_storage(uri: str) -> str:
    """A --storage-path that Ray can use, normalised (a local path made absolute); a one-line StorageError when
    its filesystem cannot be reached (no such bucket, no credentials, no endpoint). Credentials in it are refused:
    Ray pickles the storage path into the Tune state and hands it to every node, and the study would write it to
    study.json, the parent run's params and its output; the nodes read keys from their environment (or role)."""
    if "://" in uri and storage_credentials(uri):
        raise StorageError(f"--storage-path {redact(uri.split('?')[0])} holds credentials ({storage_credentials(uri)}):"
                           " give them in the environment of the driver and of every node instead (AWS_ACCESS_KEY_ID, "
                           "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; GOOGLE_APPLICATION_CREDENTIALS for gs://)")
    if "://" not in uri:
        path = Path(uri).expanduser().resolve()
        parent = next(p for p in (path, *path.parents) if p.exists())
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise StorageError(f"storage path {uri} is not writable")
        return str(path)
    import pyarrow.fs

    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        filesystem.get_file_info(path.split("/", 1)[0] if uri.startswith(("s3://", "gs://", "gcs://")) else path)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise StorageError(f"storage path {uri} is not usable: {first}") from None
    return uri


def storage_credentials(uri: str) -> str:
    """What in a storage URI is a credential (KEY:SECRET@ before the bucket, access_key=... or secret_key=...
    in its query, as pyarrow reads them), named without its value; '' when none."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(uri)
        found = ["KEY:SECRET@" if "@" in parts.netloc else ""]
        found += [f"{key}=" for key in parse_qs(parts.query) if key.lower() in
                  ("access_key", "secret_key", "session_token", "access_token", "credentials")]
    except ValueError:
        return "an unparsable URI"
    return ", ".join(f for f in found if f)
