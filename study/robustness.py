"""Per-language zero-shot retrieval robustness, the figures the study optimises and people quote.

For each language L paired with English (Tatoeba), over the full candidate pool of that pair:
  acc.L.l2e / acc.L.e2l      accuracy@1 of L->English and English->L (cosine of normalised embeddings)
  acc.L.clean                their mean
  acc.L.attacked_eps<e>      L->English with each L query attacked: PGD in the input-embedding space pushing
                             the query away from its true translation (untargeted), radius e (L2 per token)
  acc.L.noise_eps<e>         L->English with uniform random noise of radius e on the query
  acc.L.typo_p<p>            L->English with character noise (insert/delete/swap/substitute) at rate p
  acc.L.robust               mean attacked accuracy over the radii (the robustness area)
Group means (group.<low|high>.<figure>), the English source-language check (en.paraphrase_acc: paraphrase
retrieval accuracy@1 on STS-B test pairs with score >= 4 and MSRP test pairs labelled 1; en.stsb_spearman),
and the objectives (objective.robust = group.low.robust, objective.clean = group.low.clean).

The radii are fixed (not taken from the trial), so every trial is measured with the same yardstick.
DEFAULT_RADII were calibrated on the untrained encoder: see README, "Evaluation radii".
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from study.data import load_english_pairs, load_stsb, load_tatoeba, resolve_data_dir
from study.encoding import Encoder, sentence_embedding
from study.errors import ConfigError
from study.languages import in_group, resolve_languages
from trainables.attacks import PGD, random_in_ball

# Calibrated on the untrained encoder (Swahili, 200 sentences, PGD-3, L2 per token; word vectors have norm
# ~1.6): attacked L->English accuracy 0.84 / 0.72 / 0.51 / 0.26 at these radii against 0.88 clean, and 0.00
# at 0.5. Random noise of the same radii leaves it at 0.88 (noise needs radius ~2 to halve it).
DEFAULT_RADII = (0.02, 0.05, 0.1, 0.2)
DEFAULT_TYPO_RATES = (0.1,)
OBJECTIVES = ("robust", "clean", "pareto")  # what a study optimises (study.run --objective)
PARETO_METRICS = ("objective.clean", "objective.robust")


def objective_metric(objective: str) -> str:
    """The metric of an objective: robust -> objective.robust, clean -> objective.clean. A pareto study
    ranks its trials by robustness (its front is reported apart)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r} (one of {', '.join(OBJECTIVES)})")
    return "objective.clean" if objective == "clean" else "objective.robust"


@dataclass
class EvalConfig:
    """What an evaluation measures. Fixed per study so trials are comparable."""

    langs: list[str] = field(default_factory=lambda: resolve_languages())
    radii: tuple[float, ...] = DEFAULT_RADII
    typo_rates: tuple[float, ...] = DEFAULT_TYPO_RATES
    max_sentences: int | None = None  # per language; None = all (up to 1000)
    attack_steps: int = 3
    english_check: bool = True
    max_english_pairs: int | None = None
    seed: int = 0
    keep_hits: bool = False  # per-sentence hits (for the sentence bootstrap of study.replicate)

    def __post_init__(self):
        if any(r < 0 for r in self.radii):
            raise ConfigError(f"radii must be >= 0, got {list(self.radii)}")
        if any(not 0 <= p <= 1 for p in self.typo_rates):
            raise ConfigError(f"typo rates must lie in [0, 1], got {list(self.typo_rates)}")
        self.radii = tuple(float(r) for r in self.radii)
        self.typo_rates = tuple(float(p) for p in self.typo_rates)


def fmt(value: float) -> str:
    return f"{value:g}"


def retrieval_hits(queries: torch.Tensor, candidates: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Per query, whether its nearest candidate (cosine; inputs are normalised) is its own, candidate i."""
    return torch.cat([(queries[start : start + chunk] @ candidates.T).argmax(dim=1)
                      == torch.arange(start, min(start + chunk, len(queries)))
                      for start in range(0, len(queries), chunk)])


def retrieval_accuracy(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """accuracy@1 where query i's true candidate is candidate i."""
    return retrieval_hits(queries, candidates).float().mean().item()


# ----------------------------------------------------------------------------- perturbed queries
def _generator(seed: int, *keys) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr((seed, *keys)).encode()))


def embed_perturbed(encoder: Encoder, token_ids, targets: torch.Tensor, eps: float, how: str,
                    steps: int, generator: torch.Generator) -> torch.Tensor:
    """Query embeddings with perturbed input embeddings: how = "attack" (PGD pushing each query away from
    its target embedding) or "noise" (uniform in the ball). Deterministic given the generator."""
    model, out = encoder.model, torch.empty_like(targets)
    embed_layer = model.get_input_embeddings()
    for idx, input_ids, mask in encoder.batches(token_ids):
        # one generator per batch, seeded from the study seed and the batch's first sentence
        gen = torch.Generator(device=input_ids.device).manual_seed(
            int(torch.randint(0, 2**31, (1,), generator=generator)) + idx[0])
        with torch.no_grad():
            inputs = embed_layer(input_ids)
        if how == "noise":
            perturbed = inputs + random_in_ball(inputs, mask, eps, "l2", gen)
        else:
            target = targets[idx].to(inputs.device)

            def similarity_to_target(x, mask=mask, target=target):
                with encoder.autocast():
                    return (sentence_embedding(model, mask, inputs_embeds=x) * target).sum()

            # PGD ascends its loss: ascend on minus the similarity to the true translation
            perturbed = PGD(eps, steps=steps, generator=gen)(inputs, mask, lambda x: -similarity_to_target(x))
        with torch.no_grad(), encoder.autocast():
            out[idx] = sentence_embedding(model, mask, inputs_embeds=perturbed).float().cpu()
    return out


def add_typos(sentence: str, rate: float, rng: random.Random) -> str:
    """Character noise: each character, with probability `rate`, is deleted, swapped with the next,
    replaced by, or preceded by a character drawn from the sentence itself (so the script is kept)."""
    if rate <= 0 or not sentence:
        return sentence
    alphabet = [c for c in sentence if not c.isspace()] or list(sentence)
    chars, out, i = list(sentence), [], 0
    while i < len(chars):
        c = chars[i]
        if rng.random() >= rate:
            out.append(c)
        else:
            op = rng.randrange(4)
            if op == 1 and i + 1 < len(chars):  # swap
                out += [chars[i + 1], c]
                i += 1
            elif op == 2:  # substitute
                out.append(rng.choice(alphabet))
            elif op == 3:  # insert
                out += [rng.choice(alphabet), c]
            # op == 0: delete
        i += 1
    return "".join(out) or sentence


# ----------------------------------------------------------------------------- one language
def evaluate_language(encoder: Encoder, lang: str, config: EvalConfig, data_dir: Path | None,
                      hits: dict | None = None) -> dict:
    """The figures of one language; with `hits` (a dict), also the per-sentence L->English hits."""
    pairs = load_tatoeba(lang, data_dir, config.max_sentences)
    source_ids = encoder.tokenize(pairs["source"])
    src, eng = encoder.embed(token_ids=source_ids), encoder.embed(pairs["english"])
    if hits is not None:
        hits["l2e"] = retrieval_hits(src, eng).int().tolist()
    m = {"l2e": retrieval_accuracy(src, eng), "e2l": retrieval_accuracy(eng, src)}
    m["clean"] = (m["l2e"] + m["e2l"]) / 2
    for eps in config.radii:
        for how in ("attack", "noise"):
            gen = _generator(config.seed, lang, how, eps)
            queries = embed_perturbed(encoder, source_ids, eng, eps, how, config.attack_steps, gen)
            name = f"{'attacked' if how == 'attack' else 'noise'}_eps{fmt(eps)}"
            m[name] = retrieval_accuracy(queries, eng)
            if hits is not None and how == "attack":
                hits[name] = retrieval_hits(queries, eng).int().tolist()
    for rate in config.typo_rates:
        rng = random.Random(zlib.crc32(repr((config.seed, lang, "typo", rate)).encode()))
        typo = encoder.embed([add_typos(s, rate, rng) for s in pairs["source"]])
        m[f"typo_p{fmt(rate)}"] = retrieval_accuracy(typo, eng)
    if config.radii:
        m["robust"] = float(np.mean([m[f"attacked_eps{fmt(e)}"] for e in config.radii]))
    m["n"] = len(pairs)
    return m


def english_check(encoder: Encoder, data_dir: Path | None, max_pairs: int | None = None) -> dict:
    """The task in the training language, on test pairs training never saw."""
    from scipy.stats import spearmanr

    pairs = load_english_pairs("test", data_dir)
    if max_pairs:
        pairs = pairs.select(range(min(max_pairs, len(pairs))))
    anchors, positives = encoder.embed(pairs["anchor"]), encoder.embed(pairs["positive"])
    stsb = load_stsb("test", data_dir)
    if max_pairs:
        stsb = stsb.select(range(min(max_pairs, len(stsb))))
    cos = (encoder.embed(stsb["sentence1"]) * encoder.embed(stsb["sentence2"])).sum(1).numpy()
    return {"paraphrase_acc": retrieval_accuracy(anchors, positives),
            "stsb_spearman": float(spearmanr(cos, stsb["score"]).statistic)}


def flatten(per_lang: dict[str, dict], english: dict | None) -> dict[str, float]:
    """Per-language figures -> flat metric dict with group means and the objectives."""
    flat = {f"acc.{lang}.{k}": v for lang, fig in per_lang.items() for k, v in fig.items() if k != "n"}
    for group in ("low", "high"):
        members = in_group(per_lang, group)
        if not members:
            continue
        for key in per_lang[members[0]]:
            if key != "n":
                flat[f"group.{group}.{key}"] = float(np.mean([per_lang[lang][key] for lang in members]))
    if english:
        flat.update({f"en.{k}": v for k, v in english.items()})
    target = "low" if "group.low.clean" in flat else "high" if "group.high.clean" in flat else None
    means = {key: float(np.mean([f[key] for f in per_lang.values()])) for key in ("clean", "robust")
             if all(key in f for f in per_lang.values())}
    for key in ("clean", "robust"):
        flat[objective_metric(key)] = flat.get(f"group.{target}.{key}", means.get(key, float("nan")))
    return flat


def evaluate_encoder(encoder: Encoder, config: EvalConfig, data_dir: Path | None, progress=None) -> dict:
    """All figures of one model: {"languages": {lang: {...}}, "english": {...}, "metrics": flat dict}."""
    was_training = encoder.model.training
    encoder.model.eval()
    per_lang, hits = {}, {}
    for lang in config.langs:
        hits[lang] = {} if config.keep_hits else None
        per_lang[lang] = evaluate_language(encoder, lang, config, data_dir, hits[lang])
        if progress:
            progress(lang, per_lang[lang])
    english = english_check(encoder, data_dir, config.max_english_pairs) if config.english_check else None
    encoder.model.train(was_training)
    result = {"languages": per_lang, "english": english, "metrics": flatten(per_lang, english)}
    if config.keep_hits:
        result["hits"] = hits
    return result


def evaluate_model(model: str, data_dir: str | None, eval_config: dict) -> dict:
    """Load `model` (a name for `study.models.resolve_model`) and evaluate it: the untrained encoder's
    reference row, with the trials' own evaluation settings."""
    from study.models import resolve_model

    encoder = Encoder.load(resolve_model(model))
    directory = resolve_data_dir(data_dir) if data_dir else resolve_data_dir()
    return evaluate_encoder(encoder, EvalConfig(**eval_config), directory)
