"""Search spaces: one small module each, with
    DESCRIPTION  one line, shown by `python -m study.run --list-spaces`
    SPACE        {config key: Uniform | LogUniform | IntRange | Choice}, what Optuna searches
    FIXED        {config key: value}, set for every trial of the space
Keys are the searchable fields of `trainables.config.TrialConfig`, which also says what each may take. A
space is validated before anything starts; a bad one raises ConfigError (a ValueError) with one line.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

from study.errors import ConfigError
from trainables.config import DEFAULTS, SEARCHABLE, TrialConfig, check_value, rule_of

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


@dataclass
class SearchSpace:
    name: str
    description: str
    space: dict
    fixed: dict

    def validate(self) -> SearchSpace:
        """Raise ConfigError (one line) on unknown keys, wrong types or out-of-range bounds."""
        for key, spec in {**self.space, **{k: Choice((v,)) for k, v in self.fixed.items()}}.items():
            where = f"search space '{self.name}', key '{key}'"
            if key not in SEARCHABLE:
                raise ConfigError(f"{where}: unknown key (searchable: {', '.join(sorted(SEARCHABLE))})")
            rule = rule_of(key)
            if isinstance(spec, Choice):
                if not spec.options:
                    raise ConfigError(f"{where}: empty choice")
                for option in spec.options:
                    check_value(where, key, option)
            elif isinstance(spec, (Uniform, LogUniform, IntRange)):
                if not isinstance(rule[0], type):
                    raise ConfigError(f"{where}: takes one of {rule}, not a range")
                if isinstance(spec, IntRange) and rule[0] is not int:
                    raise ConfigError(f"{where}: is a float; use Uniform or LogUniform")
                check_value(where, key, spec.low)
                check_value(where, key, spec.high)
                if not spec.low < spec.high:
                    raise ConfigError(f"{where}: low {spec.low} must be below high {spec.high}")
                if isinstance(spec, LogUniform) and spec.low <= 0:
                    raise ConfigError(f"{where}: a log scale needs low > 0, got {spec.low}")
            else:
                raise ConfigError(f"{where}: {spec!r} is not Uniform, LogUniform, IntRange or Choice")
        overlap = set(self.space) & set(self.fixed)
        if overlap:
            raise ConfigError(f"search space '{self.name}': {sorted(overlap)} both searched and fixed")
        if "ratio" not in self.space and self.fixed.get("ratio") is None:
            raise ConfigError(f"search space '{self.name}': must search 'ratio' (the r = 0 baseline needs it)")
        return self

    def to_tune_domains(self) -> dict:
        """Ray Tune domains of the searched keys (the fixed ones are in `study.tuning.base_trial_config`)."""
        from ray import tune

        convert = {Uniform: lambda s: tune.uniform(s.low, s.high),
                   LogUniform: lambda s: tune.loguniform(s.low, s.high),
                   IntRange: lambda s: tune.randint(s.low, s.high + 1),
                   Choice: lambda s: tune.choice(list(s.options))}
        return {k: convert[type(s)](s) for k, s in self.space.items()}

    def baseline_point(self, defaults: TrialConfig = DEFAULTS) -> dict:
        """The clean baseline r = 0, other searched keys at their default when inside the space
        (else the middle of the range / first option): every study trains it first."""
        point = {}
        for key, spec in self.space.items():
            default = getattr(defaults, key)
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


def load_space(name: str, ranges: dict[str, tuple[float, float]] | None = None) -> SearchSpace:
    """The named space, with searched numeric keys narrowed to `ranges` ({key: (low, high)}), validated."""
    if name not in SPACE_NAMES:
        raise ConfigError(f"unknown search space '{name}' (available: {', '.join(SPACE_NAMES)})")
    module = importlib.import_module(f"search_spaces.{name}")
    space = dict(module.SPACE)
    for key, (low, high) in (ranges or {}).items():
        if key not in space:
            raise ConfigError(f"search space '{name}' does not search '{key}' (it searches {', '.join(space)})")
        if isinstance(space[key], Choice):
            raise ConfigError(f"search space '{name}', key '{key}': a choice, not a range")
        kind = type(space[key])
        space[key] = kind(int(low), int(high)) if kind is IntRange else kind(float(low), float(high))
    return SearchSpace(name, module.DESCRIPTION, space, dict(getattr(module, "FIXED", {}))).validate()
