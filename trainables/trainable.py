"""The Ray Tune trainable: a plain function that fine-tunes the encoder on English pairs with hybrid
batches and reports per-language zero-shot retrieval robustness after every epoch.

It reads its config (a `trainables.config.TrialConfig`, which refuses unknown keys), resumes from
`tune.get_checkpoint()` (weights, optimizer, scheduler and RNG state, so a restored trial continues
exactly), and calls `tune.report(metrics, checkpoint=...)`. A loss that turns NaN or infinite raises
`TrainingDiverged`: Ray marks that trial failed with the reason, the study goes on.

No step reads a device value back: the losses are summed on the device and read every
DIVERGENCE_CHECK_STEPS steps and when the epoch reports (each read waits for all queued device work).
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

from study.encoder.embedding import Encoder
from study.encoder.loading import resolve_model
from study.evaluation.crosslingual import untrained_measurements
from study.evaluation.data import load_english_pairs, resolve_data_dir
from study.evaluation.robustness import evaluate_encoder, tune_result
from trainables.attacks import make_attack
from trainables.config import TrialConfig
from trainables.hybrid import PairBatch, hybrid_step
from trainables.losses import InBatchContrastiveLoss
from trainables.storage import HITS_FILE, WEIGHTS_FILE, CheckpointRetention, DivergenceMarker

# steps between reads of the running loss sum (to stop a diverged trial early): one wait for the device per this
# many steps instead of one per step
DIVERGENCE_CHECK_STEPS = 50


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _cpus_of_trial() -> int | None:
    try:
        from ray import tune

        cpus = tune.get_context().get_trial_resources().required_resources.get("CPU")
        return max(1, int(cpus)) if cpus else None
    except Exception:  # outside Ray Tune (tests, benchmarks)
        return None


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_optimizer(model, cfg: TrialConfig, total_steps: int):
    """AdamW (no decay on biases and LayerNorm) with linear warmup then linear decay to zero."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warmup = max(1, int(cfg.warmup_ratio * total_steps))
    schedule = lambda step: min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


class HybridTrainer:
    """State of one trial: model, optimizer, data and generators; `train_epoch()` runs the loop."""

    def __init__(self, config: TrialConfig | dict):
        cfg = self.cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
        torch.manual_seed(cfg.seed)
        self.data_dir = resolve_data_dir(cfg.data_dir) if cfg.data_dir else resolve_data_dir()
        # evaluation tokenises at the encoder's MAX_LENGTH, as the untrained reference does; training at max_seq_len
        self.encoder = Encoder.load(resolve_model(cfg.model), device=_device())
        # the selection constraint compares the trial with the untrained encoder on the same pairs: measured now,
        # before any step or restore, while these are still the untrained weights (once per worker process)
        self.untrained_pairs = None
        if cfg.eval.xsts_langs and cfg.eval.split == "selection":
            self.untrained_pairs = untrained_measurements(self.encoder, cfg.model, cfg.eval.xsts_langs, self.data_dir,
                                                          cfg.eval.split, cfg.eval.max_xsts_pairs)
        self.model = self.encoder.model.train()
        if cfg.freeze_embeddings:
            self.model.get_input_embeddings().weight.requires_grad_(False)

        pairs = load_english_pairs("train", self.data_dir)
        if cfg.max_train_pairs:
            pairs = pairs.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_pairs, len(pairs))))
        self.anchors, self.positives = (self.encoder.tokenize(pairs[column], max_length=cfg.max_seq_len)
                                        for column in ("anchor", "positive"))
        self.steps_per_epoch = math.ceil(len(self.anchors) / cfg.batch_size)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg, cfg.epochs * self.steps_per_epoch)
        self.loss_fn = InBatchContrastiveLoss(cfg.temperature)
        self.selection_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.attack_rng = torch.Generator(device=_device()).manual_seed(cfg.seed + 2)
        # rs-da picks words on the host: its draws come from the host generator, so reading them waits for nothing
        attack_draws = self.selection_rng if cfg.method == "rs-da" else self.attack_rng
        self.attack = make_attack(cfg.method, cfg.epsilon, steps=cfg.attack_steps, step_ratio=cfg.step_ratio,
                                  norm=cfg.norm, samples=cfg.smoothing_samples, generator=attack_draws,
                                  substitution_rate=cfg.substitution_rate, text_of=self.encoder.text_of,
                                  tokenize=functools.partial(self.encoder.tokenize, max_length=cfg.max_seq_len))
        self.perturbable = None if cfg.perturb_special else self.encoder.perturbable_mask
        self.epoch = 0

    def batches(self):
        """This epoch's batches, shuffled by a generator seeded with (seed, epoch): restorable for free."""
        order = torch.randperm(len(self.anchors), generator=torch.Generator().manual_seed(
            self.cfg.seed * 1000 + self.epoch), device="cpu").tolist()
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            yield PairBatch([self.anchors[i] for i in idx], [self.positives[i] for i in idx])

    def train_step(self, batch: PairBatch) -> tuple[torch.Tensor, int]:
        """One optimizer step: (loss, detached, on the device; number of adversarial pairs). Nothing in it waits
        for the device: a non-finite loss is caught by `check_finite` on the running sum."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        loss, n_adv = hybrid_step(self.model, batch, self.loss_fn, attack=self.attack, ratio=cfg.ratio,
                                  generator=self.selection_rng, pad_id=self.encoder.pad_id, perturb=cfg.perturb,
                                  autocast=self.encoder.autocast, perturbable=self.perturbable)
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss, n_adv

    def check_finite(self, loss_sum: torch.Tensor) -> float:
        """The running loss sum read back (one wait for the device); TrainingDiverged if it is NaN or infinite
        (any non-finite step loss makes the sum so)."""
        value = loss_sum.item()
        if not math.isfinite(value):
            cfg = self.cfg
            raise TrainingDiverged(f"training loss became {value} at epoch {self.epoch + 1} "
                                   f"(lr {cfg.lr:g}, ratio {cfg.ratio:g}, epsilon {cfg.epsilon:g})")
        return value

    def train_epoch(self) -> dict:
        start, adversarial, steps = time.time(), 0, 0
        loss_sum = torch.zeros((), device=self.encoder.device)
        for batch in self.batches():
            loss, n_adv = self.train_step(batch)
            loss_sum += loss
            adversarial += n_adv
            steps += 1
            if steps % DIVERGENCE_CHECK_STEPS == 0:
                self.check_finite(loss_sum)
        mean_loss = self.check_finite(loss_sum) / steps
        self.epoch += 1
        return {"train.loss": mean_loss, "train.adversarial_share": adversarial / len(self.anchors),
                "train.seconds": time.time() - start, "epoch": self.epoch}

    # -- checkpoints: trainable weights as safetensors; optimizer/scheduler/RNG as tensors (weights_only load).
    # The last epoch's checkpoint leaves out the optimizer and scheduler: no training continues from it (a
    # restored finished trial has nothing left to run), only export and the replication read it, and the Adam
    # moments are twice the weights' size: two thirds of the bytes a checkpoint writes and uploads.
    def save(self, directory: str) -> None:
        weights = {n: p.detach().contiguous().cpu() for n, p in self.model.named_parameters() if p.requires_grad}
        save_file(weights, os.path.join(directory, WEIGHTS_FILE))
        state = {"epoch": self.epoch, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "selection_rng": self.selection_rng.get_state(), "attack_rng": self.attack_rng.get_state()}
        if self.epoch < self.cfg.epochs:
            state |= {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save(state, os.path.join(directory, "training_state.pt"))

    def restore(self, directory: str) -> None:
        weights = load_file(os.path.join(directory, WEIGHTS_FILE), device=str(_device()))
        missing = self.model.load_state_dict(weights, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"checkpoint has unknown weights: {missing.unexpected_keys[:3]}")
        state = torch.load(os.path.join(directory, "training_state.pt"), weights_only=True, map_location="cpu")
        if "optimizer" in state:  # absent from a finished trial's checkpoint (epoch == epochs: nothing to train)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.selection_rng.set_state(state["selection_rng"])
        self.attack_rng.set_state(state["attack_rng"])
        self.epoch = state["epoch"]


def train_hybrid(config: dict) -> None:
    """Ray Tune function trainable."""
    import datasets
    from ray import tune
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    cpus = _cpus_of_trial()
    if cpus:
        torch.set_num_threads(cpus)
    # A divergence is deterministic: a retry (FailureConfig, meant for crashed workers) fails at once. The
    # marker lives in the trial's folder in Ray's storage, which a retry on any other node reads too.
    storage = tune.get_context().get_storage()
    marker, retention = DivergenceMarker(storage), CheckpointRetention(storage)
    reason = marker.read()
    if reason:
        raise TrainingDiverged(reason)
    trainer = HybridTrainer(TrialConfig.from_dict(config))
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            trainer.restore(directory)
    resumed_from = trainer.epoch  # > 0: this process continues a trial from its checkpoint (after a crash)
    import ray

    cfg, node = trainer.cfg, ray.get_runtime_context().get_node_id()
    while trainer.epoch < cfg.epochs:
        try:
            metrics = trainer.train_epoch()
        except TrainingDiverged as err:
            marker.write(str(err))
            raise
        per_item = None  # keep_hits: per-sentence hits and per-pair measurements, for study.replicate
        if cfg.eval_every_epoch or trainer.epoch == cfg.epochs:
            start = time.time()
            # the last epoch also measures the report split: the study's summary quotes it, the search never sees it
            evaluation = evaluate_encoder(trainer.encoder, cfg.eval, trainer.data_dir,
                                          also_report=trainer.epoch == cfg.epochs,
                                          untrained_pairs=trainer.untrained_pairs)
            metrics.update(tune_result(evaluation["metrics"]))
            metrics["eval.seconds"] = time.time() - start
            if "hits" in evaluation:
                per_item = {"hits": evaluation["hits"], "pairs": evaluation["pairs"]}
        metrics["node_id"] = node  # which Ray node ran this epoch (a tag on the MLflow child run)
        metrics["train.resumed_from_epoch"] = resumed_from
        with tempfile.TemporaryDirectory() as directory:
            trainer.save(directory)
            if per_item is not None:  # they travel with the checkpoint (Ray's storage), never a node's disk
                with open(os.path.join(directory, HITS_FILE), "w") as f:
                    json.dump(per_item, f)
            retention.make_room()
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
