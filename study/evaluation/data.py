"""Data, read where it lives (never copied into the repository), as `datasets.Dataset`s.

Data directory, first found wins: `--data-dir`, $STUDY_DATA_DIR, `../shared/data` beside the repository.
Where none exists, the public hub copies are used (needs network): `mteb/tatoeba-bitext-mining`,
`sentence-transformers/stsb`, `nyu-mll/glue` (mrpc, the same corpus as MSRP) and `PhilipMay/stsb_multi_mt`.

  tatoeba/tatoeba.<lang>-eng.<lang> / .eng   LASER Tatoeba v1, line i of one file translates line i of the other
  stsb-multi-mt/stsb-en-<split>.csv          sentence1,sentence2,score (0-5)
  stsb-multi-mt/stsb-<lang>-dev.csv          STS-B dev machine-translated (de es fr it nl pt), rows aligned with
                                             stsb-en-dev.csv (the cross-lingual similarity of
                                             study.evaluation.crosslingual)
  msrp/msr-para-<split>.tsv                  Quality, #1 ID, #2 ID, #1 String, #2 String
"""

from __future__ import annotations

import csv
import os
import zlib
from pathlib import Path

import datasets
import numpy as np
from datasets import Dataset, concatenate_datasets

from study.errors import DataError

ENV_DATA_DIR = "STUDY_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
STSB_MIN_SCORE = 4.0  # a pair counts as a paraphrase at STS-B score >= 4 (of 5)

datasets.disable_progress_bars()  # per-call "Filter: 100%" bars drown the trial table in the log


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory, or None when the hub copies must be used."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise DataError(f"data directory {data_dir} does not exist")
        return path.resolve()
    if os.environ.get(ENV_DATA_DIR):
        path = Path(os.environ[ENV_DATA_DIR]).expanduser()
        if not path.is_dir():
            raise DataError(f"data directory {path} (from ${ENV_DATA_DIR}) does not exist")
        return path.resolve()
    beside = REPO_ROOT.parent / "shared" / "data"
    return beside.resolve() if beside.is_dir() else None


def describe_data_dir(data_dir: Path | None) -> str:
    return str(data_dir) if data_dir else "hub (mteb/tatoeba-bitext-mining, sentence-transformers/stsb, glue)"


# ----------------------------------------------------------------------------- Tatoeba
def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError(f"data file {path} is empty")
    return lines


def tatoeba_languages(data_dir: Path) -> list[str]:
    """Language codes with a Tatoeba file pair in the data directory."""
    return sorted(p.name.split(".")[1].split("-")[0] for p in (data_dir / "tatoeba").glob("tatoeba.*-eng.eng"))


# Every language's Tatoeba pairs are split in two disjoint halves, once and for all: the *selection* sentences,
# which a study's trials are evaluated on (what its objective and ASHA see), and the *report* sentences, which
# only the final evaluation sees (study.replicate, the findings, the summary's headline columns). "all" is both.
SPLITS = ("selection", "report", "all")


def split_indices(n: int, lang: str, split: str) -> list[int]:
    """The line numbers (0-based, ascending) of a language's `n` pairs in `split`: a permutation seeded with
    the CRC-32 of the language code puts the first half (n // 2) into selection and the rest into report.
    (The translated STS-B rows are split the same way, with one key for all their languages: XSTS_SPLIT_KEY.)"""
    if split not in SPLITS:
        raise DataError(f"unknown Tatoeba split '{split}' (one of {', '.join(SPLITS)})")
    if split == "all":
        return list(range(n))
    order = np.random.default_rng(zlib.crc32(lang.encode())).permutation(n)
    chosen = order[: n // 2] if split == "selection" else order[n // 2 :]
    return sorted(int(i) for i in chosen)


def load_tatoeba(lang: str, data_dir: Path | None = None, max_pairs: int | None = None,
                 split: str = "all") -> Dataset:
    """Translation pairs of one language with English, columns `source` (the language) and `english`: the
    pairs of `split` (see SPLITS), the first `max_pairs` of them in file order. Retrieval candidates are the
    loaded pairs, so a split's candidate pool holds its own sentences only."""
    from study.evaluation.languages import LANGUAGES

    if lang not in LANGUAGES:
        raise DataError(f"unknown language code '{lang}' (expected one of the 112 Tatoeba codes)")
    if data_dir is None:
        return _tatoeba_from_hub(lang, max_pairs, split)
    base = data_dir / "tatoeba" / f"tatoeba.{lang}-eng"
    source = _read_lines(base.with_name(f"{base.name}.{lang}"))
    english = _read_lines(base.with_name(f"{base.name}.eng"))
    if len(source) != len(english):
        raise DataError(f"{base}.{lang} has {len(source)} lines but {base}.eng has {len(english)}: "
                         "the files must be line-aligned")
    for number, (s, e) in enumerate(zip(source, english), start=1):
        if not s.strip() or not e.strip():
            raise DataError(f"{base}.{lang if not s.strip() else 'eng'} line {number} is empty")
    keep = split_indices(len(source), lang, split)[:max_pairs or None]
    return Dataset.from_dict({"source": [source[i] for i in keep], "english": [english[i] for i in keep]})


def _tatoeba_from_hub(lang: str, max_pairs: int | None, split: str) -> Dataset:
    from datasets import load_dataset

    ds = load_dataset("mteb/tatoeba-bitext-mining", f"{lang}-eng", split="test")
    ds = ds.rename_columns({"sentence1": "source", "sentence2": "english"}).select_columns(["source", "english"])
    return ds.select(split_indices(len(ds), lang, split)[:max_pairs or None])


# ----------------------------------------------------------------------------- English pairs
def _read_stsb(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if len(row) != 3:
                raise DataError(f"{path} line {number}: expected 3 fields sentence1,sentence2,score, got {len(row)}")
            try:
                rows.append((row[0], row[1], float(row[2])))
            except ValueError:
                raise DataError(f"{path} line {number}: score {row[2]!r} is not a number") from None
    if not rows:
        raise DataError(f"data file {path} is empty")
    s1, s2, score = zip(*rows)
    return Dataset.from_dict({"sentence1": list(s1), "sentence2": list(s2), "score": list(score)})


def _read_msrp(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    s1, s2, label = [], [], []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or header[0] != "Quality" or len(header) != 5:
            raise DataError(f"{path}: expected the header 'Quality #1 ID #2 ID #1 String #2 String'")
        for number, row in enumerate(reader, start=2):
            if len(row) != 5 or row[0] not in ("0", "1"):
                raise DataError(f"{path} line {number}: expected 5 tab-separated fields with a 0/1 quality")
            label.append(int(row[0]))
            s1.append(row[3])
            s2.append(row[4])
    if not label:
        raise DataError(f"data file {path} has no rows")
    return Dataset.from_dict({"sentence1": s1, "sentence2": s2, "label": label})


def load_stsb(split: str, data_dir: Path | None = None) -> Dataset:
    """STS-B (English) with columns sentence1, sentence2, score on the 0-5 scale."""
    if data_dir is None:
        from datasets import load_dataset

        ds = load_dataset("sentence-transformers/stsb", split="validation" if split == "dev" else split)
        return ds.map(lambda row: {"score": row["score"] * 5.0})  # the hub copy is scaled to 0-1
    return _read_stsb(data_dir / "stsb-multi-mt" / f"stsb-en-{split}.csv")


def load_msrp(split: str, data_dir: Path | None = None) -> Dataset:
    """MSR paraphrase corpus with columns sentence1, sentence2, label (1 = paraphrase)."""
    if data_dir is None:
        from datasets import load_dataset

        hub_split = {"val": "validation"}.get(split, split)
        return load_dataset("nyu-mll/glue", "mrpc", split=hub_split).select_columns(
            ["sentence1", "sentence2", "label"])
    return _read_msrp(data_dir / "msrp" / f"msr-para-{split}.tsv")


def load_english_pairs(split: str = "train", data_dir: Path | None = None) -> Dataset:
    """Positive English pairs: STS-B with score >= 4 and MSRP labelled 1. Columns anchor, positive."""
    stsb = load_stsb(split, data_dir).filter(lambda row: row["score"] >= STSB_MIN_SCORE)
    msrp = load_msrp(split, data_dir).filter(lambda row: row["label"] == 1)
    parts = [ds.select_columns(["sentence1", "sentence2"]) for ds in (stsb, msrp)]
    return concatenate_datasets(parts).rename_columns({"sentence1": "anchor", "sentence2": "positive"})


# ----------------------------------------------------------------------------- cross-lingual STS-B
# The translated STS-B dev rows are split like a Tatoeba language, with one permutation for every translation, so
# that an English sentence of the report half never appears in the selection half of another language.
XSTS_SPLIT_KEY = "stsb-multi-mt-dev"


def _stsb_dev(lang: str, data_dir: Path | None) -> Dataset:
    """STS-B dev in `lang` (en: the English original) from stsb-multi-mt, whose languages align row by row."""
    if data_dir is None:
        from datasets import load_dataset

        ds = load_dataset("PhilipMay/stsb_multi_mt", lang, split="dev")
        return ds.rename_columns({"similarity_score": "score"})
    return _read_stsb(data_dir / "stsb-multi-mt" / f"stsb-{lang}-dev.csv")


def load_crosslingual_sts(lang: str, data_dir: Path | None = None, max_pairs: int | None = None,
                          split: str = "all") -> Dataset:
    """STS-B dev pairs across languages: columns `english` (the English sentence 1), `translated` (sentence 2
    machine-translated into `lang`) and `score` (0-5), the rows of `split` (see SPLITS; XSTS_SPLIT_KEY) in file
    order; `max_pairs` of them drawn at random, not the first: STS-B dev is ordered by genre (image captions,
    then news, then forums), so its first rows would be captions only. The draw is fixed and nested (fewer
    pairs are a subset of more). The translation's rows must align with stsb-en-dev.csv (same count, same
    scores)."""
    english, translated = _stsb_dev("en", data_dir), _stsb_dev(lang, data_dir)
    where = (data_dir / "stsb-multi-mt" / f"stsb-{lang}-dev.csv") if data_dir else f"stsb_multi_mt/{lang}"
    if len(english) != len(translated):
        raise DataError(f"{where} has {len(translated)} rows but stsb-en-dev.csv has {len(english)}: the "
                        "translations must align row by row with the English file")
    misaligned = np.flatnonzero(np.abs(np.asarray(english["score"]) - np.asarray(translated["score"])) > 1e-6)
    if misaligned.size:
        raise DataError(f"{where} row {misaligned[0] + 1}: score {translated['score'][misaligned[0]]} differs from "
                        f"stsb-en-dev.csv's {english['score'][misaligned[0]]}: the rows are not aligned")
    keep = split_indices(len(english), XSTS_SPLIT_KEY, split)
    if max_pairs and max_pairs < len(keep):
        draw = np.random.default_rng(zlib.crc32(f"{XSTS_SPLIT_KEY}/{split}".encode())).permutation(keep)
        keep = sorted(int(i) for i in draw[:max_pairs])
    return Dataset.from_dict({"english": [english["sentence1"][i] for i in keep],
                              "translated": [translated["sentence2"][i] for i in keep],
                              "score": [float(english["score"][i]) for i in keep]})


# ----------------------------------------------------------------------------- lineage: which files, their digests
# The files each loader above reads from a data directory (the hub path reads none: these return []), for the
# datasets an MLflow run records (study.orchestration.tracking.trial_datasets). The paths are the loaders' own.
def tatoeba_files(lang: str, data_dir: Path | None) -> list[Path]:
    """`load_tatoeba`'s two line-aligned files of a language: the language's side, then English."""
    if data_dir is None:
        return []
    base = data_dir / "tatoeba" / f"tatoeba.{lang}-eng"
    return [base.with_name(f"{base.name}.{lang}"), base.with_name(f"{base.name}.eng")]


def english_pair_files(split: str, data_dir: Path | None) -> list[Path]:
    """`load_english_pairs`' files: STS-B (English) and MSRP of `split`."""
    if data_dir is None:
        return []
    return [data_dir / "stsb-multi-mt" / f"stsb-en-{split}.csv", data_dir / "msrp" / f"msr-para-{split}.tsv"]


def crosslingual_sts_files(lang: str, data_dir: Path | None) -> list[Path]:
    """`load_crosslingual_sts`' files: STS-B dev in English and machine-translated into `lang`."""
    if data_dir is None:
        return []
    return [data_dir / "stsb-multi-mt" / "stsb-en-dev.csv", data_dir / "stsb-multi-mt" / f"stsb-{lang}-dev.csv"]


DIGEST_CHARS = 12  # a sha256 prefix: short enough to read in a runs table, long enough never to collide here
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> digest: each file hashed once per process


def file_digest(path: Path) -> str:
    """The first DIGEST_CHARS hex digits of the sha256 of a file's content, computed once per process (again only
    if the file's size or modification time changed)."""
    import hashlib

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        sha = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        _DIGESTS[key] = sha.hexdigest()[:DIGEST_CHARS]
    return _DIGESTS[key]
