"""Search spaces: one small module each, with
    DESCRIPTION  one line, shown by `python -m study.run --list-spaces`
    SPACE        {config key: Uniform | LogUniform | IntRange | Choice}, what Optuna searches
    FIXED        {config key: value}, set for every trial of the space
Keys are those of `trainables.trainable.DEFAULT_CONFIG`. A space is validated before anything starts.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

SPACE_NAMES = ("hybrid_ratio", "attack", "smoothing", "full")


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int  # inclusive


@dataclass(frozen=True)
class Choice:
    options: tuple


# What each searchable key may take: (kind, lower, upper) for numbers, or the allowed values.
def _allowed() -> dict[str, Any]:
    from trainables.attacks import ATTACKS, NORMS

    return {
        "ratio": (float, 0.0, 1.0), "epsilon": (float, 0.0, 16.0), "step_ratio": (float, 0.0, 10.0),
        "attack_steps": (int, 1, 50), "smoothing_samples": (int, 1, 64), "lr": (float, 0.0, 1.0),
        "weight_decay": (float, 0.0, 1.0), "warmup_ratio": (float, 0.0, 1.0), "temperature": (float, 0.0, 10.0),
        "epochs": (int, 1, 1000), "batch_size": (int, 2, 65536), "max_grad_norm": (float, 0.0, 1e6),
        "max_seq_len": (int, 8, 512), "max_train_pairs": (int, 1, 10**9), "seed": (int, 0, 2**31),
        "method": tuple(ATTACKS), "norm": NORMS, "perturb": ("anchor", "both"), "freeze_embeddings": (True, False),
    }


@dataclass
class SearchSpace:
    name: str
    description: str
    space: dict
    fixed: dict

    def validate(self) -> SearchSpace:
        """Raise ValueError (one line) on unknown keys, wrong types or out-of-range bounds."""
        allowed = _allowed()
        for key, spec in {**self.space, **{k: Choice((v,)) for k, v in self.fixed.items()}}.items():
            where = f"search space '{self.name}', key '{key}'"
            if key not in allowed:
                raise ValueError(f"{where}: unknown key (known: {', '.join(sorted(allowed))})")
            rule = allowed[key]
            if isinstance(spec, Choice):
                if not spec.options:
                    raise ValueError(f"{where}: empty choice")
                for option in spec.options:
                    _check_value(where, option, rule)
            elif isinstance(spec, (Uniform, LogUniform, IntRange)):
                if not isinstance(rule[0], type) or rule[0] not in (int, float):
                    raise ValueError(f"{where}: takes one of {rule}, not a range")
                if isinstance(spec, IntRange) and rule[0] is not int:
                    raise ValueError(f"{where}: is a float; use Uniform or LogUniform")
                _check_value(where, spec.low, rule)
                _check_value(where, spec.high, rule)
                if not spec.low < spec.high:
                    raise ValueError(f"{where}: low {spec.low} must be below high {spec.high}")
                if isinstance(spec, LogUniform) and spec.low <= 0:
                    raise ValueError(f"{where}: a log scale needs low > 0, got {spec.low}")
            else:
                raise ValueError(f"{where}: {spec!r} is not Uniform, LogUniform, IntRange or Choice")
        overlap = set(self.space) & set(self.fixed)
        if overlap:
            raise ValueError(f"search space '{self.name}': {sorted(overlap)} both searched and fixed")
        if "ratio" not in self.space and self.fixed.get("ratio") is None:
            raise ValueError(f"search space '{self.name}': must search 'ratio' (the r = 0 baseline needs it)")
        return self

    def to_tune(self) -> dict:
        """Ray Tune domains for the searched keys, plus the fixed values."""
        from ray import tune

        convert = {Uniform: lambda s: tune.uniform(s.low, s.high),
                   LogUniform: lambda s: tune.loguniform(s.low, s.high),
                   IntRange: lambda s: tune.randint(s.low, s.high + 1),
                   Choice: lambda s: tune.choice(list(s.options))}
        return {**{k: convert[type(s)](s) for k, s in self.space.items()}, **self.fixed}

    def baseline_point(self, defaults: dict) -> dict:
        """The clean baseline r = 0, other searched keys at their default when inside the space
        (else the middle of the range / first option): every study trains it first."""
        point = {}
        for key, spec in self.space.items():
            default = defaults.get(key)
            if isinstance(spec, Choice):
                point[key] = default if default in spec.options else spec.options[0]
            elif default is not None and spec.low <= default <= spec.high:
                point[key] = default
            elif isinstance(spec, LogUniform):
                point[key] = math.sqrt(spec.low * spec.high)
            elif isinstance(spec, IntRange):
                point[key] = (spec.low + spec.high) // 2
            else:
                point[key] = (spec.low + spec.high) / 2
        point["ratio"] = 0.0
        return point


def _check_value(where: str, value, rule) -> None:
    if isinstance(rule, tuple) and len(rule) == 3 and isinstance(rule[0], type):
        kind, low, high = rule
        wrong_type = not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int))
        if isinstance(value, bool) or wrong_type:
            raise ValueError(f"{where}: {value!r} is not a{'n int' if kind is int else ' number'}")
        if not low <= value <= high:
            raise ValueError(f"{where}: {value} outside [{low}, {high}]")
    elif value not in rule:
        raise ValueError(f"{where}: {value!r} is not one of {list(rule)}")


def load_space(name: str, ranges: dict[str, tuple[float, float]] | None = None) -> SearchSpace:
    """The named space, with searched numeric keys narrowed to `ranges` ({key: (low, high)}), validated."""
    if name not in SPACE_NAMES:
        raise ValueError(f"unknown search space '{name}' (available: {', '.join(SPACE_NAMES)})")
    module = importlib.import_module(f"search_spaces.{name}")
    space = dict(module.SPACE)
    for key, (low, high) in (ranges or {}).items():
        if key not in space:
            raise ValueError(f"search space '{name}' does not search '{key}' (it searches {', '.join(space)})")
        if isinstance(space[key], Choice):
            raise ValueError(f"search space '{name}', key '{key}': a choice, not a range")
        kind = type(space[key])
        space[key] = kind(int(low), int(high)) if kind is IntRange else kind(float(low), float(high))
    return SearchSpace(name, module.DESCRIPTION, space, dict(getattr(module, "FIXED", {}))).validate()
