"""Search spaces: one small module each, with
    DESCRIPTION  one line, shown by `python -m study.run --list-spaces`
    SPACE        {config key: Uniform | LogUniform | IntRange | Choice}, what Optuna searches
    FIXED        {config key: value}, set for every trial of the space
    ONLY_WHEN    {config key: (choice key, values)}, optional: a searched key that is sampled only when the
                 searched choice takes one of those values (the attack steps only for the methods that step);
                 a trial that does not sample it runs it at its TrialConfig default
The space reaches Optuna as a define-by-run function (`SearchSpace.define_by_run`, which Ray's OptunaSearch
takes as its `space`), so a conditional key costs the trials it does not apply to nothing.
Keys are the searchable fields of `trainables.config.TrialConfig`, which also says what each may take. A
space is validated before anything starts; a bad one raises ConfigError (a ValueError) with one line.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field

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
    only_when: dict = field(default_factory=dict)

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
        for key, (parent, values) in self.only_when.items():
            where = f"search space '{self.name}', key '{key}'"
            if key not in self.space:
                raise ConfigError(f"{where}: conditional but not searched")
            if not isinstance(self.space.get(parent), Choice) or key == parent or parent in self.only_when:
                raise ConfigError(f"{where}: its condition must name an unconditional searched choice, not '{parent}'")
            if not set(values) <= set(self.space[parent].options):
                raise ConfigError(f"{where}: condition values {list(values)} not among {parent}'s options")
        if "ratio" not in self.space and self.fixed.get("ratio") is None:
            raise ConfigError(f"search space '{self.name}': must search 'ratio' (the r = 0 baseline needs it)")
        return self

    def active(self, point: dict) -> list[str]:
        """The searched keys that apply to a point holding (at least) the unconditional keys' values."""
        return [key for key in self.space
                if key not in self.only_when or point.get(self.only_when[key][0]) in self.only_when[key][1]]

    def define_by_run(self, trial) -> None:
        """Optuna's define-by-run space: suggests the unconditional keys, then each conditional key whose choice
        took one of its values (Ray's OptunaSearch records what is suggested as the trial's config)."""
        suggest = {Uniform: lambda key, s: trial.suggest_float(key, s.low, s.high),
                   LogUniform: lambda key, s: trial.suggest_float(key, s.low, s.high, log=True),
                   IntRange: lambda key, s: trial.suggest_int(key, s.low, s.high),
                   Choice: lambda key, s: trial.suggest_categorical(key, list(s.options))}
        chosen = {key: suggest[type(spec)](key, spec) for key, spec in self.space.items() if key not in self.only_when}
        for key in self.active(chosen):
            if key not in chosen:
                suggest[type(self.space[key])](key, self.space[key])

    def baseline_point(self, defaults: TrialConfig = DEFAULTS) -> dict:
        """The clean baseline r = 0, other searched keys at their default when inside the space
        (else the middle of the range / first option), conditional keys only where they apply: every study
        trains it first."""
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
        return {key: point[key] for key in self.active(point)}


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
    return SearchSpace(name, module.DESCRIPTION, space, dict(getattr(module, "FIXED", {})),
                       dict(getattr(module, "ONLY_WHEN", {}))).validate()
