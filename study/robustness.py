"""Per-language zero-shot retrieval robustness, the figures the study optimises and people quote.

For each language L paired with English (Tatoeba), on the sentences of one split S (study.data.SPLITS:
selection, which the study's objective and ASHA see; report, which only the final evaluation sees; all),
over the candidate pool of that split, keys S.acc.L.<figure> (shown below without the S.):
  acc.L.l2e / acc.L.e2l      accuracy@1 of L->English and English->L (cosine of normalised embeddings)
  acc.L.clean                their mean
  acc.L.attacked_eps<e>      L->English with each L query attacked: PGD in the input-embedding space pushing
                             the query away from its true translation (untargeted), radius e (L2 per token)
  acc.L.noise_eps<e>         L->English with uniform random noise of radius e on the query
  acc.L.typo_p<p>            L->English with character noise (insert/delete/swap/substitute) at rate p
  acc.L.robust               mean attacked accuracy over the radii (the robustness area)
  acc.L.strong_eps<e>        (EvalConfig.strong_attack) L->English under the strong attack: PGD-20 with 3 random
                             restarts, on the margin between the nearest wrong English candidate and the true one
  acc.L.robust_strong        mean strong-attack accuracy over the radii
Attacks and noise leave [CLS], [SEP] and the "query: " prefix alone (EvalConfig.perturb_special).
Group means (S.group.<low|high>.<figure>), the English source-language check (en.paraphrase_acc: paraphrase
retrieval accuracy@1 on STS-B test pairs with score >= 4 and MSRP test pairs labelled 1; en.stsb_spearman),
and the objectives, always of the evaluation's own split, the selection split in a study's trials
(objective.robust = S.group.low.robust, objective.clean = S.group.low.clean).

The radii are fixed (not taken from the trial), so every trial is measured with the same yardstick.
DEFAULT_RADII were calibrated on the untrained encoder: see README, "Evaluation radii".
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from study.data import SPLITS, load_english_pairs, load_stsb, load_tatoeba, resolve_data_dir
from study.encoding import Encoder, sentence_embedding
from study.errors import ConfigError
from study.languages import in_group, resolve_languages
from trainables.attacks import PGD, RestartPGD, random_in_ball

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
    split: str = "selection"  # the Tatoeba sentences evaluated (study.data.SPLITS); trials: selection
    max_sentences: int | None = None  # per language, of the split; None = all of it
    attack_steps: int = 3
    english_check: bool = True
    max_english_pairs: int | None = None
    seed: int = 0
    keep_hits: bool = False  # per-sentence hits (for the sentence bootstrap of study.replicate)
    # the threat model: False keeps [CLS], [SEP] and the "query: " prefix out of the attack and the noise (they
    # are shared by every sentence of every language); as TrialConfig.perturb_special
    perturb_special: bool = False
    # the strong attack (acc.L.strong_eps<e>, acc.L.robust_strong): RestartPGD with a margin loss against the
    # nearest wrong candidate, strong_steps steps from strong_restarts random starts; off in the trials (cost)
    strong_attack: bool = False
    strong_steps: int = 20
    strong_restarts: int = 3

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ConfigError(f"unknown evaluation split '{self.split}' (one of {', '.join(SPLITS)})")
        if any(r < 0 for r in self.radii):
            raise ConfigError(f"radii must be >= 0, got {list(self.radii)}")
        if any(not 0 <= p <= 1 for p in self.typo_rates):
            raise ConfigError(f"typo rates must lie in [0, 1], got {list(self.typo_rates)}")
        if self.strong_steps < 1 or self.strong_restarts < 1:
            raise ConfigError(f"the strong attack needs >= 1 step and restart, got {self.strong_steps} steps and "
                              f"{self.strong_restarts} restarts")
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


def margin_to_nearest_wrong(queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per query: max over wrong candidates of the cosine, minus the cosine to the gold candidate `gold[i]`
    (inputs normalised). > 0 exactly when a wrong candidate is retrieved."""
    sims = queries @ candidates.T
    gold_sim = sims.gather(1, gold[:, None]).squeeze(1)
    return sims.scatter(1, gold[:, None], float("-inf")).amax(dim=1) - gold_sim


def embed_perturbed(encoder: Encoder, token_ids, targets: torch.Tensor, eps: float, how: str,
                    steps: int, generator: torch.Generator, perturb_special: bool = False,
                    restarts: int = 1) -> torch.Tensor:
    """Query embeddings with perturbed input embeddings; query i's true candidate is targets[i]. how =
    "attack": PGD-`steps` pushing each query away from its target (minus the cosine), the cheap attack;
    "strong": RestartPGD (`steps` steps, `restarts` random starts) on the margin between the nearest wrong
    candidate among all `targets` and the true one; "noise": uniform in the ball. Only the positions
    `Encoder.perturbable_mask` allows move, unless `perturb_special`. Deterministic given the generator."""
    model, out = encoder.model, torch.empty_like(targets)
    embed_layer = model.get_input_embeddings()
    for idx, input_ids, mask in encoder.batches(token_ids):
        # one generator per batch, seeded from the study seed and the batch's first sentence
        gen = torch.Generator(device=input_ids.device).manual_seed(
            int(torch.randint(0, 2**31, (1,), generator=generator)) + idx[0])
        movable = mask if perturb_special else encoder.perturbable_mask(input_ids, mask)
        with torch.no_grad():
            inputs = embed_layer(input_ids)

        def embedding(x, mask=mask):
            with encoder.autocast():
                return sentence_embedding(model, mask, inputs_embeds=x)

        if how == "noise":
            perturbed = inputs + random_in_ball(inputs, movable, eps, "l2", gen)
        elif how == "strong":
            candidates = targets.to(inputs.device).clone()  # a plain tensor: `Encoder.embed` returns inference ones
            gold = torch.as_tensor(idx, device=inputs.device)

            def margin(x, candidates=candidates, gold=gold):
                return margin_to_nearest_wrong(embedding(x), candidates, gold)

            perturbed = RestartPGD(eps, steps=steps, restarts=restarts, generator=gen)(inputs, movable, margin)
        else:
            target = targets[idx].to(inputs.device)

            def away_from_target(x, target=target):  # PGD ascends: minus the similarity to the true translation
                return -(embedding(x) * target).sum()

            perturbed = PGD(eps, steps=steps, generator=gen)(inputs, movable, away_from_target)
        with torch.no_grad():
            out[idx] = embedding(perturbed).float().cpu()
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
                      hits: dict | None = None, split: str | None = None) -> dict:
    """The figures of one language on `split` (default: the config's); with `hits` (a dict), also the
    per-sentence L->English hits."""
    pairs = load_tatoeba(lang, data_dir, config.max_sentences, split or config.split)
    source_ids = encoder.tokenize(pairs["source"])
    src, eng = encoder.embed(token_ids=source_ids), encoder.embed(pairs["english"])
    if hits is not None:
        hits["l2e"] = retrieval_hits(src, eng).int().tolist()
    m = {"l2e": retrieval_accuracy(src, eng), "e2l": retrieval_accuracy(eng, src)}
    m["clean"] = (m["l2e"] + m["e2l"]) / 2
    kinds = {"attack": "attacked", "noise": "noise", **({"strong": "strong"} if config.strong_attack else {})}
    for eps in config.radii:
        for how, figure in kinds.items():
            gen = _generator(config.seed, lang, how, eps)
            steps = config.strong_steps if how == "strong" else config.attack_steps
            queries = embed_perturbed(encoder, source_ids, eng, eps, how, steps, gen,
                                      perturb_special=config.perturb_special, restarts=config.strong_restarts)
            name = f"{figure}_eps{fmt(eps)}"
            m[name] = retrieval_accuracy(queries, eng)
            if hits is not None and how != "noise":
                hits[name] = retrieval_hits(queries, eng).int().tolist()
    for rate in config.typo_rates:
        rng = random.Random(zlib.crc32(repr((config.seed, lang, "typo", rate)).encode()))
        typo = encoder.embed([add_typos(s, rate, rng) for s in pairs["source"]])
        m[f"typo_p{fmt(rate)}"] = retrieval_accuracy(typo, eng)
    if config.radii:
        m["robust"] = float(np.mean([m[f"attacked_eps{fmt(e)}"] for e in config.radii]))
        if config.strong_attack:
            m["robust_strong"] = float(np.mean([m[f"strong_eps{fmt(e)}"] for e in config.radii]))
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
    return {"paraphrase_acc": paraphrase_hits(anchors, positives, pairs["positive"]).float().mean().item(),
            "stsb_spearman": float(spearmanr(cos, stsb["score"]).statistic)}


def paraphrase_hits(anchors: torch.Tensor, positives: torch.Tensor, positive_texts) -> torch.Tensor:
    """Per anchor, whether its nearest positive has the text of its own positive. The test pairs repeat 36
    positive sentences; identical sentences have identical embeddings and argmax returns the first, so a
    comparison of indices would count the later copies' anchors as misses whatever the encoder."""
    first = {}
    canonical = torch.tensor([first.setdefault(text, i) for i, text in enumerate(positive_texts)])
    nearest = (anchors @ positives.T).argmax(dim=1)
    return canonical[nearest] == canonical


def lang_key(split: str, lang: str, figure: str) -> str:
    """The metric key of one language's figure on one split, e.g. report.acc.swh.robust."""
    return f"{split}.acc.{lang}.{figure}"


def group_key(split: str, group: str, figure: str) -> str:
    """The metric key of a group mean on one split, e.g. selection.group.low.robust."""
    return f"{split}.group.{group}.{figure}"


def is_per_language(key: str) -> bool:
    return key.split(".")[1:2] == ["acc"]


def flatten(per_lang: dict[str, dict], english: dict | None, split: str, objectives: bool = True) -> dict:
    """Per-language figures of one split -> flat metric dict with group means (keys carry the split), the
    English check and (with `objectives`) the objectives."""
    flat = {lang_key(split, lang, k): v for lang, fig in per_lang.items() for k, v in fig.items() if k != "n"}
    for group in ("low", "high"):
        members = in_group(per_lang, group)
        if not members:
            continue
        for key in per_lang[members[0]]:
            if key != "n":
                flat[group_key(split, group, key)] = float(np.mean([per_lang[lang][key] for lang in members]))
    if english:
        flat.update({f"en.{k}": v for k, v in english.items()})
    if objectives:
        target = next((g for g in ("low", "high") if group_key(split, g, "clean") in flat), None)
        means = {key: float(np.mean([f[key] for f in per_lang.values()])) for key in ("clean", "robust")
                 if all(key in f for f in per_lang.values())}
        for key in ("clean", "robust"):
            flat[objective_metric(key)] = flat.get(group_key(split, target, key), means.get(key, float("nan")))
    return flat


PER_LANGUAGE = "per_language"  # the field of a Ray result that carries the <split>.acc.<lang>.* figures


def tune_result(flat: dict[str, float]) -> dict:
    """A flat metric dict as a trial reports it to Ray Tune: the headline figures (group means, objectives,
    English check) as numbers, every per-language figure packed into one JSON text under PER_LANGUAGE.

    Why: Tune keeps six running statistics of every numeric field of every trial in its experiment snapshot and
    hands each field to its loggers; the per-language figures (about 375 per result for the default groups,
    1,500 for all 112 languages) are for MLflow and the report only, and `unpack_result` gives them back."""
    per_language = {k: v for k, v in flat.items() if is_per_language(k)}
    headline = {k: v for k, v in flat.items() if k not in per_language}
    return {**headline, PER_LANGUAGE: json.dumps(per_language, separators=(",", ":"))}


def unpack_result(result: dict) -> dict:
    """The inverse of `tune_result`: a Ray result (or its `metrics`) with the per-language figures flat again."""
    if PER_LANGUAGE not in result:
        return dict(result)
    flat = {k: v for k, v in result.items() if k != PER_LANGUAGE}
    flat.update(json.loads(result[PER_LANGUAGE]))
    return flat


def evaluate_encoder(encoder: Encoder, config: EvalConfig, data_dir: Path | None, progress=None,
                     also_report: bool = False) -> dict:
    """All figures of one model on the config's split: {"languages": {lang: {...}}, "english": {...},
    "metrics": flat dict, "hits" (keep_hits)}. `also_report`: the report split's figures too, into "metrics"
    only (a trial's last epoch: the study's summary quotes them; its objective and ASHA never see them)."""
    was_training = encoder.model.training
    encoder.model.eval()
    per_lang, hits = {}, {}
    for lang in config.langs:
        hits[lang] = {} if config.keep_hits else None
        per_lang[lang] = evaluate_language(encoder, lang, config, data_dir, hits[lang])
        if progress:
            progress(lang, per_lang[lang])
    english = english_check(encoder, data_dir, config.max_english_pairs) if config.english_check else None
    metrics = flatten(per_lang, english, config.split)
    if also_report and config.split != "report":
        report = {lang: evaluate_language(encoder, lang, config, data_dir, split="report") for lang in config.langs}
        metrics.update(flatten(report, None, "report", objectives=False))
    encoder.model.train(was_training)
    result = {"languages": per_lang, "english": english, "metrics": metrics}
    if config.keep_hits:
        result["hits"] = hits
    return result


def evaluate_model(model: str, data_dir: str | None, eval_config: dict, also_report: bool = False) -> dict:
    """Load `model` (a name for `study.models.resolve_model`) and evaluate it: the untrained encoder's
    reference row, with the trials' own evaluation settings (and, `also_report`, the report split too)."""
    from study.models import resolve_model

    encoder = Encoder.load(resolve_model(model))
    directory = resolve_data_dir(data_dir) if data_dir else resolve_data_dir()
    return evaluate_encoder(encoder, EvalConfig(**eval_config), directory, also_report=also_report)
