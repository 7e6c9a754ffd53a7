"""Benchmarks: figures and ratios measured in one run, on the same inputs, on this machine.

    python -m study.bench train-step   plain fine-tuning vs hybrid batches r in {0, 0.25, 0.5, 1} (PGD, K=3)
    python -m study.bench encode       our evaluation encoder path vs a plain transformers loop and
                                       SentenceTransformer.encode (the same model, as study.export writes it)
    python -m study.bench evaluate     a trial's evaluation: the study's path vs the per-language reference path
    python -m study.bench study        N tiny real trials as a Ray Tune study (on a running Ray, and starting
                                       its own) vs the same trials by hand
    python -m study.bench driver       the study's Ray Tune driver: time per reported result, 100 vs 1,000 trials
    python -m study.bench gpu          every GPU figure in one run (study.bench_gpu): encoding fp32 and bf16, peak
                                       memory, hybrid steps, evaluation, bf16 agreement, a 4-trial study on one
                                       GPU, a trial's time; JSON and a table (--device cpu: the same, tiny)

Timings are means over repeated steps, the configurations interleaved round by round so that a machine
that slows down or speeds up during the run affects all of them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch

from study.errors import UsageError, cli_main


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_mean_times(runs: dict, rounds: int, device) -> tuple[dict, dict]:
    """(outputs of a warm-up call, seconds of `rounds` calls) of each function, interleaved round by round."""
    outputs = {name: fn() for name, fn in runs.items()}
    seconds: dict = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    return outputs, {name: statistics.mean(s) for name, s in seconds.items()}


# ----------------------------------------------------------------------------- train-step
def bench_train_step(args) -> None:
    from trainables.config import TrialConfig
    from trainables.hybrid import adversarial_count, hybrid_step, plain_step
    from trainables.trainable import HybridTrainer

    ratios = (0.0, 0.25, 0.5, 1.0)
    trainer = HybridTrainer(TrialConfig(model=args.model, method="pgd", attack_steps=args.steps, epsilon=0.5,
                                        batch_size=args.batch_size, max_train_pairs=args.batch_size * args.batches,
                                        max_seq_len=args.max_len, lr=1e-6, warmup_ratio=0.0,
                                        eval={"xsts_langs": ()}))  # no evaluation here
    batches = list(trainer.batches())
    device, n, k = trainer.encoder.device, args.batch_size, args.steps
    cfg = trainer.cfg

    def step(ratio: float | None, batch) -> None:
        """One optimizer step; ratio None = plain fine-tuning (no hybrid code at all)."""
        trainer.optimizer.zero_grad(set_to_none=True)
        if ratio is None:
            plain_step(trainer.model, batch, trainer.loss_fn, trainer.encoder.pad_id, trainer.encoder.autocast)
        else:
            hybrid_step(trainer.model, batch, trainer.loss_fn, attack=trainer.attack, ratio=ratio,
                        generator=trainer.selection_rng, pad_id=trainer.encoder.pad_id, perturb=cfg.perturb,
                        autocast=trainer.encoder.autocast)
        torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
        trainer.optimizer.step()

    configs = [None, *ratios]
    times: dict = {c: [] for c in configs}
    for c in configs:  # warm-up: allocator, kernels, thread pools
        step(c, batches[0])
    for rnd in range(args.rounds):
        for c in configs:
            batch = batches[rnd % len(batches)]
            _sync(device)
            start = time.perf_counter()
            step(c, batch)
            _sync(device)
            times[c].append(time.perf_counter() - start)

    mean = {c: statistics.mean(t) for c, t in times.items()}
    print(f"device {device}  threads {torch.get_num_threads()}  {n} pairs/batch  max {args.max_len} tokens  "
          f"PGD K={k}  {args.rounds} steps each ({len(batches)} batches of real English pairs, same for all)")
    print(f"{'configuration':<22} {'ms/step':>9} {'+-sd':>7} {'vs plain':>9} {'predicted':>10} {'sentences':>10}")
    for c in configs:
        a = 0 if c is None else adversarial_count(c, n)
        passes = 2 * n + k * a  # sentence passes through the encoder, see trainables/hybrid.py
        label = "plain fine-tuning" if c is None else f"hybrid r={c:g}"
        print(f"{label:<22} {1000 * mean[c]:>9.1f} {1000 * statistics.stdev(times[c]):>7.1f} "
              f"{mean[c] / mean[None]:>9.3f} {passes / (2 * n):>10.3f} {passes:>10}")
    marginal = (mean[0.25] - mean[0.0]) / (mean[1.0] - mean[0.0])
    print(f"r=0 overhead vs plain: {mean[0.0] / mean[None]:.3f}x;  "
          f"marginal attack cost (t(0.25) - t(0)) / (t(1) - t(0)) = {marginal:.3f}  (0.25 = proportional to r)")


# ----------------------------------------------------------------------------- encode
def _sentences(data_dir, langs: list[str], per_lang: int) -> list[str]:
    from study.evaluation.data import load_tatoeba

    out: list[str] = []
    for lang in langs:
        pairs = load_tatoeba(lang, data_dir, per_lang)
        out += list(pairs["source"]) + list(pairs["english"])
    return out


def _gemm_rate(device: torch.device, hidden: int, intermediate: int, rows: int = 1024,
               dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an encoder's biggest matrix product ([rows, hidden] @ [hidden, intermediate]) on this device:
    what its linear layers could reach at best."""
    a = torch.randn(rows, hidden, device=device, dtype=dtype)
    b = torch.randn(hidden, intermediate, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start, repeats = time.perf_counter(), 50
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * rows * hidden * intermediate * repeats / (time.perf_counter() - start)


@torch.inference_mode()
def plain_loop_embed(encoder, sentences: list[str], batch_size: int) -> torch.Tensor:
    """What one writes first: file order, fixed batches padded to their longest sentence (the encoder's model,
    tokenizer and autocast)."""
    import torch.nn.functional as F

    from study.encoder.embedding import mean_pool

    out = []
    for start in range(0, len(sentences), batch_size):
        batch = encoder.tokenizer([encoder.prefix + s for s in sentences[start : start + batch_size]],
                                  padding=True, truncation=True, max_length=encoder.max_length,
                                  return_tensors="pt").to(encoder.device)
        with encoder.autocast():
            hidden = encoder.model(**batch).last_hidden_state
        out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1).cpu())
    return torch.cat(out)


def bench_encode(args) -> None:
    from study.encoder.embedding import Encoder, length_sorted_batches
    from study.encoder.loading import resolve_model
    from study.evaluation.data import resolve_data_dir

    encoder = Encoder.load(resolve_model(args.model), device=args.device)
    model, device = encoder.model, encoder.device
    sentences = _sentences(resolve_data_dir(args.data_dir), args.langs.split(","), args.per_lang)

    def plain_loop() -> torch.Tensor:
        return plain_loop_embed(encoder, sentences, args.batch_size)

    def ours() -> torch.Tensor:
        return encoder.embed(sentences)

    from study.analysis.exporting import sentence_model

    # the same model as sentence-transformers builds it (study.export's model: mean pooling, normalisation,
    # "query: " prompt); its encode sorts by length too, but in fixed-size batches and without autocast
    st_model = sentence_model(resolve_model(args.model), max_seq_length=encoder.max_length, device=str(device))

    def sentence_transformers() -> torch.Tensor:
        return st_model.encode(sentences, batch_size=args.batch_size, convert_to_tensor=True).float().cpu()

    runs = {"plain transformers loop": plain_loop, "SentenceTransformer.encode": sentence_transformers,
            "study.encoder.embedding.Encoder": ours}
    outputs, mean_seconds = interleaved_mean_times(runs, args.rounds, device)
    agreement = min((outputs[name] * outputs["study.encoder.embedding.Encoder"]).sum(1).min().item() for name in runs)
    print(f"device {device}  threads {torch.get_num_threads()}  {len(sentences)} Tatoeba sentences "
          f"({args.langs}, both sides), plain batch {args.batch_size}, {args.rounds} rounds")
    rate = {name: len(sentences) / s for name, s in mean_seconds.items()}
    for name in runs:
        print(f"{name:<26} {rate[name]:>9.1f} sentences/s   ({mean_seconds[name]:.2f} s a pass)")
    # where the speed-up comes from, and how much more there is: the padding each path computes, and the
    # linear layers' FLOP rate (on the tokens the Encoder computes) against this device's matrix-product rate
    ids = encoder.tokenize(sentences)
    real = sum(len(t) for t in ids)
    plain_padded = sum(len(chunk) * max(map(len, chunk))
                       for chunk in (ids[i : i + args.batch_size] for i in range(0, len(ids), args.batch_size)))
    our_padded = sum(len(b) * max(len(ids[i]) for i in b)
                     for b in length_sorted_batches([len(t) for t in ids], encoder.max_tokens, encoder.max_batch))
    cfg = model.config
    linear_flop = 2 * our_padded * cfg.num_hidden_layers * (4 * cfg.hidden_size**2
                                                             + 2 * cfg.hidden_size * cfg.intermediate_size)
    linear_rate = linear_flop / mean_seconds["study.encoder.embedding.Encoder"]
    gemm_rate = _gemm_rate(device, cfg.hidden_size, cfg.intermediate_size)
    print(f"padded tokens per real token: plain loop {plain_padded / real:.2f}, Encoder {our_padded / real:.2f}; "
          f"the Encoder's linear layers at {linear_rate / 1e9:.0f} GFLOP/s against {gemm_rate / 1e9:.0f} "
          f"for their largest matrix product alone")
    print(f"speed-up {rate['study.encoder.embedding.Encoder'] / rate['plain transformers loop']:.2f}x over the plain loop, "
          f"{rate['study.encoder.embedding.Encoder'] / rate['SentenceTransformer.encode']:.2f}x over SentenceTransformer.encode;"
          f"  min cosine between the paths' embeddings {agreement:.6f}")


# ----------------------------------------------------------------------------- evaluate
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
    # the Tatoeba evaluation, which both paths compute (the cross-lingual pairs are study.evaluation.crosslingual's, one path)
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
            _sync(encoder.device)
            start = time.perf_counter()
            fn()
            _sync(encoder.device)
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


# ----------------------------------------------------------------------------- study
def trials_by_hand(trials: list, cpus: int) -> dict:
    """The trials' work without Tune: each (config, epochs) trained and evaluated as its Tune trial did, back to
    back, in this process. Returns the seconds of each trial and of all training and all evaluation, and the
    process's involuntary context switches meanwhile."""
    import resource

    from study.evaluation.robustness import evaluate_encoder
    from trainables.config import TrialConfig
    from trainables.trainable import HybridTrainer

    torch.set_num_threads(cpus)
    measured = {"trials": [], "train": 0.0, "eval": 0.0}
    preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    for config, epochs in trials:
        trial_start = time.perf_counter()
        trainer = HybridTrainer(TrialConfig.from_dict(config))
        while trainer.epoch < epochs:
            measured["train"] += trainer.train_epoch()["train.seconds"]
            if trainer.cfg.eval_every_epoch or trainer.epoch == trainer.cfg.epochs:
                eval_start = time.perf_counter()
                evaluate_encoder(trainer.encoder, trainer.cfg.eval, trainer.data_dir,
                                 also_report=trainer.epoch == trainer.cfg.epochs,
                                 untrained_pairs=trainer.untrained_pairs)
                measured["eval"] += time.perf_counter() - eval_start
        measured["trials"].append(time.perf_counter() - trial_start)
    # how often the kernel took a CPU from this process's threads for another process
    measured["preempted"] = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - preempted
    return measured


def _tune_study(args, settings: dict, address: str | None = None) -> dict:
    """One Ray Tune study of the trials, as `study.run` runs it: Ray started (or, with `address`, joined; the
    MLflow store opened meanwhile), the parent run, the study's Tuner, Ray shut down (or left). Seconds, and
    the trials' configurations."""
    import shutil
    import tempfile
    from pathlib import Path

    import ray

    from study.orchestration import tracking
    from study.orchestration.raycluster import start_ray_alongside
    from study.orchestration.tuning import study_tuner

    work = Path(tempfile.mkdtemp(prefix="bench-study-", dir=args.work_dir))
    start = time.perf_counter()
    uri = tracking.default_tracking_uri(work)
    client, experiment = start_ray_alongside(lambda: tracking.open_experiment(uri, work), address)
    ray_start = time.perf_counter() - start
    parent = tracking.start_parent_run(client, experiment, name="bench study", params={"trials": args.trials},
                                       tags={"bench": "study"})
    driver_cpu = time.process_time()
    grid = study_tuner(settings, work, tracking.ChildRunLogger(uri, experiment, parent)).fit()
    driver_cpu = time.process_time() - driver_cpu
    client.set_terminated(parent, status="FINISHED")
    stop = time.perf_counter()
    ray.shutdown()
    total = time.perf_counter() - start
    done = [r for r in grid if not r.error]
    if len(done) != args.trials:
        raise SystemExit(f"{args.trials - len(done)} of {args.trials} Tune trials failed; see {work}")
    shutil.rmtree(work, ignore_errors=True)
    # each trial's own time in its worker process, and what the trials report of training and evaluation
    return {"total": total, "ray_start": ray_start, "ray_stop": start + total - stop, "driver_cpu": driver_cpu,
            "trials": [r.metrics["time_total_s"] for r in done],
            **{part: sum(r.metrics_dataframe[f"{part}.seconds"].sum() for r in done) for part in ("train", "eval")},
            "configs": [(r.config, r.metrics["training_iteration"]) for r in done]}


@contextlib.contextmanager
def _idle_ray_head(cpus: int):
    """A Ray head started with `ray start` as a cluster's is, left 10 s to settle, stopped on exit; its address.
    Neither its start nor its stop is inside a timing."""
    import shutil
    import tempfile

    from study.orchestration.raycluster import start_ray_head, stop_ray_processes_under

    temp = tempfile.mkdtemp(prefix="rayb-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        address = start_ray_head(temp, cpus)
        time.sleep(10)
        yield address
    finally:
        stop_ray_processes_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def _study_by_hand(configs: list, cpus: int) -> dict:
    """The same trials by hand (`trials_by_hand`) in a fresh Python process: its start and imports count."""
    import json
    import subprocess

    script = ("import json, sys; from study.bench import trials_by_hand; "
              "print(json.dumps(trials_by_hand(*json.loads(sys.argv[1]))))")
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", script, json.dumps([configs, cpus])],
                             capture_output=True, text=True)
    total = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"the trials by hand failed:\n{process.stderr[-2000:]}")
    return {"total": total, **json.loads(process.stdout.strip().splitlines()[-1])}


def bench_study(args) -> None:
    """N tiny real trials as a Ray Tune study (the study's own Tuner: Optuna, ASHA, checkpoints, the MLflow
    callback, one trial at a time on all the CPUs) against the same trials, with the same configurations and
    epochs, trained and evaluated by hand back to back in one fresh process. The study runs twice: joining a
    Ray that was already up (a cluster's case), and starting and stopping its own local Ray (a laptop's). The
    trials by hand also run beside an idle Ray head: what Ray's own processes cost a trial just by being on
    the machine (a cluster's nodes run them whether or not a study uses Tune), apart from what Tune adds.
    Both sides start Python processes that import torch and load the model (Tune's worker, the by-hand
    process); neither starts from a warm one. Rounds alternate the order: on a machine whose speed drifts by
    10% within minutes, one pass of each measures the drift as much as the overhead."""
    import os
    import secrets
    import tempfile
    from pathlib import Path

    if "RAY_AUTH_MODE" not in os.environ:  # one private token for both Rays (a joining driver must be told,
        # before Ray is imported: it reads the mode then)
        token = Path(tempfile.mkdtemp(prefix="bench-token-")) / "auth_token"
        token.write_text(secrets.token_hex(32))
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))

    from study.orchestration.settings import parse_args, validate
    from trainables.config import TrialConfig
    from trainables.trainable import HybridTrainer

    settings = validate(parse_args(["--budget", args.budget, "--num-samples", str(args.trials),
                                    "--max-concurrent", "1", "--cpus-per-trial", str(args.cpus)]))
    HybridTrainer(TrialConfig(model=settings["model"], max_train_pairs=8))  # model files and data in the page cache

    runs: dict[str, list[dict]] = {"running": [], "local": [], "beside": [], "hand": []}
    configs = None
    for round_ in range(args.rounds):
        order = ("local", "running", "beside", "hand")  # the by-hand sides need the configurations Tune chose
        for side in order if round_ % 2 == 0 else order[::-1]:
            if side == "hand":
                runs["hand"].append(_study_by_hand(configs, args.cpus))
                continue
            if side == "beside":
                with _idle_ray_head(args.cpus):
                    runs["beside"].append(_study_by_hand(configs, args.cpus))
                continue
            if side == "running":
                with _idle_ray_head(args.cpus) as address:
                    run = _tune_study(args, settings, address)
            else:
                run = _tune_study(args, settings)
            configs = configs or run["configs"]
            if run["configs"] != configs:
                print("note: Tune proposed other configurations than in its first run", file=sys.stderr)
            runs[side].append(run)
        last = {side: sides[-1]["total"] for side, sides in runs.items()}
        print(f"round {round_ + 1}: by hand {last['hand']:.1f} s, beside an idle Ray {last['beside']:.1f} s, Tune on "
              f"a running Ray {last['running']:.1f} s ({last['running'] / last['hand']:.2f}x), Tune starting Ray "
              f"{last['local']:.1f} s ({last['local'] / last['hand']:.2f}x)", file=sys.stderr)

    def mean(side, key):
        return statistics.mean(run[key] if not isinstance(run[key], list) else sum(run[key]) for run in runs[side])

    epochs = sum(e for _, e in configs)
    print(f"{args.trials} trials ({epochs} epochs in all; budget {args.budget}: {settings['max_train_pairs']} "
          f"training pairs, {len(settings['eval']['langs'])} languages x {settings['eval']['max_sentences']} "
          f"sentences), one at a time, {args.cpus} CPUs; means over {args.rounds} rounds")
    for side, label in (("hand", "by hand, one process"), ("beside", "the same, beside idle Ray")):
        total, inside = mean(side, "total"), mean(side, "trials")
        print(f"{label:<25} {total:>8.1f} s  (Python start and imports {total - inside:.1f} s, then "
              f"{inside / args.trials:.1f} s a trial; training {mean(side, 'train'):.1f} s, evaluation "
              f"{mean(side, 'eval'):.1f} s; preempted {mean(side, 'preempted'):,.0f} times)")
    for side, label, ray_words in (("running", "Tune on a running Ray", "joining Ray and leaving it"),
                                   ("local", "Tune starting Ray", "starting Ray (the MLflow store opened meanwhile) "
                                                                  "and its shutdown")):
        total, inside = mean(side, "total"), mean(side, "trials")
        ray_s = mean(side, "ray_start") + mean(side, "ray_stop")
        print(f"{label:<25} {total:>8.1f} s  ({ray_words} {ray_s:.1f} s; inside the trials {inside:.1f} s: "
              f"training {mean(side, 'train'):.1f} s, evaluation {mean(side, 'eval'):.1f} s; the rest "
              f"{total - ray_s - inside:.1f} s: the worker's start, Tune's start and end, between trials; "
              f"the driver's CPU {mean(side, 'driver_cpu'):.1f} s)")
    for n in range(args.rounds):
        print(f"  round {n + 1}: a trial by hand {', '.join(f'{t:.1f}' for t in runs['hand'][n]['trials'])} s; "
              f"beside an idle Ray {', '.join(f'{t:.1f}' for t in runs['beside'][n]['trials'])} s; "
              f"on a running Ray {', '.join(f'{t:.1f}' for t in runs['running'][n]['trials'])} s; "
              f"starting Ray {', '.join(f'{t:.1f}' for t in runs['local'][n]['trials'])} s")
    hand_s = mean("hand", "total")
    running, local = mean("running", "total") / hand_s, mean("local", "total") / hand_s
    by_round = ", ".join(f"{r['total'] / h['total']:.2f}x/{lo['total'] / h['total']:.2f}x"
                         for r, lo, h in zip(runs["running"], runs["local"], runs["hand"]))
    per_trial = (mean("running", "total") - hand_s) / args.trials
    print(f"overhead {running:.2f}x the trials run by hand, as a study on a running Ray ({per_trial:+.1f} s a trial); "
          f"{local:.2f}x starting and stopping a local Ray; by round (running/local) {by_round}; Tune's own part, "
          f"on a running Ray against the trials by hand beside an idle one, "
          f"{mean('running', 'total') / mean('beside', 'total'):.2f}x")


# ----------------------------------------------------------------------------- driver
# What the driver of a study does per reported result: Optuna's searcher (study.orchestration.tuning.make_searcher), ASHA
# (make_scheduler), the MLflow callback (study.orchestration.tracking.ChildRunLogger), the progress table, checkpoint
# bookkeeping and Tune's experiment snapshots. The trials do no training: each reports, per epoch, a metric dict
# with exactly the keys `study.evaluation.robustness.flatten` gives for the languages, packed by `tune_result` as a trial
# packs them, plus the trainer's, and a tiny checkpoint, pruned as a trial prunes (trainables.storage). The
# Tuner is built like `study.orchestration.tuning.study_tuner`, from the same pieces. --legacy measures the set-up before
# issue 13: per-language figures as numeric fields, Tune's retention (num_to_keep=1, a forced experiment
# snapshot per checkpoint), and Tune's CSV/JSON/TensorBoard loggers.
TRAINER_KEYS = ("train.loss", "train.adversarial_share", "train.seconds", "epoch", "eval.seconds", "node_id")
# the figures the fake trials scale by their quality (headline accuracies and means); en.* are left alone
_SCALED = ("selection.", "objective.")


def _fake_evaluation(langs: list[str], rng) -> dict[str, float]:
    """A realistic flat metric dict: random but valid per-language figures (the keys of
    `study.evaluation.robustness.evaluate_query_sets`, with the default radii and typo rate, means consistent), flattened by
    `study.evaluation.robustness.flatten` with the English check, for the selection and (as a trial's last epoch reports
    them) the report split."""
    from study.evaluation.robustness import EvalConfig, flatten, fmt

    cfg = EvalConfig(langs=langs)
    keep = {0.02: 0.95, 0.05: 0.82, 0.1: 0.58, 0.2: 0.3}  # attacked / clean L->English of the untrained encoder
    per_lang = {}
    for lang in langs:
        l2e, e2l = rng.uniform(0.3, 0.97), rng.uniform(0.3, 0.97)
        fig = {"l2e": l2e, "e2l": e2l, "clean": (l2e + e2l) / 2}
        for eps in cfg.radii:
            fig[f"attacked_eps{fmt(eps)}"] = l2e * keep.get(eps, 0.5) * rng.uniform(0.9, 1.0)
            fig[f"noise_eps{fmt(eps)}"] = l2e * rng.uniform(0.97, 1.0)
        for rate in cfg.typo_rates:
            fig[f"typo_p{fmt(rate)}"] = l2e * rng.uniform(0.6, 0.9)
        fig["robust"] = statistics.mean(fig[f"attacked_eps{fmt(eps)}"] for eps in cfg.radii)
        fig["n"] = rng.randint(200, 1000)
        per_lang[lang] = fig
    english = {"paraphrase_acc": rng.uniform(0.8, 0.95), "stsb_spearman": rng.uniform(0.75, 0.85)}
    return {**flatten(per_lang, english, "selection"), **flatten(per_lang, None, "report", objectives=False)}


def _fake_trainable(templates: list[dict]):
    """The trial function: per epoch, one of `templates` scaled by a quality that depends on r and epsilon (so
    TPE and ASHA see a signal), the trainer's keys, a tiny checkpoint, `tune.report`. Built as a closure so Ray
    ships it by value: the trial processes import neither torch nor this module."""

    scaled = _SCALED
    legacy = "per_language" not in templates[0]

    def fake_trial(config: dict) -> None:
        import json
        import math
        import os
        import random
        import tempfile
        import time

        import ray
        from ray import tune

        storage = tune.get_context().get_storage()
        rng = random.Random(repr((config["ratio"], config["epsilon"], config["seed"])))
        template = templates[rng.randrange(len(templates))]
        quality = max(0.2, 1 - 0.4 * abs(config["ratio"] - 0.3)
                      - 0.1 * abs(math.log10(config["epsilon"]) + 1) - 0.1 * rng.random())
        epoch, checkpoint = 0, tune.get_checkpoint()
        if checkpoint:  # a restarted trial continues after its last epoch, as the real one does
            with checkpoint.as_directory() as directory:
                with open(os.path.join(directory, "state.json")) as f:
                    epoch = json.load(f)["epoch"]
        node = ray.get_runtime_context().get_node_id()
        while epoch < config["epochs"]:
            epoch += 1
            factor = quality * min(1.0, 0.9 + 0.05 * epoch)
            metrics = {k: v * factor if k.startswith(scaled) else v for k, v in template.items()}
            metrics.update({"train.loss": 2.0 / (epoch + quality), "train.adversarial_share": config["ratio"],
                            "train.seconds": 0.0, "epoch": epoch, "eval.seconds": 0.0, "node_id": node})
            with tempfile.TemporaryDirectory() as directory:
                with open(os.path.join(directory, "state.json"), "w") as f:
                    json.dump({"epoch": epoch, "time": time.time()}, f)
                if not legacy:
                    from trainables.storage import CheckpointRetention

                    CheckpointRetention(storage).make_room()
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    return fake_trial


def _driver_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _result_clock(label: str, every: int):
    """A Tune callback (the run's last) that notes when the driver handed each result to the callbacks, and
    every `every` results says on stderr how the time per result goes as trials accumulate."""
    from ray.tune import Callback

    class ResultClock(Callback):
        def __init__(self):
            self.times: list[float] = []
            self.mark = (time.perf_counter(), _driver_cpu())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            now = time.perf_counter()
            self.times.append(now)
            if every and len(self.times) % every == 0:
                cpu = _driver_cpu()
                print(f"[bench driver] {label}: {len(trials)} trials, {len(self.times)} results, last {every}: "
                      f"{1000 * (now - self.mark[0]) / every:.1f} ms/result, driver CPU "
                      f"{1000 * (cpu - self.mark[1]) / every:.1f} ms/result", file=sys.stderr, flush=True)
                self.mark = (now, cpu)

    return ResultClock()


# (label, file the function is in, function names): what the profile attributes the driver's time to. Nested
# entries (two leading spaces) are part of the entry above them.
_COMPONENTS = (
    ("Tune step loop (TuneController.step)", "ray/tune/execution/tune_controller.py", {"step"}),
    ("experiment snapshots (TuneController.checkpoint)", "ray/tune/execution/tune_controller.py", {"checkpoint"}),
    ("  writing the snapshot (save_to_dir)", "ray/tune/execution/tune_controller.py", {"save_to_dir"}),
    ("    searcher state pickled (save_to_dir)", "ray/tune/search/search_generator.py", {"save_to_dir"}),
    ("    trials' JSON state (get_json_state)", "ray/tune/experiment/trial.py", {"get_json_state"}),
    ("  waiting for the previous sync", "ray/train/_internal/syncer.py", {"wait"}),
    ("searcher (ConcurrencyLimiter: Optuna TPE)", "ray/tune/search/concurrency_limiter.py",
     {"suggest", "on_trial_complete", "on_trial_result"}),
    ("scheduler (ASHA)", "ray/tune/schedulers/async_hyperband.py",
     {"on_trial_add", "on_trial_result", "on_trial_complete", "on_trial_remove", "choose_trial_to_run"}),
    ("MLflow callback (ChildRunLogger)", "study/orchestration/tracking.py",
     {"on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"}),
    ("Tune's CSV logger", "ray/tune/logger/csv.py", {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("Tune's JSON logger", "ray/tune/logger/json.py", {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("Tune's TensorBoard logger", "ray/tune/logger/tensorboardx.py",
     {"log_trial_start", "log_trial_result", "log_trial_end"}),
    ("progress table (_report_progress)", "ray/tune/tune.py", {"_report_progress"}),
)


def _profile_summary(profile, results: int, top: int) -> list[str]:
    import pstats

    stats = pstats.Stats(profile)
    lines = [f"    {'component (cProfile, main thread)':<50} {'calls':>8} {'s':>8} {'ms/result':>10}"]
    for label, path, names in _COMPONENTS:
        calls = seconds = 0.0
        for (filename, _, name), (_, ncalls, _, cumtime, _) in stats.stats.items():
            if name in names and filename.endswith(path):
                calls, seconds = calls + ncalls, seconds + cumtime
        lines.append(f"    {label:<50} {calls:>8.0f} {seconds:>8.1f} {1000 * seconds / max(results, 1):>10.2f}")
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
        lines.append(f"    top {top} by {title}:")
        entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3], reverse=True)
        for (filename, line, name), (_, ncalls, tottime, cumtime, _) in entries[:top]:
            where = filename.split("site-packages/")[-1].split("/work/main/")[-1]
            lines.append(f"      {tottime:>7.1f} own {cumtime:>7.1f} cum {ncalls:>8} calls  {where}:{line}({name})")
    return lines


def _driver_run(args, trials: int, backend: str, uri: str | None, templates: list[dict]) -> dict:
    """One Tune run of `trials` trials on a fresh storage and (embedded store) a fresh MLflow store."""
    import cProfile
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from ray import tune

    from search_spaces import load_space
    from study.encoder.loading import DEFAULT_MODEL
    from study.evaluation.robustness import objective_metric
    from study.orchestration import tracking
    from study.orchestration.studydir import ray_storage
    from study.orchestration.tuning import (
        STUDY_EXPERIMENT,
        _run_config,
        make_scheduler,
        make_searcher,
        progress_columns,
        trial_param_space,
    )

    work = Path(tempfile.mkdtemp(prefix=f"bench-driver-{backend}-{trials}-", dir=args.work_dir))
    settings = dict(space="hybrid_ratio", objective="robust", seed=args.seed, num_samples=trials,
                    epochs=args.epochs, max_concurrent=args.max_concurrent, model=DEFAULT_MODEL, data_dir=None,
                    eval={"langs": args.lang_codes, "seed": args.seed}, batch_size=32, max_train_pairs=None,
                    train={}, method=None, storage_path=None)
    space = load_space(settings["space"])
    uri = uri or tracking.default_tracking_uri(work)
    client, experiment = tracking.open_experiment(uri, work)
    parent = tracking.start_parent_run(client, experiment, name=f"bench driver {trials} trials {backend}",
                                       params={"trials": trials, "epochs": args.epochs, "langs": len(args.lang_codes),
                                               "legacy": args.legacy}, tags={"bench": "driver"})
    clock = _result_clock(f"{backend} {trials}", args.every)
    scheduler = make_scheduler(settings, space)
    tune_config = tune.TuneConfig(metric=objective_metric("robust"), mode="max",
                                  search_alg=make_searcher(settings, space, scheduler), scheduler=scheduler,
                                  num_samples=trials, reuse_actors=args.reuse_actors,
                                  trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}")
    callback = tracking.ChildRunLogger(uri, experiment, parent)
    # Tune reads this when the Tuner is built: the study's JSON logger only, or (legacy) Tune's three loggers
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0" if args.legacy else "1"
    run_config = _run_config(STUDY_EXPERIMENT, ray_storage(settings, work), callback,
                             progress_columns([*space.space, "method"]), max_failures=2)
    if args.legacy:
        run_config.callbacks = [callback]
        run_config.checkpoint_config = tune.CheckpointConfig(num_to_keep=1)
    run_config.callbacks.append(clock)
    if args.quiet:
        run_config.verbose = 0
    trainable = tune.with_resources(_fake_trainable(templates), {"cpu": args.cpus_per_trial})
    tuner = tune.Tuner(trainable, param_space=trial_param_space(settings, space), tune_config=tune_config,
                       run_config=run_config)

    profile = cProfile.Profile() if args.profile else None
    cpu_start = _driver_cpu()
    start = time.perf_counter()
    if profile:
        profile.enable()
    grid = tuner.fit()
    if profile:
        profile.disable()
    wall = time.perf_counter() - start
    cpu = _driver_cpu() - cpu_start
    client.set_terminated(parent, status="FINISHED")

    disk = sum(f.stat().st_size for f in (work / "ray").rglob("*") if f.is_file())
    times = clock.times
    results = len(times)
    quarters = [times[round(i * (results - 1) / 4)] for i in range(5)] if results > 4 else []
    run = dict(backend=backend, trials=trials, results=results, errors=sum(1 for r in grid if r.error), wall=wall,
               ms=1000 * wall / max(results, 1),
               steady=1000 * (times[-1] - times[0]) / max(results - 1, 1) if results > 1 else float("nan"),
               quarters=[1000 * (b - a) / max((results - 1) / 4, 1) for a, b in zip(quarters, quarters[1:])],
               cpu=1000 * cpu / max(results, 1), disk=disk, metrics=len(templates[0]))
    if profile:
        stats_file = Path(args.profile) / f"driver-{backend}-{trials}.pstats"
        stats_file.parent.mkdir(parents=True, exist_ok=True)
        profile.dump_stats(stats_file)
        run["profile"] = [f"    profile: {stats_file}", *_profile_summary(profile, results, args.top)]
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        run["kept"] = str(work)
    return run


def _run_line(run: dict) -> str:
    quarters = " / ".join(f"{q:.1f}" for q in run["quarters"])
    return (f"{run['backend']:<7} {run['trials']:>6} {run['results']:>8} {run['errors']:>6} {run['wall']:>8.1f} "
            f"{run['ms']:>10.1f} {run['steady']:>10.1f} {run['cpu']:>10.1f} {run['disk'] / 2**20:>9.1f}"
            f"   {quarters}")


def bench_driver(args) -> None:
    import logging
    import random

    import ray

    from study.evaluation.languages import resolve_languages
    from study.evaluation.robustness import is_per_language, tune_result

    sizes = [int(n) for n in args.trials.split(",")]
    if len(sizes) < 2 or min(sizes) < 1:
        raise UsageError("--trials needs two or more sizes >= 1, e.g. 100,1000")
    if args.epochs < 2:
        raise UsageError("--epochs must be >= 2 (ASHA acts on the epochs)")
    args.lang_codes = resolve_languages(group="all") if args.langs == "112" else resolve_languages()
    rng = random.Random(args.seed)
    templates = [_fake_evaluation(args.lang_codes, rng) for _ in range(8)]
    per_language = sum(1 for k in templates[0] if is_per_language(k))
    if not args.legacy:
        templates = [tune_result(t) for t in templates]
    numeric = sum(1 for v in templates[0].values() if not isinstance(v, str)) + len(TRAINER_KEYS) - 1

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    backends = [("sqlite", None)] + ([("server", args.tracking_uri)] if args.tracking_uri else [])
    runs = []
    for backend, uri in backends:
        for trials in sizes:
            print(f"[bench driver] {backend}: {trials} trials x {args.epochs} epochs ...", file=sys.stderr, flush=True)
            runs.append(_driver_run(args, trials, backend, uri, templates))
            print(f"[bench driver] {_run_line(runs[-1])}", file=sys.stderr, flush=True)
    ray.shutdown()

    setup = ("legacy set-up: per-language figures as numeric fields, CheckpointConfig(num_to_keep=1), Tune's "
             "CSV/JSON/TensorBoard loggers" if args.legacy else
             "the study's set-up: per-language figures packed in one field, no Tune retention (each trial keeps "
             "its newest two checkpoints), Tune's JSON logger only")
    print(f"\nRay Tune driver: {args.langs} languages ({per_language} per-language figures), {numeric} numeric "
          f"metrics per result, {args.epochs} epochs, ASHA, Optuna TPE (max {args.max_concurrent} concurrent), "
          f"reuse_actors={args.reuse_actors}, {args.num_cpus} Ray CPUs, {args.cpus_per_trial} CPU/trial; {setup}")
    print("ms/result = wall of tuner.fit() / results; steady = first to last result; driver CPU = the driver "
          "process's CPU time / results; by quarter = ms/result in each quarter of the results")
    print(f"{'store':<7} {'trials':>6} {'results':>8} {'errors':>6} {'wall s':>8} {'ms/result':>10} {'steady':>10} "
          f"{'driver CPU':>10} {'disk MiB':>9}   by quarter")
    for run in runs:
        print(_run_line(run))
    for run in runs:
        if "profile" in run:
            print(f"  {run['backend']} {run['trials']} trials:")
            print("\n".join(run["profile"]))
        if "kept" in run:
            print(f"  {run['backend']} {run['trials']} trials kept in {run['kept']}")
    ratios = []
    for backend, _ in backends:
        first, last = [r for r in runs if r["backend"] == backend][0], [r for r in runs if r["backend"] == backend][-1]
        ratios.append(f"{last['cpu'] / first['cpu']:.2f}x{' (bar <= 1.5x)' if not ratios else ''} on {backend} "
                      f"(wall per result {last['ms'] / first['ms']:.2f}x, "
                      f"steady {last['steady'] / first['steady']:.2f}x)")
    # the driver process's CPU time per result is the headline: the wall time also counts the trials' own work
    # and, on a shared machine, whatever else runs
    print(f"driver CPU time per result at {sizes[-1]} trials vs {sizes[0]}: " + "; ".join(ratios))


@cli_main
def main(argv=None) -> int:
    from study.encoder.loading import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train-step", help="hybrid-batch step time against plain fine-tuning")
    train.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    train.add_argument("--max-len", type=int, default=64, help="tokens per sentence")
    train.add_argument("--steps", type=int, default=3, help="PGD steps K")
    train.add_argument("--batches", type=int, default=4, help="distinct real batches cycled through")
    train.add_argument("--rounds", type=int, default=8, help="timed steps per configuration")
    encode = sub.add_parser("encode", help="evaluation encoding against a plain loop and sentence-transformers")
    encode.add_argument("--langs", default="swh,deu,cmn,mal,uig,ara", help="Tatoeba languages to read")
    encode.add_argument("--per-lang", type=int, default=200, help="pairs per language (both sides are encoded)")
    encode.add_argument("--batch-size", type=int, default=64, help="batch size of the plain loop")
    encode.add_argument("--rounds", type=int, default=3)
    encode.add_argument("--device")
    encode.add_argument("--data-dir")
    evaluate = sub.add_parser("evaluate", help="a trial's last-epoch evaluation: the reference path vs the study's")
    evaluate.add_argument("--budget", choices=("smoke", "cpu", "gpu"), default="cpu", help="whose eval settings")
    evaluate.add_argument("--langs", help="comma-separated languages instead of the budget's")
    evaluate.add_argument("--rounds", type=int, default=2)
    evaluate.add_argument("--threads", type=int, help="torch threads (default: the budget's cpus_per_trial, as a "
                                                      "trial has)")
    evaluate.add_argument("--device")
    evaluate.add_argument("--data-dir")
    for p in (train, encode, evaluate):
        p.add_argument("--model", default=DEFAULT_MODEL)
    study = sub.add_parser("study", help="a Ray Tune study of N tiny real trials against the same trials by hand")
    study.add_argument("--trials", type=int, default=6)
    study.add_argument("--budget", choices=("smoke", "cpu"), default="smoke", help="the trials' size")
    study.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray, all given to the one trial")
    study.add_argument("--rounds", type=int, default=2,
                       help="runs of each side (by hand, by hand beside an idle Ray, Tune on a running Ray, "
                            "Tune starting Ray), alternating order")
    study.add_argument("--work-dir", help="where the study's temporary folder goes (default: the temp dir)")
    driver = sub.add_parser("driver", help="the study's Ray Tune driver at scale: time per reported result, "
                                           "100 vs 1,000 trials")
    driver.add_argument("--trials", default="100,1000", help="trials per Tune run, comma-separated; the ratio is "
                                                             "last vs first")
    driver.add_argument("--epochs", type=int, default=2, help="epochs per trial (>= 2: ASHA stops some after one)")
    driver.add_argument("--langs", choices=("26", "112"), default="26",
                        help="26: the default groups (low and high), 112: every Tatoeba language")
    driver.add_argument("--tracking-uri", help="an MLflow server (e.g. on PostgreSQL) measured after the embedded "
                                               "SQLite store")
    driver.add_argument("--legacy", action="store_true",
                        help="the set-up before issue 13 (per-language figures as numeric fields, num_to_keep=1, "
                             "Tune's three loggers), for comparison")
    driver.add_argument("--reuse-actors", action="store_true",
                        help="TuneConfig(reuse_actors=True): a trial process runs trial after trial (the study "
                             "starts one per trial); spares the workers' start-up, not the driver's work")
    driver.add_argument("--max-concurrent", type=int, default=16, help="trials at once (the same for every size)")
    driver.add_argument("--cpus-per-trial", type=float, default=0.05)
    driver.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    driver.add_argument("--seed", type=int, default=0)
    driver.add_argument("--profile", metavar="DIR", help="cProfile the driver during each fit: DIR/*.pstats and "
                                                         "the time per component")
    driver.add_argument("--every", type=int, default=100, help="say how the time per result goes every N results "
                                                               "(stderr); 0: never")
    driver.add_argument("--top", type=int, default=15, help="profile entries shown")
    driver.add_argument("--quiet", action="store_true", help="no progress table (the study prints one)")
    driver.add_argument("--keep", action="store_true", help="keep each run's Ray storage and MLflow store")
    driver.add_argument("--work-dir", help="where the runs' temporary folders go (default: the temp dir)")
    from study.bench_gpu import add_arguments, bench_gpu

    add_arguments(sub.add_parser("gpu", help="every GPU figure in one run: JSON and a table (--device cpu: the "
                                             "same code at tiny sizes)"))
    args = parser.parse_args(argv)
    if args.command == "gpu":
        return bench_gpu(args)
    {"train-step": bench_train_step, "encode": bench_encode, "evaluate": bench_evaluate,
     "study": bench_study, "driver": bench_driver}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
