"""A study's settings: the flags of `python -m study.run`, checked into one frozen `StudySettings` before
anything is written or started, and kept in study.json. The run command builds it; the driver, tuning, the
cluster helpers, the report, export and replication read it; `study.bench study` times the same study."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from search_spaces import SPACE_NAMES, load_space
from study.errors import ConfigError, StudyError, UsageError
from study.evaluation.crosslingual import XSTS_LANGS
from study.evaluation.data import load_crosslingual_sts, load_english_pairs, load_tatoeba, resolve_data_dir
from study.evaluation.languages import resolve_languages
from study.evaluation.robustness import OBJECTIVES, EvalConfig
from study.orchestration.budgets import resolve_budget
from study.orchestration.studydir import check_storage
from trainables.attacks import ATTACKS
from trainables.synonyms import load_wordnet

DESCRIPTION = "Run a study: `python -m study.run --space hybrid_ratio`."


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m study.run", description=DESCRIPTION)
    p.add_argument("--space", help=f"search space: {', '.join(SPACE_NAMES)} (default: hybrid_ratio)")
    p.add_argument("--list-spaces", action="store_true", help="list the search spaces and exit")
    p.add_argument("--budget", help="smoke, cpu, gpu, or auto (default: gpu when the Ray cluster has GPUs on any "
                                    "node, else cpu)")
    p.add_argument("--num-samples", type=int, help="trials, the r = 0 baseline included (default: budget's)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default: budget's)")
    p.add_argument("--objective", choices=OBJECTIVES,
                   help="robust: mean attacked accuracy over the low-resource group (default); clean; pareto: "
                        "clean, robust and cross-lingual similarity, multi-objective. Whatever the objective, the "
                        "best trial must do no harm: cross-lingual similarity no worse than the untrained encoder's")
    p.add_argument("--range", action="append", default=[], metavar="KEY=LOW,HIGH",
                   help="narrow a searched key, e.g. --range ratio=0,0.5 --range epsilon=0.05,0.5 (repeatable)")
    p.add_argument("--method", help="attack method for every trial (pgd, fgsm, freelb, rs-rp, rs-da), "
                                    "unless the space searches it")
    p.add_argument("--langs", help="evaluation languages, comma-separated codes (default: budget's)")
    p.add_argument("--group", choices=["low", "high", "all"], help="evaluation language group")
    p.add_argument("--model", help="model directory or hub id (default: multilingual-e5-small)")
    p.add_argument("--data-dir", help="data directory (default: $STUDY_DATA_DIR or ../shared/data)")
    p.add_argument("--out", help="study directory (default: studies/<space>-<time>)")
    p.add_argument("--resume", metavar="STUDY_DIR", help="continue an interrupted study, with its own settings")
    p.add_argument("--seed", type=int, help="study seed (default 0)")
    p.add_argument("--address", help="Ray cluster to join (auto, or HOST:PORT of the head's GCS); default: a "
                                     "local Ray. Ray Client (ray://) is not supported: submit the study as a job")
    p.add_argument("--storage-path", metavar="URI",
                   help="where trials keep checkpoints and Tune its state: s3://BUCKET/PREFIX, gs://..., or a path "
                        "every node mounts; needed on a cluster whose nodes share no disk (default: STUDY_DIR/ray); "
                        "no credentials in it: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in every node's environment")
    p.add_argument("--cpus-per-trial", type=float)
    p.add_argument("--gpus-per-trial", type=float, help="fractions share a GPU between trials, e.g. 0.5")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the resources allow)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or an "
                                          "embedded store in the study directory); credentials go in "
                                          "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (a user:password@ "
                                          "in the URI is moved there, never written or printed)")
    p.add_argument("--optuna-storage", metavar="URL",
                   help="Optuna's storage for the search (an SQLAlchemy URL, e.g. postgresql+psycopg2://USER@HOST/DB, "
                        "the tracking server's database on a cluster); no password in it: PostgreSQL's driver reads "
                        "PGPASSWORD or ~/.pgpass (default: sqlite:///STUDY_DIR/optuna.db)")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="Ray dashboard host for a local Ray")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the settings
@dataclass(frozen=True)
class StudySettings:
    """What a study runs, fixed when it starts (a resumed study reads it back from study.json). Checked on
    construction: a value no study can run is refused in one line naming its flag."""

    space: str  # the search space (search_spaces/<space>.py)
    budget: str  # smoke, cpu or gpu (study.orchestration.budgets); "auto" until the cluster's GPUs are known
    num_samples: int  # trials, the r = 0 baseline included
    epochs: int  # per trial, unless the space searches epochs
    objective: str = "robust"  # robust, clean or pareto (study.evaluation.robustness.OBJECTIVES)
    seed: int = 0  # the searcher's and every trial's seed
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # --range: narrowed searched keys
    method: str | None = None  # --method: one attack method for every trial, unless the space searches it
    model: str = "multilingual-e5-small"  # model directory or hub id
    data_dir: str | None = None  # None: $STUDY_DATA_DIR, ../shared/data, else the hub
    eval: dict[str, Any] = field(default_factory=dict)  # the study's evaluation: EvalConfig's fields it sets
    max_train_pairs: int | None = None  # English training pairs per trial; None: all
    batch_size: int = 32  # pairs per step
    train: dict[str, Any] = field(default_factory=dict)  # TrialConfig overrides, unless the space searches the key
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # fractions share a GPU
    max_concurrent: int | None = None  # trials at once; None until the driver knows the cluster
    storage_path: str | None = None  # Ray storage shared by every node (s3://, gs://, a mount); None: the study dir
    optuna_storage: str | None = None  # Optuna's database URL; None: sqlite in the study directory
    study_id: str | None = None  # the study's prefix in shared storage (set once, when it starts)

    def __post_init__(self):
        for name in ("num_samples", "epochs", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name in ("cpus_per_trial", "gpus_per_trial"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r}: one of {', '.join(OBJECTIVES)}")
        if self.method and self.method not in ATTACKS:
            raise UsageError(f"unknown attack method '{self.method}' (one of {', '.join(ATTACKS)})")
        # JSON gives ranges as lists: one form, whatever the source
        object.__setattr__(self, "ranges", {key: (float(low), float(high)) for key, (low, high) in self.ranges.items()})

    @property
    def eval_config(self) -> EvalConfig:
        return EvalConfig(**self.eval)

    def replace(self, **changes) -> StudySettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """study.json's "settings" (and the parent run's params): one key per field."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, saved: dict) -> StudySettings:
        """A study's settings as study.json keeps them; one line when they are not a study's."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - names)
        missing = sorted({"space", "budget", "num_samples", "epochs"} - set(saved))
        if unknown or missing:
            raise StudyError("study.json's settings are not a study's: "
                             + "; ".join(filter(None, [unknown and f"unknown {', '.join(unknown)}",
                                                       missing and f"missing {', '.join(missing)}"])))
        return cls(**saved)


# ----------------------------------------------------------------------------- validation (before any write)
def validate(args, cluster_has_gpus: bool | None = None) -> StudySettings:
    """Check every input; return the study settings. Raises an InputError, writes nothing. `--budget auto`
    needs `cluster_has_gpus` (known once Ray is up); without it, the settings are those of the cpu budget."""
    ranges = {}
    for text in args.range:
        key, _, bounds = text.partition("=")
        try:
            low, high = (float(x) for x in bounds.split(","))
        except ValueError:
            raise UsageError(f"--range {text!r}: expected KEY=LOW,HIGH, e.g. ratio=0,0.5") from None
        ranges[key.strip()] = (low, high)
    space = load_space(args.space or "hybrid_ratio", ranges)
    budget_name, budget = resolve_budget(args.budget or "auto", cluster_has_gpus)
    if "rs-da" in {args.method, space.fixed.get("method"), *getattr(space.space.get("method"), "options", ())}:
        load_wordnet()  # rs-da's synonyms: without WordNet, one line naming the package, before anything starts
    try:
        langs = (resolve_languages(args.langs, args.group) if (args.langs or args.group)
                 else budget.eval.get("langs") or resolve_languages())
    except ValueError as err:
        raise ConfigError(str(err)) from None
    data_dir = resolve_data_dir(args.data_dir)
    seed = args.seed if args.seed is not None else 0
    eval_config = {**budget.eval, "langs": list(langs), "seed": seed}
    EvalConfig(**eval_config)  # radii etc. checked here
    storage_path = check_storage(args.storage_path) if args.storage_path else None
    optuna_storage = check_optuna_storage(args.optuna_storage) if getattr(args, "optuna_storage", None) else None
    return StudySettings(
        space=space.name, ranges=ranges, budget=budget_name, objective=args.objective or "robust", seed=seed,
        num_samples=args.num_samples if args.num_samples is not None else budget.num_samples,
        epochs=args.epochs if args.epochs is not None else budget.epochs,
        method=args.method, model=args.model or "multilingual-e5-small",
        data_dir=str(data_dir) if data_dir else None, eval=eval_config, max_train_pairs=budget.max_train_pairs,
        batch_size=budget.batch_size, train=budget.train,
        cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else budget.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else budget.gpus_per_trial,
        max_concurrent=args.max_concurrent, storage_path=storage_path, optuna_storage=optuna_storage)


def check_optuna_storage(url: str) -> str:
    """An --optuna-storage URL, refused in one line when it holds a password (it would be printed and pickled
    with Tune's state: the database driver reads PGPASSWORD or ~/.pgpass instead), does not parse, or cannot be
    connected to. Nothing is written."""
    import sqlalchemy

    from study.orchestration.tracking import has_password, redact

    if has_password(url):
        raise UsageError(f"--optuna-storage {redact(url)}: no password in the URL (it would be printed and saved "
                         "with the study's state); PostgreSQL reads it from PGPASSWORD or ~/.pgpass")
    try:
        engine = sqlalchemy.create_engine(url)
    except (sqlalchemy.exc.ArgumentError, ImportError, ValueError) as err:
        raise UsageError(f"--optuna-storage {redact(url)}: not a database URL ({str(err).splitlines()[0][:200]})") \
            from None
    if engine.dialect.name == "sqlite":  # connecting would create the file; the study's driver does that
        return url
    try:
        engine.connect().close()
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0][:200]
        raise UsageError(f"--optuna-storage {redact(url)}: cannot connect ({reason})") from None
    finally:
        engine.dispose()
    return url


def check_data(settings: StudySettings) -> None:
    """Read every file the study needs once, so a missing or malformed one fails now, not mid-study."""
    data_dir = resolve_data_dir(settings.data_dir) if settings.data_dir else resolve_data_dir()
    for lang in settings.eval["langs"]:
        load_tatoeba(lang, data_dir)
    for split in ("train", "test"):
        load_english_pairs(split, data_dir)
    for lang in settings.eval.get("xsts_langs", XSTS_LANGS):
        load_crosslingual_sts(lang, data_dir)
