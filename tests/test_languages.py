"""Checks of study.evaluation.languages against the real Tatoeba data directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from study.evaluation.languages import (
    GROUPS,
    HIGH_RESOURCE_GROUP,
    LANGUAGES,
    LOW_RESOURCE_GROUP,
    group_of,
    resolve_languages,
)

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("STUDY_DATA_DIR", REPO.parent / "shared" / "data"))
TATOEBA = DATA_DIR / "tatoeba"
_FILE_RE = re.compile(r"^tatoeba\.([a-z]{3})-eng\.([a-z]{3})$")


def _codes_on_disk() -> set[str]:
    if not TATOEBA.is_dir():
        pytest.fail(f"Tatoeba data not found at {TATOEBA} (set STUDY_DATA_DIR)")
    codes = set()
    for path in TATOEBA.iterdir():
        m = _FILE_RE.match(path.name)
        if m:
            codes.add(m.group(1))
    return codes


def _n_lines(code: str) -> int:
    with open(TATOEBA / f"tatoeba.{code}-eng.{code}", encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_metadata_matches_data_files():
    on_disk = _codes_on_disk()
    assert len(on_disk) == 112
    assert set(LANGUAGES) - on_disk == set(), "codes without a data file"
    assert on_disk - set(LANGUAGES) == set(), "data files without metadata"
    for code in LANGUAGES:
        assert (TATOEBA / f"tatoeba.{code}-eng.{code}").is_file()
        assert (TATOEBA / f"tatoeba.{code}-eng.eng").is_file()


def test_table_is_consistent():
    assert list(LANGUAGES) == sorted(LANGUAGES)
    for code, lang in LANGUAGES.items():
        assert lang.code == code
        assert lang.resource in {"high", "low"}
        assert lang.name and lang.script and lang.family and lang.branch
    n_high = sum(lang.resource == "high" for lang in LANGUAGES.values())
    assert 35 <= n_high <= 50


def test_default_groups():
    low, high = LOW_RESOURCE_GROUP, HIGH_RESOURCE_GROUP
    assert set(low) <= set(LANGUAGES) and set(high) <= set(LANGUAGES)
    assert len(set(low)) == len(low) and len(set(high)) == len(high)
    assert not set(low) & set(high)
    assert 15 <= len(low) <= 25
    assert 4 <= len(high) <= 8
    assert all(LANGUAGES[c].resource == "low" for c in low)
    assert all(LANGUAGES[c].resource == "high" for c in high)
    assert len({LANGUAGES[c].script for c in low}) >= 5
    assert len({LANGUAGES[c].family for c in low}) >= 5
    assert all(LANGUAGES[c].family != "Constructed" for c in low)
    assert all(_n_lines(c) >= 200 for c in low)
    assert GROUPS["all"] == tuple(LANGUAGES)
    assert group_of(low[0]) == "low" and group_of(high[0]) == "high" and group_of("epo") == "other"


def test_resolve_languages():
    assert resolve_languages("amh, kat,amh") == ["amh", "kat"]
    assert resolve_languages(["yid", "deu", "yid"]) == ["yid", "deu"]
    assert resolve_languages(group="high") == list(HIGH_RESOURCE_GROUP)
    assert resolve_languages(group="all") == list(LANGUAGES)
    assert resolve_languages() == [*LOW_RESOURCE_GROUP, *HIGH_RESOURCE_GROUP]
    with pytest.raises(ValueError, match="'xyz'"):
        resolve_languages("deu,xyz")
    with pytest.raises(ValueError, match="'nope'"):
        resolve_languages(group="nope")
