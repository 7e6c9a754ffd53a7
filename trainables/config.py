"""The configuration of one trial: every key, its default, and what it may take, in one place.

`TrialConfig` is what the trainable runs. A search space may search any field that carries a rule
(`within` a range or one of `choices`); the others are set by the driver. From this class derive: the
search spaces' validation (search_spaces), the Ray param space and the progress table's columns
(study.orchestration.tuning), the MLflow parameters of a child run (study.orchestration.tracking), the report's
searched-parameter list (study.analysis.reporting) and the replication's configurations (study.replicate).

Ray hands the trainable a plain dict; `TrialConfig.from_dict` turns it back into this class and refuses
keys it does not know, so a typo never runs silently with a default.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

from study.encoder.embedding import MAX_LENGTH
from study.errors import ConfigError
from study.evaluation.robustness import EvalConfig
from trainables.attacks import ATTACKS, NORMS


def _knob(default, *, within: tuple | None = None, choices: tuple | None = None, label: str | None = None):
    """A searchable field: `within` = (int | float, low, high), both ends included, or `choices`;
    `label` is its column title in the progress table (default: the key)."""
    return field(default=default, metadata={"within": within, "choices": choices, "label": label})


def _set_by_driver(default=None, *, factory=None, param: bool = True):
    """A field the driver sets for every trial of a study; `param=False`: not an MLflow parameter of the child
    runs (the parent run records it once)."""
    kwargs = {"default_factory": factory} if factory else {"default": default}
    return field(metadata={"param": param}, **kwargs)


@dataclass(frozen=True)
class TrialConfig:
    # -- the hybrid batch: where r and epsilon enter (trainables.hybrid.hybrid_step)
    ratio: float = _knob(0.5, within=(float, 0.0, 1.0), label="r")  # share of each batch made adversarial
    epsilon: float = _knob(0.5, within=(float, 0.0, 16.0))  # radius, L2 per token (word vectors: norm ~1.6)
    method: str = _knob("pgd", choices=tuple(ATTACKS))  # pgd | fgsm | freelb | rs-rp | rs-da (trainables.attacks)
    norm: str = _knob("l2", choices=NORMS)  # l2 (per token) | linf
    attack_steps: int = _knob(3, within=(int, 1, 50), label="K")  # ascent steps K of pgd / freelb
    step_ratio: float | None = _knob(None, within=(float, 0.0, 10.0))  # alpha / epsilon; None: default_alpha
    smoothing_samples: int = _knob(1, within=(int, 1, 64))  # random draws per adversarial example (rs-rp)
    substitution_rate: float = _knob(0.25, within=(float, 0.0, 1.0))  # rs-da: chance a word with synonyms is replaced
    # False: [CLS], [SEP] and the "query: " prefix are never perturbed. Every sentence shares them (~5 of ~15
    # tokens of a Tatoeba sentence), so perturbing them spends budget on no word of the sentence and moves all
    # languages alike; the evaluation attack (EvalConfig.perturb_special) follows the same default.
    perturb_special: bool = _knob(False, choices=(False, True))
    perturb: str = _knob("anchor", choices=("anchor", "both"))  # perturb anchors only, or positives too
    # -- optimisation
    lr: float = _knob(2e-5, within=(float, 0.0, 1.0))  # AdamW peak learning rate
    weight_decay: float = _knob(0.01, within=(float, 0.0, 1.0))  # AdamW, not on biases and LayerNorm
    warmup_ratio: float = _knob(0.1, within=(float, 0.0, 1.0))  # linear warm-up share, then linear decay
    epochs: int = _knob(1, within=(int, 1, 1000))  # passes over the English training pairs
    batch_size: int = _knob(32, within=(int, 2, 65536))  # pairs per step (in-batch negatives: n - 1)
    temperature: float = _knob(0.05, within=(float, 0.0, 10.0), label="tau")  # contrastive loss temperature
    max_grad_norm: float = _knob(1.0, within=(float, 0.0, 1e6))  # gradient clipping
    freeze_embeddings: bool = _knob(True, choices=(True, False))  # the word-embedding table: 82% of e5-small
    max_train_pairs: int | None = _knob(None, within=(int, 1, 10**9))  # None: all English training pairs
    max_seq_len: int = _knob(MAX_LENGTH, within=(int, 8, 512))  # tokens per training sentence, prefix included
    seed: int = _knob(0, within=(int, 0, 2**31))  # weights are shared; seeds the split, attacks and order
    # -- set by the driver
    model: str = _set_by_driver("multilingual-e5-small")  # model directory or hub id (study.encoder.loading)
    data_dir: str | None = _set_by_driver(None, param=False)  # None: $STUDY_DATA_DIR or ../shared/data
    eval: EvalConfig = _set_by_driver(factory=EvalConfig, param=False)  # what every epoch's evaluation measures
    eval_every_epoch: bool = _set_by_driver(True)  # False: after the last epoch only (replicas: no early stop)
    replica: str | None = _set_by_driver(None)  # replication: the configuration repeated (baseline, best1 ...)

    def __post_init__(self):
        if isinstance(self.eval, dict):  # as Ray hands it over
            object.__setattr__(self, "eval", EvalConfig(**self.eval))
        for f in dataclasses.fields(self):
            if is_searchable(f.name):
                check_value(f"trial configuration, key '{f.name}'", f.name, getattr(self, f.name))

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TrialConfig:
        """From a Ray config dict: unknown keys are refused (ConfigError), missing ones take their default."""
        unknown = sorted(set(config) - set(KEYS))
        if unknown:
            raise ConfigError(f"unknown trial configuration key(s) {', '.join(map(repr, unknown))} "
                              f"(known: {', '.join(KEYS)})")
        return cls(**config)

    @classmethod
    def from_params(cls, params: dict[str, str], **overrides) -> TrialConfig:
        """From a child run's MLflow parameters (strings, see `mlflow_params`), plus `overrides`; parameters
        that are not keys (such as the flattened eval settings) are ignored."""
        values = {key: parse_value(key, text) for key, text in params.items() if key in KEYS and key != "eval"}
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (eval included, as a dict), as Ray and JSON take it."""
        return dataclasses.asdict(self)

    def mlflow_params(self) -> dict[str, str]:
        """The child run's parameters: every key but those the parent run records once."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("param", True)}


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrialConfig))
_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}


def is_searchable(key: str) -> bool:
    """Whether a search space may search or fix `key` (it carries a range or choices)."""
    meta = _FIELDS[key].metadata if key in _FIELDS else {}
    return bool(meta.get("within") or meta.get("choices"))


SEARCHABLE: tuple[str, ...] = tuple(key for key in KEYS if is_searchable(key))


def rule_of(key: str) -> tuple:
    """(int | float, low, high) for a numeric key, or the tuple of allowed values."""
    meta = _FIELDS[key].metadata
    return meta["within"] or meta["choices"]


def column_label(key: str) -> str:
    """The key's title in the progress table."""
    return _FIELDS[key].metadata.get("label") or key


def check_value(where: str, key: str, value) -> None:
    """Raise ConfigError (one line, starting with `where`) when `value` is not allowed for `key`."""
    rule = rule_of(key)
    if value is None and _FIELDS[key].default is None:
        return
    if _FIELDS[key].metadata.get("within"):
        kind, low, high = rule
        wrong_type = not isinstance(value, numbers.Real) or (kind is int and not isinstance(value, numbers.Integral))
        if isinstance(value, bool) or wrong_type:
            raise ConfigError(f"{where}: {value!r} is not a{'n int' if kind is int else ' number'}")
        if not low <= value <= high:
            raise ConfigError(f"{where}: {value} outside [{low}, {high}]")
    elif value not in rule:
        raise ConfigError(f"{where}: {value!r} is not one of {list(rule)}")


def parse_value(key: str, text: str):
    """A value of `key` from its string form (MLflow stores parameters as strings)."""
    f = _FIELDS[key]
    if text == "None" and f.default is None:
        return None
    kind = type(f.default) if f.default is not None else (f.metadata.get("within") or (str,))[0]
    if kind is bool:
        return {"True": True, "False": False}[text]
    return kind(text) if kind in (int, float) else text


DEFAULTS = TrialConfig()
# the keys that act only on the adversarial share of a batch: at r = 0 they change nothing (study.replicate
# uses this to tell whether two r = 0 configurations train alike)
ADVERSARIAL_KEYS = ("ratio", "epsilon", "method", "norm", "attack_steps", "step_ratio", "smoothing_samples",
                    "substitution_rate", "perturb_special", "perturb")
