"""Per-language zero-shot retrieval robustness, the figures the study optimises and people quote.

For each language L paired with English (Tatoeba), on the sentences of one split S (study.evaluation.data.SPLITS:
selection, which the study's objective and ASHA see; report, which only the final evaluation sees; all),
over the candidate pool of that split, keys S.acc.L.<figure> (shown below without the S.):
  acc.L.l2e / acc.L.e2l      accuracy@1 of L->English and English->L (cosine of normalised embeddings)
  acc.L.clean                their mean
  acc.L.attacked_eps<e>      L->English with each L query attacked: PGD in the input-embedding space pushing
                             the query away from its true translation (untargeted), radius e (L2 per token)
  acc.L.noise_eps<e>         L->English with uniform random noise of radius e on the query (the draw the
                             attack of radius e starts from)
  acc.L.typo_p<p>            L->English with character noise (insert/delete/swap/substitute) at rate p
  acc.L.robust               mean attacked accuracy over the radii (the robustness area)
  acc.L.strong_eps<e>        (EvalConfig.strong_attack) L->English under the strong attack: PGD-20 with 3 random
                             restarts, on the margin between the nearest wrong English candidate and the true one
  acc.L.robust_strong        mean strong-attack accuracy over the radii
Attacks and noise leave [CLS], [SEP] and the "query: " prefix alone (EvalConfig.perturb_special).
  A sentence survives the strong attack only if it survives the cheap one too (the per-sentence minimum), so
  that the strong figure bounds the cheap one from below.
Group means (S.group.<low|high>.<figure>), the English source-language check (en.paraphrase_acc: paraphrase
retrieval accuracy@1 on STS-B test pairs with score >= 4 and MSRP test pairs labelled 1; en.stsb_spearman),
cross-lingual similarity on translated STS-B (S.xsts.<X>, S.xpara.<X> and their means: study.evaluation.crosslingual),
and the objectives, always of the evaluation's own split, the selection split in a study's trials
(objective.robust = S.group.low.robust, objective.clean = S.group.low.clean, objective.xsts = S.xsts.mean).

The radii are fixed (not taken from the trial), so every trial is measured with the same yardstick.
DEFAULT_RADII were calibrated on the untrained encoder: see docs/methods.md, "Evaluation radii".
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from study.encoder.embedding import Encoder, sentence_embedding
from study.errors import ConfigError
from study.evaluation import crosslingual
from study.evaluation.crosslingual import XSTS_LANGS
from study.evaluation.data import SPLITS, load_english_pairs, load_stsb, load_tatoeba, resolve_data_dir
from study.evaluation.languages import in_group, resolve_languages
from trainables.attacks import PGD, RestartPGD, RowStreams, random_in_ball

# Calibrated on the untrained encoder (Swahili, 200 sentences, PGD-3, L2 per token; word vectors have norm
# ~1.6): attacked L->English accuracy 0.84 / 0.72 / 0.51 / 0.26 at these radii against 0.88 clean, and 0.00
# at 0.5. Random noise of the same radii leaves it at 0.88 (noise needs radius ~2 to halve it).
DEFAULT_RADII = (0.02, 0.05, 0.1, 0.2)
DEFAULT_TYPO_RATES = (0.1,)
OBJECTIVES = ("robust", "clean", "pareto")  # what a study optimises (study.run --objective)
PARETO_METRICS = ("objective.clean", "objective.robust", "objective.xsts")  # what a pareto study maximises


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
    split: str = "selection"  # the Tatoeba sentences evaluated (study.evaluation.data.SPLITS); trials: selection
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
    # cross-lingual similarity (study.evaluation.crosslingual): translated STS-B pairs of these languages
    # ((): not measured), the first max_xsts_pairs of the split's (None: all of its 750)
    xsts_langs: tuple[str, ...] = XSTS_LANGS
    max_xsts_pairs: int | None = None

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
        unknown = sorted(set(self.xsts_langs) - set(XSTS_LANGS))
        if unknown:
            raise ConfigError(f"no translated STS-B for {', '.join(unknown)} (one of {', '.join(XSTS_LANGS)})")
        self.radii = tuple(float(r) for r in self.radii)
        self.typo_rates = tuple(float(p) for p in self.typo_rates)
        self.xsts_langs = tuple(self.xsts_langs)


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
def sentence_seed(seed: int, lang: str, how: str, eps: float, sentence: str) -> int:
    """The seed of one sentence's random draws for one perturbation (`embed_perturbed`'s how) and radius: it
    depends on the sentence and the figure only, not on the batch, the split or how many sentences are evaluated
    with it. "noise" draws what "attack" starts from: the noise figure is the cheap attack's random start."""
    draw = "attack" if how == "noise" else how
    return zlib.crc32(repr((seed, lang, draw, eps, sentence)).encode())


def margin_to_nearest_wrong(queries: torch.Tensor, candidates: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per query: max over wrong candidates of the cosine, minus the cosine to the gold candidate `gold[i]`
    (inputs normalised). > 0 exactly when a wrong candidate is retrieved."""
    sims = queries @ candidates.T
    gold_sim = sims.gather(1, gold[:, None]).squeeze(1)
    return sims.scatter(1, gold[:, None], float("-inf")).amax(dim=1) - gold_sim


def embed_perturbed(encoder: Encoder, token_ids, targets: torch.Tensor, eps: float, how: str,
                    steps: int, seeds: Sequence[int], perturb_special: bool = False,
                    restarts: int = 1, start_out: torch.Tensor | None = None) -> torch.Tensor:
    """Query embeddings with perturbed input embeddings; query i's true candidate is targets[i]. how =
    "attack": PGD-`steps` pushing each query away from its target (minus the cosine), the cheap attack;
    "strong": RestartPGD (`steps` steps, `restarts` random starts) on the margin between the nearest wrong
    candidate among all `targets` and the true one; "noise": uniform in the ball. Only the positions
    `Encoder.perturbable_mask` allows move, unless `perturb_special`. Query i's random draws come from its own
    stream seeded with seeds[i] (`sentence_seed`; `RowStreams`: drawn for the whole batch at once), so the result
    does not depend on the batching.
    `start_out` (how "attack"): filled with the embeddings at the attack's random start, which are the "noise"
    embeddings of the same seeds, computed by the attack's first step anyway."""
    model, out = encoder.model, torch.empty_like(targets)
    embed_layer = model.get_input_embeddings()
    for idx, input_ids, mask in encoder.batches(token_ids):
        gens = RowStreams([seeds[i] for i in idx], device=input_ids.device)
        movable = mask if perturb_special else encoder.perturbable_mask(input_ids, mask)
        with torch.no_grad():
            inputs = embed_layer(input_ids)

        def embedding(x, mask=mask):
            with encoder.autocast():
                return sentence_embedding(model, mask, inputs_embeds=x)

        if how == "noise":
            perturbed = inputs + random_in_ball(inputs, movable, eps, "l2", gens)
        elif how == "strong":
            candidates = targets.to(inputs.device).clone()  # a plain tensor: `Encoder.embed` returns inference ones
            gold = torch.as_tensor(idx, device=inputs.device)

            def margin(x, candidates=candidates, gold=gold):
                return margin_to_nearest_wrong(embedding(x), candidates, gold)

            perturbed = RestartPGD(eps, steps=steps, restarts=restarts, generator=gens)(inputs, movable, margin)
        else:
            target, at_start = targets[idx].to(inputs.device), []

            def away_from_target(x, target=target, at_start=at_start):
                queries = embedding(x)
                if not at_start:  # PGD's first evaluation is at its random start
                    at_start.append(queries.detach())
                return -(queries * target).sum()  # PGD ascends: minus the similarity to the true translation

            perturbed = PGD(eps, steps=steps, generator=gens)(inputs, movable, away_from_target)
        with torch.no_grad():
            out[idx] = embedding(perturbed).float().cpu()
        if start_out is not None:
            start_out[idx] = at_start[0].float().cpu() if at_start else out[idx]  # 0 steps: the start is the end
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


# ----------------------------------------------------------------------------- languages
PERTURBATIONS = {"attack": "attacked", "noise": "noise", "strong": "strong"}  # how -> figure name prefix
CHUNK_QUERIES = 4096  # queries evaluated together (one length-sorted pass per figure); bounds memory


@dataclass
class QuerySet:
    """One language's Tatoeba pairs on one split, tokenised once: the queries (the language's sentences) and
    their candidate pool (the English sides); query i translates candidate i."""

    lang: str
    split: str
    source: list[str]
    english: list[str]
    source_ids: list[list[int]]

    @classmethod
    def load(cls, encoder: Encoder, lang: str, split: str, config: EvalConfig, data_dir: Path | None) -> QuerySet:
        pairs = load_tatoeba(lang, data_dir, config.max_sentences, split)
        return cls(lang, split, list(pairs["source"]), list(pairs["english"]), encoder.tokenize(pairs["source"]))

    def seeds(self, config: EvalConfig, how: str, eps: float) -> list[int]:
        return [sentence_seed(config.seed, self.lang, how, eps, s) for s in self.source]

    def typos(self, config: EvalConfig, rate: float) -> list[str]:
        rng = random.Random(zlib.crc32(repr((config.seed, self.lang, "typo", rate)).encode()))
        return [add_typos(s, rate, rng) for s in self.source]


def figure_name(how: str, eps: float) -> str:
    return f"{PERTURBATIONS[how]}_eps{fmt(eps)}"


def perturbed_figures(config: EvalConfig) -> list[tuple[str, float, str]]:
    """(how, eps, figure name) of every perturbation the config measures, in the order they are reported."""
    kinds = ("attack", "noise", "strong") if config.strong_attack else ("attack", "noise")
    return [(how, eps, figure_name(how, eps)) for eps in config.radii for how in kinds]


def summarise(m: dict, config: EvalConfig, n: int) -> dict:
    """Add the means over the radii (robust, robust_strong) and the sentence count to a language's figures."""
    if config.radii:
        m["robust"] = float(np.mean([m[f"attacked_eps{fmt(e)}"] for e in config.radii]))
        if config.strong_attack:
            m["robust_strong"] = float(np.mean([m[f"strong_eps{fmt(e)}"] for e in config.radii]))
    m["n"] = n
    return m


def evaluate_query_sets(encoder: Encoder, sets: list[QuerySet], config: EvalConfig,
                        keep_hits: bool = False) -> list[tuple[dict, dict | None]]:
    """The figures (and, `keep_hits`, the per-sentence L->English hits) of each query set.

    All sets are encoded together, one length-sorted pass per figure: short sentences of every language share
    batches, so little compute goes to padding, and an English sentence shared by several sets is embedded
    once. Every query's figures are those of evaluating its set alone (draws are per sentence), up to float
    rounding. The strong attack's margin runs over a set's own pool, so it runs set by set."""
    spans, start = [], 0
    for qs in sets:
        spans.append(slice(start, start + len(qs.source)))
        start += len(qs.source)
    ids = [t for qs in sets for t in qs.source_ids]
    english = list(dict.fromkeys(e for qs in sets for e in qs.english))
    row = {e: i for i, e in enumerate(english)}
    english_emb = encoder.embed(english)
    pools = [english_emb[[row[e] for e in qs.english]] for qs in sets]
    gold = torch.cat(pools)  # query i's true candidate

    queries = {"clean": encoder.embed(token_ids=ids)}
    for eps in config.radii:
        seeds = [seed for qs in sets for seed in qs.seeds(config, "attack", eps)]
        noise = torch.empty_like(gold)  # the attack's random start: one draw, one pass, two figures
        queries[figure_name("attack", eps)] = embed_perturbed(encoder, ids, gold, eps, "attack", config.attack_steps,
                                                              seeds, config.perturb_special, start_out=noise)
        queries[figure_name("noise", eps)] = noise
        if config.strong_attack:  # scored below as surviving both attacks
            queries[figure_name("strong", eps)] = torch.cat([
                embed_perturbed(encoder, qs.source_ids, pool, eps, "strong", config.strong_steps,
                                qs.seeds(config, "strong", eps), config.perturb_special, config.strong_restarts)
                for qs, pool in zip(sets, pools)])
    for rate in config.typo_rates:
        queries[f"typo_p{fmt(rate)}"] = encoder.embed([t for qs in sets for t in qs.typos(config, rate)])

    out = []
    for qs, span, pool in zip(sets, spans, pools):
        clean = queries["clean"][span]
        per_sentence = {name: retrieval_hits(q[span], pool) for name, q in queries.items() if name != "clean"}
        for eps in config.radii if config.strong_attack else ():
            # the two attacks start apart: a sentence survives the strong one only if it survives both
            per_sentence[figure_name("strong", eps)] &= per_sentence[figure_name("attack", eps)]
        m = {"l2e": retrieval_accuracy(clean, pool), "e2l": retrieval_accuracy(pool, clean)}
        m["clean"] = (m["l2e"] + m["e2l"]) / 2
        m.update({name: hit.float().mean().item() for name, hit in per_sentence.items()})
        hits = None
        if keep_hits:
            hits = {"l2e": retrieval_hits(clean, pool).int().tolist()}
            hits.update({name: hit.int().tolist() for name, hit in per_sentence.items()
                         if not name.startswith(("noise", "typo"))})
        out.append((summarise(m, config, len(qs.source)), hits))
    return out


def evaluate_languages(encoder: Encoder, config: EvalConfig, data_dir: Path | None, splits: Sequence[str],
                       progress=None, hits: dict | None = None) -> dict[str, dict[str, dict]]:
    """{split: {lang: figures}} for the config's languages on each split, evaluated together in chunks of
    about CHUNK_QUERIES queries. `progress(lang, figures of splits[0])` after each chunk's languages; `hits`
    (a dict): filled with each language's per-sentence hits on splits[0]."""
    out: dict[str, dict[str, dict]] = {split: {} for split in splits}
    chunk: list[QuerySet] = []

    def run_chunk():
        for qs, (figures, sentence_hits) in zip(chunk, evaluate_query_sets(encoder, chunk, config, hits is not None)):
            out[qs.split][qs.lang] = figures
            if qs.split == splits[0]:
                if hits is not None:
                    hits[qs.lang] = sentence_hits
                if progress:
                    progress(qs.lang, figures)
        chunk.clear()

    for lang in config.langs:
        chunk += [QuerySet.load(encoder, lang, split, config, data_dir) for split in splits]
        if sum(len(qs.source) for qs in chunk) >= CHUNK_QUERIES:
            run_chunk()
    if chunk:
        run_chunk()
    return out


def english_check(encoder: Encoder, data_dir: Path | None, max_pairs: int | None = None) -> dict:
    """The task in the training language, on test pairs training never saw."""
    from scipy.stats import spearmanr

    pairs = load_english_pairs("test", data_dir)
    if max_pairs:
        pairs = pairs.select(range(min(max_pairs, len(pairs))))
    stsb = load_stsb("test", data_dir)
    if max_pairs:
        stsb = stsb.select(range(min(max_pairs, len(stsb))))
    columns = [pairs["anchor"], pairs["positive"], stsb["sentence1"], stsb["sentence2"]]
    # one length-sorted pass over the distinct sentences (the paraphrase pairs repeat STS-B's: 15% fewer)
    unique = list(dict.fromkeys(text for column in columns for text in column))
    embedded, row = encoder.embed(unique), {text: i for i, text in enumerate(unique)}
    anchors, positives, first, second = (embedded[[row[text] for text in column]] for column in columns)
    cos = (first * second).sum(1).numpy()
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


def crosslingual_metrics(encoder: Encoder, config: EvalConfig, data_dir: Path | None, splits: Sequence[str],
                         untrained: dict | None) -> tuple[dict, dict]:
    """(flat metrics, per-pair measurements of splits[0]) of the cross-lingual similarity on each split; with the
    untrained encoder's measurements of splits[0] (`untrained`), the constraint's figures and CONSTRAINT too."""
    measured = crosslingual.evaluate_crosslingual(encoder, config.xsts_langs, data_dir, splits, config.max_xsts_pairs)
    flat = {key: value for split in splits for key, value in crosslingual.flatten(measured[split], split).items()}
    flat["objective.xsts"] = flat[crosslingual.xsts_key(splits[0], "xsts")]
    if untrained is not None:
        flat.update(crosslingual.against_untrained(measured[splits[0]], untrained, splits[0]))
    return flat, measured[splits[0]]


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
                     also_report: bool = False, untrained_pairs: dict | None = None) -> dict:
    """All figures of one model on the config's split: {"languages": {lang: {...}}, "english": {...},
    "metrics": flat dict, "hits" and "pairs" (keep_hits: per-sentence Tatoeba hits, per-pair cross-lingual
    measurements)}. `also_report`: the report split's figures too, into "metrics" only (a trial's last epoch: the
    study's summary quotes them; its objective and ASHA never see them). `untrained_pairs`: the untrained
    encoder's cross-lingual measurements on the config's split (`crosslingual.untrained_measurements`), for the
    selection constraint."""
    was_training = encoder.model.training
    encoder.model.eval()
    splits = [config.split] + (["report"] if also_report and config.split != "report" else [])
    hits = {} if config.keep_hits else None
    figures = evaluate_languages(encoder, config, data_dir, splits, progress, hits)
    per_lang = figures[config.split]
    english = english_check(encoder, data_dir, config.max_english_pairs) if config.english_check else None
    metrics = flatten(per_lang, english, config.split)
    if "report" in splits[1:]:
        metrics.update(flatten(figures["report"], None, "report", objectives=False))
    pairs = None
    if config.xsts_langs:
        xsts, pairs = crosslingual_metrics(encoder, config, data_dir, splits, untrained_pairs)
        metrics.update(xsts)
    encoder.model.train(was_training)
    result = {"languages": per_lang, "english": english, "metrics": metrics}
    if config.keep_hits:
        result["hits"], result["pairs"] = hits, pairs
    return result


def evaluate_model(model: str, data_dir: str | None, eval_config: dict, also_report: bool = False) -> dict:
    """Load `model` (a name for `study.encoder.loading.resolve_model`) and evaluate it: the untrained encoder's
    reference row, with the trials' own evaluation settings (and, `also_report`, the report split too)."""
    from study.encoder.loading import resolve_model

    encoder = Encoder.load(resolve_model(model))
    directory = resolve_data_dir(data_dir) if data_dir else resolve_data_dir()
    return evaluate_encoder(encoder, EvalConfig(**eval_config), directory, also_report=also_report)
