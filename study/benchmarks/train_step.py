"""`python -m study.bench train-step`: plain fine-tuning vs hybrid batches r in {0, 0.25, 0.5, 1} (PGD, K=3)."""

from __future__ import annotations

import statistics
import time

import torch

from study.benchmarks.common import sync


def add_arguments(parser) -> None:
    from study.encoder.loading import DEFAULT_MODEL

    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch")
    parser.add_argument("--max-len", type=int, default=64, help="tokens per sentence")
    parser.add_argument("--steps", type=int, default=3, help="PGD steps K")
    parser.add_argument("--batches", type=int, default=4, help="distinct real batches cycled through")
    parser.add_argument("--rounds", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--model", default=DEFAULT_MODEL)


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
            sync(device)
            start = time.perf_counter()
            step(c, batch)
            sync(device)
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
