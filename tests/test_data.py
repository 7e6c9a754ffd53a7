"""Data loaders on the real files, and their errors on malformed copies built in tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import study.evaluation.data
from study.errors import DataError
from study.evaluation.data import (
    ENV_DATA_DIR,
    load_english_pairs,
    load_msrp,
    load_stsb,
    load_tatoeba,
    resolve_data_dir,
)


def _raw_lines(path: Path) -> list[str]:
    """Lines of a file split on b"\\n" only (text-mode iteration would also split on a stray \\r)."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8") for line in lines]


def _line_count(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


# ----------------------------------------------------------------------------- Tatoeba, real files
def test_load_tatoeba_reads_every_aligned_pair(data_dir):
    src_file = data_dir / "tatoeba" / "tatoeba.swh-eng.swh"
    eng_file = data_dir / "tatoeba" / "tatoeba.swh-eng.eng"
    ds = load_tatoeba("swh", data_dir)
    assert ds.column_names == ["source", "english"]
    assert len(ds) == _line_count(src_file) == _line_count(eng_file)
    assert ds["source"] == _raw_lines(src_file)
    assert ds["english"] == _raw_lines(eng_file)


@pytest.mark.parametrize("lang", ["deu", "cmn", "amh"])
def test_load_tatoeba_other_scripts(data_dir, lang):
    ds = load_tatoeba(lang, data_dir)
    assert len(ds) == _line_count(data_dir / "tatoeba" / f"tatoeba.{lang}-eng.{lang}")
    assert ds[0]["source"] == _raw_lines(data_dir / "tatoeba" / f"tatoeba.{lang}-eng.{lang}")[0]


def test_load_tatoeba_max_pairs_keeps_the_first_pairs(data_dir):
    full = load_tatoeba("swh", data_dir)
    five = load_tatoeba("swh", data_dir, max_pairs=5)
    assert len(five) == 5
    assert five["source"] == full["source"][:5]
    assert five["english"] == full["english"][:5]
    assert len(load_tatoeba("swh", data_dir, max_pairs=10**6)) == len(full)


@pytest.mark.parametrize("lang", ["swh", "deu", "kab"])
def test_selection_and_report_splits_are_disjoint_halves_fixed_per_language(data_dir, lang):
    every = load_tatoeba(lang, data_dir)
    selection, report = load_tatoeba(lang, data_dir, split="selection"), load_tatoeba(lang, data_dir, split="report")
    pairs = lambda ds: list(zip(ds["source"], ds["english"]))  # noqa: E731
    assert len(selection) == len(every) // 2 and len(selection) + len(report) == len(every)
    assert sorted(pairs(selection) + pairs(report)) == sorted(pairs(every)), "together: every pair, once"
    positions = {pair: i for i, pair in enumerate(pairs(every))}
    for half in (selection, report):  # each in file order, so --max-sentences takes a split's first pairs
        assert [positions[p] for p in pairs(half)] == sorted(positions[p] for p in pairs(half))
    assert pairs(load_tatoeba(lang, data_dir, 8, split="report")) == pairs(report)[:8]
    assert pairs(load_tatoeba(lang, data_dir, split="selection")) == pairs(selection), "deterministic"
    with pytest.raises(DataError, match="unknown Tatoeba split"):
        load_tatoeba(lang, data_dir, split="test")


def test_load_tatoeba_unknown_code_names_it(data_dir):
    with pytest.raises(DataError, match="'xyz'"):
        load_tatoeba("xyz", data_dir)


# ----------------------------------------------------------------------------- Tatoeba, malformed copies
@pytest.fixture
def bad_tatoeba(tmp_path, data_dir) -> Path:
    """A data dir whose tatoeba/ holds: swh with a truncated .eng, deu with an empty .eng, fra with a
    non-UTF-8 source file, ita with an empty line, and an intact tur."""
    real = data_dir / "tatoeba"
    folder = tmp_path / "tatoeba"
    folder.mkdir()

    def copy(lang, n=6):
        for side in (lang, "eng"):
            lines = _raw_lines(real / f"tatoeba.{lang}-eng.{side}")[:n]
            (folder / f"tatoeba.{lang}-eng.{side}").write_text("\n".join(lines) + "\n", encoding="utf-8")

    for lang in ("swh", "deu", "fra", "ita", "tur"):
        copy(lang)
    eng = _raw_lines(real / "tatoeba.swh-eng.eng")[:5]  # one line short of the source
    (folder / "tatoeba.swh-eng.eng").write_text("\n".join(eng) + "\n", encoding="utf-8")
    (folder / "tatoeba.deu-eng.eng").write_bytes(b"")
    (folder / "tatoeba.fra-eng.fra").write_bytes(b"Je t'aime.\n" + b"Caf\xe9 cr\xe8me\n" * 5)
    ita = _raw_lines(real / "tatoeba.ita-eng.ita")[:6]
    ita[3] = "   "
    (folder / "tatoeba.ita-eng.ita").write_text("\n".join(ita) + "\n", encoding="utf-8")
    return tmp_path


def test_malformed_copy_intact_language_still_loads(bad_tatoeba):
    assert len(load_tatoeba("tur", bad_tatoeba)) == 6


def test_truncated_file_is_named(bad_tatoeba):
    with pytest.raises(DataError, match="line-aligned") as err:
        load_tatoeba("swh", bad_tatoeba)
    assert str(bad_tatoeba / "tatoeba" / "tatoeba.swh-eng.eng") in str(err.value)
    assert "6 lines" in str(err.value) and "5" in str(err.value)


def test_empty_file_is_named(bad_tatoeba):
    with pytest.raises(DataError, match="empty") as err:
        load_tatoeba("deu", bad_tatoeba)
    assert str(bad_tatoeba / "tatoeba" / "tatoeba.deu-eng.eng") in str(err.value)


def test_non_utf8_file_is_named(bad_tatoeba):
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_tatoeba("fra", bad_tatoeba)
    assert str(bad_tatoeba / "tatoeba" / "tatoeba.fra-eng.fra") in str(err.value)


def test_blank_line_is_named_with_its_number(bad_tatoeba):
    with pytest.raises(DataError, match="line 4 is empty") as err:
        load_tatoeba("ita", bad_tatoeba)
    assert str(bad_tatoeba / "tatoeba" / "tatoeba.ita-eng.ita") in str(err.value)


def test_missing_file_is_named(bad_tatoeba):
    (bad_tatoeba / "tatoeba" / "tatoeba.tur-eng.eng").unlink()
    with pytest.raises(DataError, match="missing data file") as err:
        load_tatoeba("tur", bad_tatoeba)
    assert str(bad_tatoeba / "tatoeba" / "tatoeba.tur-eng.eng") in str(err.value)


# ----------------------------------------------------------------------------- English pairs
def _expected_english_pairs(data_dir: Path, split: str) -> list[tuple[str, str]]:
    """Recomputed from the raw files: STS-B rows scored >= 4, then MSRP rows labelled 1."""
    pairs = []
    with open(data_dir / "stsb-multi-mt" / f"stsb-en-{split}.csv", encoding="utf-8", newline="") as f:
        for s1, s2, score in csv.reader(f):
            if float(score) >= 4.0:
                pairs.append((s1, s2))
    n_stsb = len(pairs)
    with open(data_dir / "msrp" / f"msr-para-{split}.tsv", encoding="utf-8-sig", newline="") as f:
        lines = f.read().splitlines()
    assert lines[0].split("\t")[0] == "Quality"
    for line in lines[1:]:
        quality, _id1, _id2, s1, s2 = line.split("\t")
        if quality == "1":
            pairs.append((s1, s2))
    assert 0 < n_stsb < len(pairs)
    return pairs


def test_english_train_pairs_are_stsb_ge_4_and_msrp_positives(data_dir):
    ds = load_english_pairs("train", data_dir)
    assert ds.column_names == ["anchor", "positive"]
    expected = _expected_english_pairs(data_dir, "train")
    assert len(ds) == len(expected)
    assert list(zip(ds["anchor"], ds["positive"])) == expected
    # and the filter is not vacuous: both files hold rows that had to be dropped
    assert len(load_stsb("train", data_dir)) + len(load_msrp("train", data_dir)) > len(expected)


def test_english_test_pairs(data_dir):
    ds = load_english_pairs("test", data_dir)
    assert list(zip(ds["anchor"], ds["positive"])) == _expected_english_pairs(data_dir, "test")


def _stsb_dir(tmp_path: Path, lines: list[str]) -> Path:
    (tmp_path / "stsb-multi-mt").mkdir()
    (tmp_path / "stsb-multi-mt" / "stsb-en-train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_stsb_wrong_field_count_names_file_and_line(tmp_path):
    data = _stsb_dir(tmp_path, ["A plane is taking off.,An air plane is taking off.,5.0",
                                "A man is playing a flute.,4.2",
                                "A dog runs.,A dog is running.,4.5"])
    with pytest.raises(DataError, match=r"line 2: expected 3 fields") as err:
        load_english_pairs("train", data)
    assert str(data / "stsb-multi-mt" / "stsb-en-train.csv") in str(err.value)


def test_stsb_non_number_score_names_file_and_line(tmp_path):
    data = _stsb_dir(tmp_path, ["A plane is taking off.,An air plane is taking off.,5.0",
                                "A dog runs.,A dog is running.,4.5",
                                "A man is playing a flute.,A man plays a flute.,high"])
    with pytest.raises(DataError, match=r"line 3: score 'high' is not a number") as err:
        load_stsb("train", data)
    assert str(data / "stsb-multi-mt" / "stsb-en-train.csv") in str(err.value)


def test_msrp_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "msrp").mkdir()
    path = tmp_path / "msrp" / "msr-para-train.tsv"
    path.write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                    "1\t1\t2\tA man sleeps.\tA man is sleeping.\n"
                    "yes\t3\t4\tA cat eats.\tA cat is eating.\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3") as err:
        load_msrp("train", tmp_path)
    assert str(path) in str(err.value)


# ----------------------------------------------------------------------------- data directory
def test_resolve_data_dir_explicit_argument_wins(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    from_env.mkdir()
    monkeypatch.setenv(ENV_DATA_DIR, str(from_env))
    assert resolve_data_dir(explicit) == explicit.resolve()
    assert resolve_data_dir(str(explicit)) == explicit.resolve()


def test_resolve_data_dir_env_before_shared(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path))
    assert resolve_data_dir() == tmp_path.resolve()


def test_resolve_data_dir_falls_back_to_shared_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    monkeypatch.setattr(study.evaluation.data, "REPO_ROOT", tmp_path / "repo")
    assert resolve_data_dir() is None  # no ../shared/data: the hub copies would be used
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir() == (tmp_path / "shared" / "data").resolve()


def test_resolve_data_dir_real_layout(monkeypatch):
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    beside = Path(study.evaluation.data.__file__).resolve().parents[3] / "shared" / "data"
    assert resolve_data_dir() == (beside.resolve() if beside.is_dir() else None)


def test_resolve_data_dir_nonexistent_explicit_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path))  # a valid env must not rescue a bad explicit argument
    with pytest.raises(DataError, match="does not exist") as err:
        resolve_data_dir(tmp_path / "nope")
    assert "nope" in str(err.value)


def test_resolve_data_dir_nonexistent_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DATA_DIR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=ENV_DATA_DIR):
        resolve_data_dir()
