"""A trial as a model people can use: a sentence-transformers model directory, logged and registered in MLflow.

What is exported: the study's base encoder with the trial's checkpoint weights on it (a checkpoint holds only
the trainable parameters, `trainable_weights.safetensors`; the frozen ones are the base model's, as in
`HybridTrainer.save/restore`), built with sentence-transformers' own modules: `Transformer` (truncating at
the trial's max_seq_len), mean `Pooling` over the attention mask, `Normalize`, and the e5 prompt "query: " as
the default prompt (`prompts={"query": "query: ", "document": "query: "}`: bitext retrieval is symmetric,
and training only ever saw "query: "). So `SentenceTransformer(DIR).encode(sentences)` gives the project's
`study.encoder.embedding.Encoder.embed(sentences)` for that trial; every export checks it (cosine >= 0.9999 on
`study.encoder.loading.CHECK_SENTENCES`) before the directory is put in place.

The directory (written to a temporary sibling, then renamed: never half there) also holds `export.json`: the
study, the trial, its MLflow run, its parameters and per-language figures, and where it was registered.

Registering (`--register NAME`): the model is logged with MLflow's sentence-transformers flavour under the
trial's MLflow run (its lineage) with an input example (INPUT_EXAMPLE: its signature is strings in, float32
embeddings out), a model version of NAME is created with tags (study, trial, run, r,
epsilon, method, objective figures, per-language clean and robust accuracy) and the alias `best` is moved to
it; `mlflow.pyfunc.load_model("models:/NAME@best").predict([...])` then gives the embeddings.

Checkpoints are read from Ray's storage as the study configured it (STUDY_DIR/ray, or --storage-path: a bucket
or a shared mount) with Ray's `ExperimentAnalysis`, never from a node's own disk.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from study.encoder.embedding import QUERY_PREFIX
from study.encoder.loading import CHECK_SENTENCES
from study.errors import StudyError, TrackingError, UsageError
from study.orchestration.settings import StudySettings
from study.orchestration.tracking import PARENT_TAG, TRIAL_TAG, redact
from trainables.storage import WEIGHTS_FILE

MIN_COSINE_TO_ENCODER = 0.9999
PROMPTS = {"query": QUERY_PREFIX, "document": QUERY_PREFIX}
DEFAULT_PROMPT = "query"
ALIAS = "best"
EXPORT_FILE = "export.json"
CONFIG_TAGS = ("ratio", "epsilon", "method")
# the logged model's input example (real sentences, three scripts): MLflow infers its signature from it, strings in,
# float32 embeddings out, instead of the flavour's default
INPUT_EXAMPLE = [CHECK_SENTENCES[0], CHECK_SENTENCES[3], CHECK_SENTENCES[6]]


@dataclass
class Exported:
    """What an export wrote, and where it registered the model (if it did)."""

    path: Path
    cosine: float  # min cosine between the exported model and the project's Encoder on CHECK_SENTENCES
    record: dict = field(default_factory=dict)  # export.json
    registered: dict | None = None  # {name, version, alias, model_uri, run_id, tags}


# ----------------------------------------------------------------------------- checkpoints in Ray's storage
def trial_checkpoint(storage: str, experiment: str, trial_id: str):
    """The last checkpoint of Ray trial `trial_id` in experiment `experiment` of Ray storage `storage` (a path
    or a URI, `study.orchestration.studydir.ray_storage`), as a `ray.tune.Checkpoint`."""
    from ray.tune import ExperimentAnalysis

    where = f"{storage.rstrip('/')}/{experiment}"
    try:
        with _quiet("ray"):
            analysis = ExperimentAnalysis(where)
    except (ValueError, OSError) as err:  # no experiment state there (or no such bucket)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise StudyError(f"no Ray Tune state at {redact(where)}: {first}") from None
    trial = next((t for t in analysis.trials if t.trial_id == trial_id), None)
    if trial is None:
        raise StudyError(f"trial {trial_id} is not in Ray's state at {redact(where)}")
    if trial.checkpoint is None:
        raise StudyError(f"trial {trial_id} left no checkpoint in {redact(where)}")
    return trial.checkpoint


def read_trainable_weights(checkpoint) -> dict:
    """The trainable parameters a checkpoint holds (CPU tensors), from a `ray.tune.Checkpoint` or a folder."""
    from safetensors.torch import load_file

    if isinstance(checkpoint, (str, Path)):  # (a ray Checkpoint is an os.PathLike that refuses to be one)
        path = Path(checkpoint) / WEIGHTS_FILE
        if not path.is_file():
            raise StudyError(f"{checkpoint} is not a trial checkpoint (no {WEIGHTS_FILE})")
        return load_file(str(path), device="cpu")
    with checkpoint.as_directory() as directory:
        return read_trainable_weights(directory)


# ----------------------------------------------------------------------------- the model
@contextmanager
def _quiet(*loggers: str):
    """Library chatter (weight-loading reports, pooler initialisation notes) off while building a model."""
    from transformers.utils import logging as transformers_logging

    level, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    saved = {name: logging.getLogger(name).level for name in ("sentence_transformers", *loggers)}
    for name in saved:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)
        if bars:
            transformers_logging.enable_progress_bar()
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def sentence_model(base_model: str, weights: dict | None = None, max_seq_length: int = 128, device: str = "cpu"):
    """A `SentenceTransformer`: Transformer(base_model) with `weights` loaded on it, mean pooling, normalisation,
    the "query: " prompt by default. `weights`: {parameter name: tensor} as a checkpoint holds them."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    with _quiet():
        transformer = Transformer(base_model, max_seq_length=max_seq_length)
        model = transformer.auto_model
        pooler = getattr(model, "pooler", None)
        if pooler is not None:  # never used by mean pooling; zeros rather than a random initialisation
            with torch.no_grad():
                for p in pooler.parameters():
                    p.zero_()
        if weights:
            result = model.load_state_dict(weights, strict=False)
            if result.unexpected_keys:
                raise StudyError(f"the checkpoint has weights the base model {base_model} does not: "
                                 f"{', '.join(result.unexpected_keys[:3])}")
        pooling = Pooling(model.config.hidden_size, "mean")
        st = SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=dict(PROMPTS),
                                 default_prompt_name=DEFAULT_PROMPT, device=device)
    return st.eval()


def project_encoder(base_model: str, weights: dict | None = None, max_length: int = 128, device: str = "cpu"):
    """The project's own `Encoder` of the same trial (as `HybridTrainer.restore` builds it)."""
    from study.encoder.embedding import Encoder

    with _quiet():
        encoder = Encoder.load(base_model, device=device, max_length=max_length)
    if weights:
        encoder.model.load_state_dict(weights, strict=False)
    return encoder


def cosine_to_encoder(st_model, encoder, sentences=CHECK_SENTENCES):
    """Per sentence, the cosine between the sentence-transformers model's and the project's embedding."""
    import torch

    ours = encoder.embed(list(sentences))
    theirs = torch.as_tensor(st_model.encode(list(sentences), convert_to_numpy=True))
    return (torch.nn.functional.normalize(theirs, dim=-1) * ours).sum(1)


def check_out_dir(out: Path) -> None:
    """An export's target must not exist, or be an empty folder (nothing is ever overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output directory {out} exists and is not empty: pass another --out")


def _mkdirs_probe(out: Path) -> None:
    """Fail now, with one line, if the export's parent folder cannot be created or written."""
    parent = next((p for p in (out.parent, *out.parents) if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write the export to {out}: {parent or out.parent} is not a writable directory")


def export_model(checkpoint, base_model: str, max_seq_length: int, out: Path, record: dict,
                 register: dict | None = None) -> Exported:
    """Build the sentence-transformers model of one checkpoint, check it against the project's Encoder, save
    it to `out` (via a temporary sibling) with `record` as export.json; with `register`
    ({name, uri, run_id, tags, description}), log it under that run and register a version aliased `best`.
    Nothing is left in `out` unless everything succeeded."""
    out = Path(out)
    check_out_dir(out)
    _mkdirs_probe(out)
    weights = read_trainable_weights(checkpoint)
    st_model = sentence_model(base_model, weights, max_seq_length)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _quiet():
            st_model.save(str(work))
            # what a user gets: the saved folder loaded back, offline, against the project's own path
            loaded = _load_saved(work)
        cosines = cosine_to_encoder(loaded, project_encoder(base_model, weights, max_seq_length))
        cosine = float(cosines.min())
        if cosine < MIN_COSINE_TO_ENCODER:
            raise RuntimeError(f"the exported model disagrees with the project's Encoder: min cosine {cosine:.6f}")
        record = {**record, "base_model": base_model, "max_seq_length": max_seq_length, "prompts": PROMPTS,
                  "default_prompt_name": DEFAULT_PROMPT, "cosine_to_encoder": cosine,
                  "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        registered = None
        if register:
            registered = register_model(loaded, **register)
            record["registered"] = {k: registered[k] for k in ("name", "version", "alias", "model_uri", "run_id")}
        (work / EXPORT_FILE).write_text(json.dumps(record, indent=2, default=str))
        for path in (work, *work.rglob("*")):  # mkdtemp (and some writers) make them private
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            out.rmdir()  # an empty folder (check_out_dir)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for folder in created:  # parents this export created, innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return Exported(out, cosine, record, registered)


def _load_saved(path: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


# ----------------------------------------------------------------------------- MLflow
def pip_requirements() -> list[str]:
    """What the logged model needs, pinned to this environment (no slow inference by a subprocess)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("sentence-transformers", "transformers", "torch")]


def check_registry(uri: str) -> None:
    """Fail now, with one line, when the tracking/registry store cannot be reached."""
    from study.orchestration.tracking import check_reachable, client_for

    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        return
    try:
        client_for(uri).search_registered_models(max_results=1)
    except Exception as err:  # a store that cannot be opened (a path that is not a database ...)
        raise TrackingError(f"model registry {redact(uri)} cannot be used: "
                            f"{(str(err).strip().splitlines() or [type(err).__name__])[0][:200]}") from None


def register_model(st_model, name: str, uri: str, run_id: str, tags: dict, description: str = "") -> dict:
    """Log `st_model` (sentence-transformers flavour) under MLflow run `run_id`, register it as a new version
    of `name` with `tags`, and point the alias `best` at it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from study.orchestration.tracking import client_for

    client = client_for(uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # log_model writes through the fluent API's store
    # the signature inferred here, not left to the flavour: MLflow 3.10 keeps none from the input example (3.17 does)
    signature = mlflow.models.infer_signature(INPUT_EXAMPLE, st_model.encode(INPUT_EXAMPLE))
    try:
        with _quiet("mlflow"):
            info = mlflow.sentence_transformers.log_model(st_model, name="model", run_id=run_id,
                                                          pip_requirements=pip_requirements(),
                                                          input_example=INPUT_EXAMPLE, signature=signature,
                                                          tags={k: str(v) for k, v in tags.items()})
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description="Sentence encoders found by xling-robust studies "
                                                              "(hybrid-batch robust fine-tuning)")
        version = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                              tags={k: str(v)[:5000] for k, v in tags.items()},
                                              description=description or None, model_id=info.model_id)
        client.set_registered_model_alias(name, ALIAS, version.version)
        client.set_tag(run_id, "registered_model", f"{name}/{version.version}")
    except MlflowException as err:
        raise TrackingError(f"registering {name} in {redact(uri)} failed: "
                            f"{(str(err).strip().splitlines() or ['?'])[0][:200]}") from None
    finally:
        mlflow.set_tracking_uri(previous)
    return dict(name=name, version=str(version.version), alias=ALIAS, model_uri=f"models:/{name}@{ALIAS}",
                logged_model_uri=info.model_uri, run_id=run_id, tags=tags)


def is_tagged_figure(key: str) -> bool:
    """The figures a registered version carries: the objectives, the English check, clean and robust accuracy per
    language and group, and cross-lingual similarity (the means, and the selection constraint), on every split
    they were measured on (`report.acc.swh.robust`, `selection.group.low.clean`, `report.xsts.mean`, or unprefixed
    where the evaluation had no split)."""
    return bool(_TAGGED.match(key))


_TAGGED = re.compile(r"^(objective\.(robust|clean|xsts)|en\.\w+|constraint\.xsts|selection\.xsts\.vs_untrained"
                     r"|((selection|report|all)\.)?((acc\.[a-z]+|group\.(low|high))\.(clean|robust)|(xsts|xpara)\.mean))$")


def version_tags(study: str, trial: dict | None, params: dict, metrics: dict, extra: dict | None = None) -> dict:
    """A registered version's tags: what it is (study, trial, r, epsilon, method) and the figures that justify
    it (`is_tagged_figure`)."""
    tags = {"study": study}
    if trial:
        tags.update({"trial": trial.get("trial_id") or trial["name"], "run_id": trial["run_id"]})
    tags.update({key: params[key] for key in CONFIG_TAGS if key in params})
    tags.update({key: f"{value:.4f}" for key, value in sorted(metrics.items())
                 if is_tagged_figure(key) and isinstance(value, (int, float))})
    tags.update(extra or {})
    return tags


# ----------------------------------------------------------------------------- a study's trial
def choose_trial(trials: list[dict], objective: str, which: str = "best") -> dict:
    """`best` (`study.analysis.trials.best_trial`), or the trial with this Ray trial id, MLflow run id or run name."""
    from study.analysis.trials import best_trial, rank_trials

    if which == "best":
        trial = best_trial(trials, objective)
        if trial is None and rank_trials(trials, objective):
            raise StudyError("no finished trial meets the selection constraint (cross-lingual similarity no worse "
                             "than the untrained encoder's), so the study has no best to export; name one with "
                             "--trial ID if you want it anyway (see `python -m study.report`)")
        if trial is None:
            raise StudyError("the study has no finished trial to export (see `python -m study.report`)")
        return trial
    found = [t for t in trials if which in (t.get("trial_id"), t["run_id"], t["name"])]
    if not found:
        known = ", ".join(sorted(str(t.get("trial_id") or t["run_id"]) for t in trials)) or "none"
        raise StudyError(f"no trial {which!r} in the study (its trials: {known})")
    return found[0]


def export_study_trial(study_dir: Path, saved: dict, uri: str, which: str = "best", out: Path | None = None,
                       register: str | None = None) -> Exported:
    """The whole `python -m study.export`: choose the trial, find its checkpoint, export, register."""
    from study.analysis.trials import load_trials
    from study.orchestration.studydir import ray_storage
    from study.orchestration.tracking import check_parent_run, check_reachable, client_for
    from study.orchestration.tuning import STUDY_EXPERIMENT
    from trainables.config import TrialConfig

    study_dir = Path(study_dir)
    settings = StudySettings.from_json(saved["settings"])
    if out is not None:  # before any store is opened: a bad --out writes nothing anywhere
        check_out_dir(Path(out))
    if register:
        check_registry(uri)
    else:
        check_reachable(uri)
    client = client_for(uri)
    check_parent_run(client, saved["parent_run_id"], uri)
    trials = load_trials(client, saved["experiment_id"], saved["parent_run_id"])
    trial = choose_trial(trials, settings.objective, which)
    if not trial.get("trial_id"):
        raise StudyError(f"trial run {trial['run_id']} has no {TRIAL_TAG} tag: it is not a trial of this study")
    out = Path(out) if out is not None else study_dir / "export" / trial["trial_id"]
    check_out_dir(out)
    checkpoint = trial_checkpoint(ray_storage(settings, study_dir), STUDY_EXPERIMENT, trial["trial_id"])
    config = TrialConfig.from_params(trial["raw_params"])
    from study.encoder.loading import resolve_model

    base = resolve_model(settings.model or config.model)
    metrics = trial["metrics"]
    record = {"study": study_dir.resolve().name, "trial": trial["trial_id"], "run_id": trial["run_id"],
              "status": trial["status"], "objective": settings.objective,
              "params": trial["params"], "metrics": metrics}
    spec = None
    if register:
        tags = version_tags(record["study"], trial, trial["params"], metrics,
                            {"objective": settings.objective, "parent_run_id": saved["parent_run_id"],
                             "base_model": settings.model or config.model})
        spec = dict(name=register, uri=uri, run_id=trial["run_id"], tags=tags,
                    description=f"Trial {trial['trial_id']} of study {record['study']} "
                                f"(r = {trial['params'].get('ratio')}, epsilon = {trial['params'].get('epsilon')}, "
                                f"{trial['params'].get('method')})")
    return export_model(checkpoint, base, config.max_seq_len, out, record, spec)


def child_run_of(client, experiment: str, parent: str, trial_id: str) -> str | None:
    """The MLflow run of Ray trial `trial_id` under `parent` (a study's or a replication's parent run)."""
    runs = client.search_runs([experiment], filter_string=f"tags.`{PARENT_TAG}` = '{parent}' and "
                                                          f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1)
    return runs[0].info.run_id if runs else None


# ----------------------------------------------------------------------------- a replication's best configuration
def replication_model_dir(replication_dir: Path) -> Path:
    """Where study.replicate --export puts the best configuration's model; a previous one is replaced (the
    replication rewrites all of its folder)."""
    out = Path(replication_dir) / "model"
    if out.exists():
        shutil.rmtree(out)
    return out


def export_replica(checkpoint, config, settings: StudySettings, out: Path, study: str, replication_run: str,
                   run_id: str | None, metrics: dict, uri: str,
                   register: str | None = None) -> Exported:
    """Export (and register) one replica of the replication's best configuration: its first seed. The version's
    tags point at the replication run and its findings (runs:/<replication>/findings/findings.md); the
    findings point back at the version (`model_section`)."""
    from study.encoder.loading import resolve_model

    params = {key: getattr(config, key) for key in ("ratio", "epsilon", "method", "seed", "replica")}
    findings = f"runs:/{replication_run}/findings/findings.md"
    record = {"study": study, "replica": config.replica, "seed": config.seed, "run_id": run_id,
              "replication_run": replication_run, "findings": findings, "params": params, "metrics": metrics}
    spec = None
    if register:
        if run_id is None:
            raise StudyError(f"the replica {config.replica} seed {config.seed} has no MLflow run to log the model to")
        tags = version_tags(study, None, params, metrics,
                            {"replica": config.replica, "seed": config.seed, "run_id": run_id,
                             "replication_run": replication_run, "findings": findings,
                             "base_model": settings.model or config.model})
        spec = dict(name=register, uri=uri, run_id=run_id, tags=tags,
                    description=f"Best configuration of the replication of study {study} ({config.replica}: "
                                f"r = {config.ratio:g}, epsilon = {config.epsilon:g}, {config.method}), seed "
                                f"{config.seed}; findings: {findings}")
    return export_model(checkpoint, resolve_model(settings.model or config.model), config.max_seq_len,
                        out, record, spec)


def model_section(exported: Exported) -> str:
    """The findings' paragraph on the exported model (Markdown)."""
    record, lines = exported.record, ["", "## The model", ""]
    lines.append(f"The best configuration ({record.get('replica')}, seed {record.get('seed')}) is exported as a "
                 f"sentence-transformers model in `{exported.path}` (cosine to the project's encoder "
                 f">= {exported.cosine:.6f}).")
    if exported.registered:
        reg = exported.registered
        lines.append(f"It is registered in MLflow as `{reg['name']}` version {reg['version']} with the alias "
                     f"`{reg['alias']}` (logged under run {reg['run_id']}); its tags link back to these findings.")
    lines += ["", "```python", "from sentence_transformers import SentenceTransformer",
              f"model = SentenceTransformer(\"{exported.path}\")"]
    if exported.registered:
        lines += ["import mlflow",
                  f"model = mlflow.pyfunc.load_model(\"{exported.registered['model_uri']}\")  # .predict([...])"]
    lines += ["```", ""]
    return "\n".join(lines)
