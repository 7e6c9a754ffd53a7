"""`python -m study.bench evaluate`: a trial's evaluation, the study's path vs the per-language reference path."""

from __future__ import annotations

import statistics
import time

import torch

from study.benchmarks.common import sync


def add_arguments(parser) -> None:
    from study.encoder.loading import DEFAULT_MODEL

    parser.add_argument("--budget", choices=("smoke", "cpu", "gpu"), default="cpu", help="whose eval settings")
    parser.add_argument("--langs", help="comma-separated languages instead of the budget's")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads (default: the budget's cpus_per_trial, as a "
                                                    "trial has)")
    parser.add_argument("--device")
    parser.add_argument("--data-dir")
    parser.add_argument("--model", default=DEFAULT_MODEL)


def _reference_evaluation(encoder, config, data_dir, splits) -> dict[str, float]:
    """The evaluation before issue 15, kept as the reference: language by language, split by split, each
    figure its own pass over that language's sentences (batches padded within the language), the English side
    embedded per language. Same primitives, same per-sentence draws, as study.evaluation.robustness."""
    import random
    import zlib

    from study.evaluation.data import load_tatoeba
    from study.evaluation.robustness import (
        add_typos,
        embed_perturbed,
        english_check,
        flatten,
        fmt,
        perturbed_figures,
        retrieval_accuracy,
        sentence_seed,
        summarise,
    )

    metrics = {}
    for split in splits:
        per_lang = {}
        for lang in config.langs:
            pairs = load_tatoeba(lang, data_dir, config.max_sentences, split)
            source_ids = encoder.tokenize(pairs["source"])
            src, eng = encoder.embed(token_ids=source_ids), encoder.embed(pairs["english"])
            m = {"l2e": retrieval_accuracy(src, eng), "e2l": retrieval_accuracy(eng, src)}
            m["clean"] = (m["l2e"] + m["e2l"]) / 2
            for how, eps, name in perturbed_figures(config):
                seeds = [sentence_seed(config.seed, lang, how, eps, s) for s in pairs["source"]]
                steps = config.strong_steps if how == "strong" else config.attack_steps
                queries = embed_perturbed(encoder, source_ids, eng, eps, how, steps, seeds, config.perturb_special,
                                          config.strong_restarts)
                m[name] = retrieval_accuracy(queries, eng)
            for rate in config.typo_rates:
                rng = random.Random(zlib.crc32(repr((config.seed, lang, "typo", rate)).encode()))
                typo = encoder.embed([add_typos(s, rate, rng) for s in pairs["source"]])
                m[f"typo_p{fmt(rate)}"] = retrieval_accuracy(typo, eng)
            per_lang[lang] = summarise(m, config, len(pairs))
        first = split == splits[0]
        english = english_check(encoder, data_dir, config.max_english_pairs) if first and config.english_check else None
        metrics.update(flatten(per_lang, english, split, objectives=first))
    return metrics


def bench_evaluate(args) -> dict:
    from study.encoder.embedding import Encoder
    from study.encoder.loading import resolve_model
    from study.evaluation.data import resolve_data_dir
    from study.evaluation.robustness import EvalConfig, evaluate_encoder
    from study.orchestration.budgets import BUDGETS

    torch.set_num_threads(args.threads or max(1, int(BUDGETS[args.budget].cpus_per_trial)))  # as a trial has
    encoder = Encoder.load(resolve_model(args.model), device=args.device)
    # the Tatoeba evaluation, which both paths compute (the cross-lingual pairs are
    # study.evaluation.crosslingual's, one path)
    config = EvalConfig(**{**BUDGETS[args.budget].eval, **({"langs": args.langs.split(",")} if args.langs else {}),
                           "xsts_langs": ()})
    data_dir = resolve_data_dir(args.data_dir)
    splits = [config.split, "report"]  # a trial's last epoch: the selection split and the report split

    def reference():
        study_batches, encoder.max_tokens = encoder.max_tokens, 8192  # its batching before issue 15
        try:
            return _reference_evaluation(encoder, config, data_dir, splits)
        finally:
            encoder.max_tokens = study_batches

    runs = {"reference (per language, per figure)": reference,
            "study.evaluation.robustness.evaluate_encoder": lambda: evaluate_encoder(encoder, config, data_dir,
                                                                          also_report=True)["metrics"]}
    seconds: dict = {name: [] for name in runs}
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the figures compared
    for _ in range(args.rounds):
        for name, fn in runs.items():
            sync(encoder.device)
            start = time.perf_counter()
            fn()
            sync(encoder.device)
            seconds[name].append(time.perf_counter() - start)
    reference, ours = outputs.values()
    if reference.keys() != ours.keys():
        raise SystemExit(f"the paths report different figures: {sorted(reference.keys() ^ ours.keys())[:5]}")
    differ = {k: (reference[k], ours[k]) for k in reference if reference[k] != ours[k]}
    print(f"device {encoder.device}  threads {torch.get_num_threads()}  budget {args.budget}: {len(config.langs)} "
          f"languages x {config.max_sentences} sentences x {len(splits)} splits, radii {list(config.radii)}, "
          f"PGD-{config.attack_steps}, typo {list(config.typo_rates)}, English check {config.english_check}; "
          f"{args.rounds} rounds")
    mean = {name: statistics.mean(s) for name, s in seconds.items()}
    for name in runs:
        print(f"{name:<40} {mean[name]:>8.2f} s  (+-{statistics.stdev(seconds[name]) if args.rounds > 1 else 0:.2f})")
    for key, (a, b) in sorted(differ.items())[:10]:
        print(f"  differs: {key}  reference {a:.6f}  new {b:.6f}")
    worst = max((abs(a - b) for a, b in differ.values()), default=0.0)
    ref_name, our_name = runs
    print(f"speed-up {mean[ref_name] / mean[our_name]:.2f}x over the reference path; figures identical: "
          f"{len(reference) - len(differ)} of {len(reference)} (max |difference| {worst:.6f})")
    return {"device": str(encoder.device), "budget": args.budget, "langs": list(config.langs),
            "sentences": config.max_sentences, "radii": list(config.radii), "attack_steps": config.attack_steps,
            "rounds": args.rounds, "reference_seconds": mean[ref_name], "study_seconds": mean[our_name],
            "speedup": mean[ref_name] / mean[our_name], "figures": len(reference),
            "figures_identical": len(reference) - len(differ), "max_difference": worst}
