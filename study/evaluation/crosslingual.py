"""Cross-lingual similarity: what most users load a multilingual sentence encoder for, measured in every trial
beside retrieval robustness, so that a configuration that buys attacked retrieval with graded similarity across
languages is seen.

Data: STS-B dev machine-translated (`study.evaluation.data.load_crosslingual_sts`). For each language X of
XSTS_LANGS, the English sentence 1 of a pair is compared with sentence 2 translated into X. On the pairs of one
split S (split as Tatoeba is, one permutation for all languages: the two halves share no English sentence), keys:
  S.xsts.<X>      Spearman of cos(en s1, X s2) against the gold score (0-5)
  S.xpara.<X>     en->X paraphrase retrieval accuracy@1 among the pairs scored >= 4 (the candidates: their X s2)
  S.xsts.mean, S.xpara.mean   the means over the languages
In a study's trials, against the untrained encoder on the same selection pairs (the selection constraint):
  S.xsts.vs_untrained      the trial's S.xsts.mean minus the untrained encoder's
  S.xsts.vs_untrained_se   its standard error: a paired bootstrap over pairs (the same rows in every language)
  constraint.xsts          -(vs_untrained + TOLERANCE_SE * vs_untrained_se); <= 0: the trial meets the constraint
A trial "does no harm" when its cross-lingual similarity is no worse than the untrained encoder's, within one
standard error of the paired difference (docs/statistics.md, "A selection that does no harm").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from study.evaluation import stats
from study.evaluation.data import STSB_MIN_SCORE, load_crosslingual_sts

XSTS_LANGS = ("de", "es", "fr", "it", "nl", "pt")  # the translations stsb-multi-mt ships beside the English dev set
CONSTRAINT = "constraint.xsts"  # <= 0: no worse than the untrained encoder (Optuna's sign convention)
# The tolerance, in standard errors of the paired difference. One: a configuration that truly does no harm passes
# 84% of the time (a noisy selection half does not veto it), while the losses of a mostly adversarial batch at a
# large radius lay 3.4-5.4 standard errors out at 120-750 pairs (docs/statistics.md, "A selection that does no harm").
TOLERANCE_SE = 1.0
BOOTSTRAP_RESAMPLES = 1000


def xsts_key(split: str, figure: str, lang: str = "mean") -> str:
    """The metric key of a cross-lingual figure (xsts | xpara) of one language, or of their mean, on one split."""
    return f"{split}.{figure}.{lang}"


def load_pairs(langs: Sequence[str], data_dir: Path | None, split: str, max_pairs: int | None) -> dict:
    """The split's pairs of every language: {"score": [...], "english": [...], "translated": {lang: [...]}} (the
    rows are the same in every language, so the English sentences and the scores are too)."""
    sets = {lang: load_crosslingual_sts(lang, data_dir, max_pairs, split) for lang in langs}
    first = sets[langs[0]]
    return {"score": list(first["score"]), "english": list(first["english"]),
            "translated": {lang: list(ds["translated"]) for lang, ds in sets.items()}}


def evaluate_pairs(encoder, pairs: dict) -> dict:
    """Per-language figures and per-pair measurements of one split's pairs (`load_pairs`):
    {"languages": {lang: {"xsts", "xpara", "n"}}, "score": [...], "cos": {lang: per-pair cosine},
    "para": {lang: per-query paraphrase hit (0/1), for the pairs scored >= 4}}."""
    from scipy.stats import spearmanr

    from study.evaluation.robustness import paraphrase_hits

    score = np.asarray(pairs["score"])
    paraphrase = np.flatnonzero(score >= STSB_MIN_SCORE)
    english = encoder.embed(pairs["english"])  # once for every language
    langs = list(pairs["translated"])
    translated = encoder.embed([s for lang in langs for s in pairs["translated"][lang]])  # one length-sorted pass
    out = {"languages": {}, "score": score.tolist(), "cos": {}, "para": {}}
    for i, lang in enumerate(langs):
        theirs = translated[i * len(score) : (i + 1) * len(score)]
        cos = (english * theirs).sum(1).numpy()
        texts = [pairs["translated"][lang][j] for j in paraphrase]
        hits = (paraphrase_hits(english[paraphrase], theirs[paraphrase], texts).int().numpy() if paraphrase.size
                else np.zeros(0, dtype=int))  # a small subsample may hold no pair scored >= 4: xpara is nan
        out["cos"][lang], out["para"][lang] = cos.tolist(), hits.tolist()
        out["languages"][lang] = {"xsts": float(spearmanr(cos, score).statistic),
                                  "xpara": float(hits.mean()) if hits.size else float("nan"), "n": int(score.size)}
    return out


def evaluate_crosslingual(encoder, langs: Sequence[str], data_dir: Path | None, splits: Sequence[str],
                          max_pairs: int | None) -> dict[str, dict]:
    """{split: `evaluate_pairs` of that split's pairs} for each split."""
    return {split: evaluate_pairs(encoder, load_pairs(langs, data_dir, split, max_pairs)) for split in splits}


def flatten(measured: dict, split: str) -> dict[str, float]:
    """`evaluate_pairs`' figures as flat metrics of one split: S.xsts.<lang>, S.xpara.<lang> and their means."""
    flat = {}
    for figure in ("xsts", "xpara"):
        values = {lang: fig[figure] for lang, fig in measured["languages"].items()}
        flat.update({xsts_key(split, figure, lang): v for lang, v in values.items()})
        flat[xsts_key(split, figure)] = float(np.mean(list(values.values())))
    return flat


def mean_spearman(measured: dict) -> float:
    """The mean over languages of the Spearman correlation (S.xsts.mean) of `evaluate_pairs`' per-pair cosines."""
    from scipy.stats import spearmanr

    return float(np.mean([spearmanr(cos, measured["score"]).statistic for cos in measured["cos"].values()]))


def mean_spearman_resampled(measured: dict, resamples: np.ndarray) -> np.ndarray:
    """The mean over languages of the Spearman correlation on each row of `resamples` (B, N pair indices)."""
    score = np.asarray(measured["score"])[resamples]
    return np.mean([stats.spearman_rows(np.asarray(cos)[resamples], score) for cos in measured["cos"].values()],
                   axis=0)


def pair_resamples(n_pairs: int, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_boot, n_pairs) indices: bootstrap resamples of the pairs, the same rows for every language and model."""
    return np.random.default_rng(seed).integers(0, n_pairs, size=(n_boot, n_pairs))


def against_untrained(measured: dict, untrained: dict, split: str) -> dict[str, float]:
    """The selection constraint's figures: this model's mean Spearman minus the untrained encoder's on the same
    pairs, its paired-bootstrap standard error, and CONSTRAINT (<= 0: within TOLERANCE_SE of no harm)."""
    if measured["score"] != untrained["score"]:
        raise ValueError("the untrained encoder was measured on other pairs")
    difference = mean_spearman(measured) - mean_spearman(untrained)
    resamples = pair_resamples(len(measured["score"]))
    boots = mean_spearman_resampled(measured, resamples) - mean_spearman_resampled(untrained, resamples)
    se = float(np.nanstd(boots, ddof=1))
    return {f"{split}.xsts.vs_untrained": difference, f"{split}.xsts.vs_untrained_se": se,
            CONSTRAINT: -(difference + TOLERANCE_SE * se)}


_UNTRAINED: dict = {}  # per process (a Ray worker runs trial after trial): the untrained encoder's measurements


def untrained_measurements(encoder, model: str, langs: Sequence[str], data_dir: Path | None, split: str,
                           max_pairs: int | None) -> dict:
    """`evaluate_pairs` of `encoder`, which must still be the untrained `model`, on the split's pairs: computed once
    per worker process for a given model, data and pairs (a trial calls it before it trains or restores)."""
    key = (model, str(data_dir), tuple(langs), split, max_pairs)
    if key not in _UNTRAINED:
        was_training = encoder.model.training
        encoder.model.eval()  # no dropout, as in every evaluation
        _UNTRAINED[key] = evaluate_pairs(encoder, load_pairs(langs, data_dir, split, max_pairs))
        encoder.model.train(was_training)
    return _UNTRAINED[key]
