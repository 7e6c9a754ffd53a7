"""Benchmarks: figures and ratios measured in one run, on the same inputs, on this machine.

    python -m study.bench train-step   plain fine-tuning vs hybrid batches r in {0, 0.25, 0.5, 1} (PGD, K=3)
    python -m study.bench encode       our evaluation encoder path vs a plain transformers loop

Timings are means over repeated steps, the configurations interleaved round by round so that a machine
that slows down or speeds up during the run affects all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from study.errors import cli_main


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- train-step
def bench_train_step(args) -> None:
    from trainables.config import TrialConfig
    from trainables.hybrid import adversarial_count, hybrid_step, plain_step
    from trainables.trainable import HybridTrainer

    ratios = (0.0, 0.25, 0.5, 1.0)
    trainer = HybridTrainer(TrialConfig(model=args.model, method="pgd", attack_steps=args.steps, epsilon=0.5,
                                        batch_size=args.batch_size, max_train_pairs=args.batch_size * args.batches,
                                        max_seq_len=args.max_len, lr=1e-6, warmup_ratio=0.0))
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
    from study.data import load_tatoeba

    out: list[str] = []
    for lang in langs:
        pairs = load_tatoeba(lang, data_dir, per_lang)
        out += list(pairs["source"]) + list(pairs["english"])
    return out


def bench_encode(args) -> None:
    import torch.nn.functional as F

    from study.data import resolve_data_dir
    from study.encoding import Encoder, mean_pool
    from study.models import resolve_model

    encoder = Encoder.load(resolve_model(args.model), device=args.device)
    model, tokenizer, device = encoder.model, encoder.tokenizer, encoder.device
    sentences = _sentences(resolve_data_dir(args.data_dir), args.langs.split(","), args.per_lang)

    @torch.inference_mode()
    def plain_loop() -> torch.Tensor:
        """What one writes first: file order, fixed batches padded to their longest sentence."""
        out = []
        for start in range(0, len(sentences), args.batch_size):
            batch = tokenizer([encoder.prefix + s for s in sentences[start : start + args.batch_size]],
                              padding=True, truncation=True, max_length=encoder.max_length,
                              return_tensors="pt").to(device)
            with encoder.autocast():
                hidden = model(**batch).last_hidden_state
            out.append(F.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1).cpu())
        return torch.cat(out)

    def ours() -> torch.Tensor:
        return encoder.embed(sentences)

    runs = {"plain transformers loop": plain_loop, "study.encoding.Encoder": ours}
    seconds: dict = {name: [] for name in runs}
    outputs = {}
    for name, fn in runs.items():  # warm-up
        outputs[name] = fn()
    for _ in range(args.rounds):
        for name, fn in runs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
    agreement = (outputs["plain transformers loop"] * outputs["study.encoding.Encoder"]).sum(1).min().item()
    print(f"device {device}  threads {torch.get_num_threads()}  {len(sentences)} Tatoeba sentences "
          f"({args.langs}, both sides), plain batch {args.batch_size}, {args.rounds} rounds")
    rate = {name: len(sentences) / statistics.mean(s) for name, s in seconds.items()}
    for name in runs:
        print(f"{name:<26} {rate[name]:>9.1f} sentences/s   ({statistics.mean(seconds[name]):.2f} s a pass)")
    print(f"speed-up {rate['study.encoding.Encoder'] / rate['plain transformers loop']:.2f}x;  "
          f"min cosine between the two paths' embeddings {agreement:.6f}")


@cli_main
def main(argv=None) -> int:
    from study.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train-step", help="hybrid-batch step time against plain fine-tuning")
    train.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    train.add_argument("--max-len", type=int, default=64, help="tokens per sentence")
    train.add_argument("--steps", type=int, default=3, help="PGD steps K")
    train.add_argument("--batches", type=int, default=4, help="distinct real batches cycled through")
    train.add_argument("--rounds", type=int, default=8, help="timed steps per configuration")
    encode = sub.add_parser("encode", help="evaluation encoding against a plain transformers loop")
    encode.add_argument("--langs", default="swh,deu,cmn,mal,uig,ara", help="Tatoeba languages to read")
    encode.add_argument("--per-lang", type=int, default=200, help="pairs per language (both sides are encoded)")
    encode.add_argument("--batch-size", type=int, default=64, help="batch size of the plain loop")
    encode.add_argument("--rounds", type=int, default=3)
    encode.add_argument("--device")
    encode.add_argument("--data-dir")
    for p in (train, encode):
        p.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    {"train-step": bench_train_step, "encode": bench_encode}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
