"""`python -m study.bench gpu [--device cuda|cpu] [--out FILE.json]`: every GPU figure in one run.

Sections, each guarded (a failure is recorded with its error in the JSON, the others still run, the exit code
is 1), the JSON rewritten after each so that a run killed at its time limit still leaves what it measured:

  environment  the GPU, its driver, torch and CUDA (on a CPU: the CPU model and torch)
  encode       Tatoeba sentences/s of the evaluation's encoder path (study.encoder.embedding.Encoder) in fp32 and bf16,
               against a plain transformers loop and SentenceTransformer.encode; the FLOP rate reached; when
               bf16 falls short of 100,000 sentences/s, a torch.profiler summary of where the time goes
  train_step   hybrid-batch step throughput at r = 0, 0.5, 1 (PGD, K = 3) and the marginal cost of r
  memory       peak memory of a gpu-budget trial's training step (its batch of the longest training pairs)
               and of its last-epoch evaluation; the fraction of the card, and whether 4 trials fit
  evaluate     `bench evaluate`'s speed-up of the study's evaluation over the per-language reference path
  bf16         bf16 against fp32: the smallest cosine between their embeddings, and clean and attacked
               Tatoeba accuracy on six languages at every radius the gpu budget evaluates (bar: 0.5 points)
  study        a smoke study of the gpu budget's shape: `python -m study.run` with 4 trials sharing one GPU
               (--gpus-per-trial 0.25), every trial FINISHED in MLflow, the GPU's utilisation sampled by NVML
  trial        one gpu-budget trial, trained and evaluated as the trainable does (or projected from its first
               epoch when the whole trial does not fit the time left), and the gpu-budget study's time on 1
               and 8 GPUs

`--device cpu` runs the same code at tiny sizes (a few sentences, a few steps, 2 trials on the CPUs): what CI
runs. The last line's first N.NNx is the headline: bf16 over fp32 encoding throughput on a GPU; on a CPU, the
Encoder over the plain loop (fp32).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

from study.benchmarks.common import gemm_flop_rate, interleaved_mean_times, plain_loop_embed, sync, tatoeba_sentences
from study.benchmarks.evaluate import bench_evaluate

TARGET_BF16 = 100_000  # Tatoeba sentences/s in bf16 on one H200 (~0.8 GFLOP a sentence: ~10% of bf16 peak)
AGREEMENT_POINTS = 0.5  # bf16 and fp32 accuracies must agree within this, at every radius
CHECK_LANGS = ("swh", "hye", "mal", "uig", "deu", "cmn")  # the cpu budget's six: four low-resource, two high
FITS_FRACTION = 0.8  # 4 trials "fit with room to spare": their memory at most this share of the card

# what each device runs; the code is the same. None: the gpu budget's own value (study.orchestration.budgets)
SIZES = {
    "cuda": dict(time_limit=480, encode_langs=None, encode_per_lang=300, encode_rounds=3, plain_batch=64,
                 gemm_rows=8192, step_batch=None, step_max_len=None, step_batches=4, step_rounds=5,
                 evaluate_budget="gpu", evaluate_langs="swh,deu,cmn,mal,uig,ara", evaluate_rounds=1,
                 check_sentences=None, study_trials=4, study_cpus=2, study_gpus=0.25, study_args=[],
                 sample_every=0.5, trial={}, trial_eval={}),
    "cpu": dict(time_limit=170, encode_langs="swh,deu", encode_per_lang=12, encode_rounds=1, plain_batch=8,
                gemm_rows=256, step_batch=4, step_max_len=32, step_batches=1, step_rounds=1,
                evaluate_budget="smoke", evaluate_langs="swh,deu", evaluate_rounds=1,
                check_sentences=6, study_trials=2, study_cpus=1, study_gpus=0, study_args=["--langs", "swh,deu"],
                sample_every=0.5,
                trial=dict(max_train_pairs=8, batch_size=4, max_seq_len=32, epochs=2),
                trial_eval=dict(langs=["swh", "deu"], max_sentences=6, max_english_pairs=16, xsts_langs=["de"],
                                max_xsts_pairs=16)),
}


def add_arguments(parser) -> None:
    from study.encoder.loading import DEFAULT_MODEL

    parser.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda when there is one")
    parser.add_argument("--out", default="bench-gpu.json", help="the JSON file, rewritten after every section")
    parser.add_argument("--time-limit", type=float, help="seconds the run may take (default: 480 on a GPU, 170 on "
                                                         "a CPU); the trial section projects from its first epoch "
                                                         "when the whole trial does not fit what is left")
    parser.add_argument("--gpus-per-trial", type=float, help="the study's share of a GPU per trial (default 0.25: "
                                                             "4 trials a GPU; 0 on a CPU)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--data-dir")


# ----------------------------------------------------------------------------- the run
class Run:
    """What the sections share: the device, the sizes, the deadline, the encoder and trainer (loaded once)."""

    def __init__(self, args):
        self.args, self.device = args, torch.device(args.device)
        self.sizes = SIZES[self.device.type]
        self.start = time.perf_counter()
        self.deadline = self.start + (args.time_limit or self.sizes["time_limit"])
        self.gpus_per_trial = (args.gpus_per_trial if args.gpus_per_trial is not None
                               else self.sizes["study_gpus"] if self.device.type == "cpu" else 0.25)
        self.threads = torch.get_num_threads()
        self.results: dict = {}
        self._encoder = self._trainer = None

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    @property
    def data_dir(self):
        from study.evaluation.data import resolve_data_dir

        return resolve_data_dir(self.args.data_dir)

    def encoder(self):
        """The untrained encoder on the device, for the sections that only read it."""
        if self._encoder is None:
            from study.encoder.embedding import Encoder
            from study.encoder.loading import resolve_model

            self._encoder = Encoder.load(resolve_model(self.args.model), device=self.device)
        return self._encoder

    def step_config(self):
        """The gpu budget's training step: its batch size and tokens per sentence (tiny on a CPU), PGD K=3."""
        from study.orchestration.budgets import BUDGETS
        from trainables.config import TrialConfig

        budget = BUDGETS["gpu"]
        return TrialConfig(model=self.args.model, data_dir=self.args.data_dir, method="pgd", attack_steps=3,
                           epsilon=0.5, batch_size=self.sizes["step_batch"] or budget.batch_size,
                           max_seq_len=self.sizes["step_max_len"] or TrialConfig().max_seq_len, lr=1e-6,
                           warmup_ratio=0.0, eval={"xsts_langs": ()})  # the steps only; nothing is evaluated

    def trainer(self):
        """One HybridTrainer at the gpu budget's step sizes on all the English training pairs, for the step
        timings and the memory peaks (their weights move by lr 1e-6: neither figure depends on them)."""
        if self._trainer is None:
            from trainables.trainable import HybridTrainer

            self._trainer = HybridTrainer(self.step_config())
        return self._trainer

    def trial_config(self):
        """A gpu-budget trial as the study configures it (study.orchestration.tuning.base_trial_config with the
        hybrid_ratio space's fixed PGD; r and epsilon at their defaults, 0.5 and 0.5), tiny on a CPU."""
        from study.evaluation.languages import resolve_languages
        from study.evaluation.robustness import EvalConfig
        from study.orchestration.budgets import BUDGETS
        from trainables.config import TrialConfig

        budget = BUDGETS["gpu"]
        evaluation = {**budget.eval, "langs": budget.eval.get("langs") or resolve_languages(), "seed": 0,
                      **self.sizes["trial_eval"]}
        train = {**budget.train, "epochs": budget.epochs, "batch_size": budget.batch_size,
                 "max_train_pairs": budget.max_train_pairs, **self.sizes["trial"]}
        return TrialConfig(**train, method="pgd", model=self.args.model, data_dir=self.args.data_dir,
                           eval=EvalConfig(**evaluation))


def _write(path: Path, payload: dict) -> None:
    """Whole or not at all: a temporary sibling renamed over the file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def _autocast(device: torch.device, precision: str):
    """A context factory: bf16 autocast on the device (the CPU too), or none (fp32)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def _reset_peak(device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device) -> dict:
    if device.type != "cuda":
        return {"allocated": None, "reserved": None}
    sync(device)
    return {"allocated": torch.cuda.max_memory_allocated(device), "reserved": torch.cuda.max_memory_reserved(device)}


def _nvml():
    """pynvml initialised, or None (no NVIDIA library: a CPU host)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _nvml_handle(nvml, device: torch.device):
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    if uuid is not None:
        try:
            text = str(uuid)
            return nvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
        except Exception:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(device.index or 0)


# ----------------------------------------------------------------------------- sections
def section_environment(run: Run) -> dict:
    import importlib.metadata
    import platform

    info = {"device": str(run.device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu_model"] = platform.processor() or None
    for package in ("transformers", "sentence-transformers", "ray", "optuna", "mlflow", "nvidia-ml-py"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    if run.device.type == "cuda":
        props = torch.cuda.get_device_properties(run.device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory=props.total_memory,
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                    float32_matmul_precision=torch.get_float32_matmul_precision(),
                    gpus_visible=torch.cuda.device_count())
        nvml = _nvml()
        info["driver"] = None
        if nvml:
            driver = nvml.nvmlSystemGetDriverVersion()
            info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    return info


def _encoder_flop(encoder, ids) -> tuple[int, int, int]:
    """(model FLOP, padded tokens, real tokens) of the Encoder's length-sorted batches of `ids`: the linear
    layers (Q, K, V, output, two feed-forward) and attention's two products, per layer."""
    from study.encoder.embedding import length_sorted_batches

    cfg = encoder.model.config
    h, inner, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    flop = padded = 0
    for batch in length_sorted_batches([len(t) for t in ids], encoder.max_tokens, encoder.max_batch):
        rows, width = len(batch), max(len(ids[i]) for i in batch)
        padded += rows * width
        flop += layers * (rows * width * (8 * h * h + 4 * h * inner) + 4 * rows * width * width * h)
    return flop, padded, sum(len(t) for t in ids)


def _profile(fn, device: torch.device, top: int = 15) -> dict:
    """One call of `fn` under torch.profiler: the top operators by their own device time (CUDA), or CPU time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    wall = time.perf_counter() - start  # with the profiler's own overhead

    def own(event) -> float:  # microseconds
        if device.type == "cuda":
            return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0))
        return float(event.self_cpu_time_total)

    events = [e for e in prof.key_averages() if own(e) > 0]
    total = sum(own(e) for e in events)
    events.sort(key=own, reverse=True)
    return {"by": "self CUDA time" if device.type == "cuda" else "self CPU time", "wall_seconds": wall,
            "busy_seconds": total / 1e6, "busy_share_of_wall": total / 1e6 / wall if wall else None,
            "top": [{"op": e.key, "calls": e.count, "seconds": own(e) / 1e6, "share": own(e) / total}
                    for e in events[:top]]}


def section_encode(run: Run) -> dict:
    from study.analysis.exporting import sentence_model
    from study.encoder.loading import resolve_model
    from study.evaluation.languages import resolve_languages

    sizes, device = run.sizes, run.device
    encoder = run.encoder()
    langs = sizes["encode_langs"].split(",") if sizes["encode_langs"] else resolve_languages()
    sentences = tatoeba_sentences(run.data_dir, langs, sizes["encode_per_lang"])
    start = time.perf_counter()
    ids = encoder.tokenize(sentences)
    tokenize_seconds = time.perf_counter() - start
    st_model = sentence_model(resolve_model(run.args.model), max_seq_length=encoder.max_length, device=str(device))

    def with_precision(precision: str, fn):
        def call():
            encoder.autocast = _autocast(device, precision)  # the instance's, over Encoder.autocast
            with encoder.autocast() if fn is st_encode else nullcontext():
                return fn()
        return call

    def st_encode():
        return st_model.encode(sentences, batch_size=sizes["plain_batch"], convert_to_tensor=True).float().cpu()

    paths = {"Encoder": lambda: encoder.embed(sentences), "Encoder, token ids given": lambda: encoder.embed(
        token_ids=ids), "plain loop": lambda: plain_loop_embed(encoder, sentences, sizes["plain_batch"]),
        "SentenceTransformer.encode": st_encode}
    runs = {f"{name} {p}": with_precision(p, fn) for p in ("fp32", "bf16") for name, fn in paths.items()}
    try:
        outputs, seconds = interleaved_mean_times(runs, sizes["encode_rounds"], device)
    finally:
        encoder.__dict__.pop("autocast", None)  # Encoder.autocast again
    rate = {name: len(sentences) / s for name, s in seconds.items()}
    flop, padded, real = _encoder_flop(encoder, ids)
    cfg = encoder.model.config
    out = {"sentences": len(sentences), "langs": langs, "per_lang": sizes["encode_per_lang"],
           "rounds": sizes["encode_rounds"], "plain_batch": sizes["plain_batch"], "max_tokens": encoder.max_tokens,
           "max_batch": encoder.max_batch, "tokenize_per_second": len(sentences) / tokenize_seconds,
           "sentences_per_second": rate, "seconds": seconds,
           "padded_per_real_token": padded / real, "gflop_per_sentence": flop / len(sentences) / 1e9,
           "tflops": {p: flop / seconds[f"Encoder {p}"] / 1e12 for p in ("fp32", "bf16")},
           "tflops_token_ids_given": {p: flop / seconds[f"Encoder, token ids given {p}"] / 1e12
                                      for p in ("fp32", "bf16")},
           "gemm_tflops": {p: gemm_flop_rate(device, cfg.hidden_size, cfg.intermediate_size, sizes["gemm_rows"],
                                         torch.bfloat16 if p == "bf16" else torch.float32) / 1e12
                           for p in ("fp32", "bf16")},
           "min_cosine_bf16_fp32": (outputs["Encoder bf16"] * outputs["Encoder fp32"]).sum(1).min().item(),
           "min_cosine_paths_fp32": min((outputs[f"{n} fp32"] * outputs["Encoder fp32"]).sum(1).min().item()
                                        for n in paths),
           "bf16_over_fp32": rate["Encoder bf16"] / rate["Encoder fp32"],
           "encoder_over_plain_fp32": rate["Encoder fp32"] / rate["plain loop fp32"],
           "encoder_over_plain_bf16": rate["Encoder bf16"] / rate["plain loop bf16"],
           "encoder_over_sentence_transformers_fp32": rate["Encoder fp32"] / rate["SentenceTransformer.encode fp32"],
           "target_bf16": TARGET_BF16, "target_met": rate["Encoder bf16"] >= TARGET_BF16}
    if not out["target_met"]:  # where a bf16 pass spends its time (on a CPU the target is not the CPU's: always)
        encoder.autocast = _autocast(device, "bf16")
        try:
            out["profile_bf16"] = _profile(lambda: encoder.embed(sentences), device)
        finally:
            encoder.__dict__.pop("autocast", None)
    return out


def _train_step(trainer, ratio: float, batch) -> None:
    """One optimizer step of a hybrid batch, as HybridTrainer.train_step takes it, at ratio r."""
    from trainables.hybrid import hybrid_step

    trainer.optimizer.zero_grad(set_to_none=True)
    hybrid_step(trainer.model, batch, trainer.loss_fn, attack=trainer.attack, ratio=ratio,
                generator=trainer.selection_rng, pad_id=trainer.encoder.pad_id, perturb=trainer.cfg.perturb,
                autocast=trainer.encoder.autocast, perturbable=trainer.perturbable)
    torch.nn.utils.clip_grad_norm_([p for p in trainer.model.parameters() if p.requires_grad], 1.0)
    trainer.optimizer.step()


RATIOS = (0.0, 0.5, 1.0)


def section_train_step(run: Run) -> dict:
    from itertools import islice

    from trainables.hybrid import adversarial_count

    trainer, sizes, device = run.trainer(), run.sizes, run.device
    batches = list(islice(trainer.batches(), sizes["step_batches"]))
    n, k = trainer.cfg.batch_size, trainer.cfg.attack_steps
    for r in RATIOS:  # warm-up: allocator, kernels, thread pools
        _train_step(trainer, r, batches[0])
    times: dict = {r: [] for r in RATIOS}
    for rnd in range(sizes["step_rounds"]):
        for r in RATIOS:
            sync(device)
            start = time.perf_counter()
            _train_step(trainer, r, batches[rnd % len(batches)])
            sync(device)
            times[r].append(time.perf_counter() - start)
    mean = {r: statistics.mean(t) for r, t in times.items()}
    out = {"pairs_per_batch": n, "max_seq_len": trainer.cfg.max_seq_len, "pgd_steps": k, "rounds": sizes["step_rounds"],
           "batches": len(batches), "precision": "bf16" if device.type == "cuda" else "fp32", "by_ratio": {}}
    for r in RATIOS:
        passes = 2 * n + k * adversarial_count(r, n)  # sentences through the encoder (trainables/hybrid.py)
        out["by_ratio"][f"{r:g}"] = {"ms_per_step": 1000 * mean[r], "pairs_per_second": n / mean[r],
                                     "vs_r0": mean[r] / mean[0.0], "predicted_vs_r0": passes / (2 * n)}
    # (t(0.5) - t(0)) / (t(1) - t(0)): 0.5 when the attack's cost is proportional to r
    out["marginal_cost_of_r"] = (mean[0.5] - mean[0.0]) / (mean[1.0] - mean[0.0])
    out["seconds_per_unit_r"] = mean[1.0] - mean[0.0]
    return out


def section_memory(run: Run) -> dict:
    import resource

    from study.evaluation.robustness import evaluate_encoder
    from trainables.hybrid import PairBatch

    trainer, device = run.trainer(), run.device
    n = trainer.cfg.batch_size
    longest = sorted(range(len(trainer.anchors)), key=lambda i: -(len(trainer.anchors[i]) + len(trainer.positives[i])))
    worst = PairBatch([trainer.anchors[i] for i in longest[:n]], [trainer.positives[i] for i in longest[:n]])
    out: dict = {"batch": n, "max_seq_len": trainer.cfg.max_seq_len,
                 "longest_tokens": max(map(len, worst.anchors + worst.positives)), "train": {}}
    for r in RATIOS:
        _reset_peak(device)
        _train_step(trainer, r, worst)
        out["train"][f"{r:g}"] = _peak(device)
    config = run.trial_config().eval
    _reset_peak(device)
    start = time.perf_counter()
    evaluate_encoder(trainer.encoder, config, run.data_dir, also_report=True)  # a trial's last epoch: both splits
    out["evaluation"] = {**_peak(device), "seconds": time.perf_counter() - start, "langs": len(config.langs),
                         "sentences": config.max_sentences, "radii": list(config.radii)}
    trainer.model.train()
    out["cpu_max_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's, so far
    if device.type != "cuda":
        out["note"] = "no CUDA allocator on a CPU: the peaks are None; cpu_max_rss is the process's high-water mark"
        return out
    total = torch.cuda.get_device_properties(device).total_memory
    peak = max([v["allocated"] for v in out["train"].values()] + [out["evaluation"]["allocated"]])
    reserved = max([v["reserved"] for v in out["train"].values()] + [out["evaluation"]["reserved"]])
    process = None  # what NVML sees of this process: the reserved memory plus the CUDA context
    nvml = _nvml()
    try:  # a container's PID namespace may hide this process from NVML: then the reserved memory
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(_nvml_handle(nvml, device)) if nvml else ():
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                process = int(proc.usedGpuMemory)
    except Exception as err:
        out["nvml_error"] = f"{type(err).__name__}: {err}"
    per_trial = process or reserved
    out.update(card=total, peak_allocated=peak, peak_reserved=reserved, process_nvml=process,
               fraction_allocated=peak / total, fraction_reserved=reserved / total,
               four_trials_fraction=4 * per_trial / total, four_trials_basis="nvml process" if process else
               "reserved (CUDA context not counted)", fits_four=4 * per_trial <= FITS_FRACTION * total)
    return out


def section_evaluate(run: Run) -> dict:
    from argparse import Namespace

    sizes = run.sizes
    args = Namespace(budget=sizes["evaluate_budget"], langs=sizes["evaluate_langs"], rounds=sizes["evaluate_rounds"],
                     threads=run.threads, model=run.args.model, device=str(run.device), data_dir=run.args.data_dir)
    try:
        return bench_evaluate(args)
    finally:
        torch.set_num_threads(run.threads)


def section_bf16(run: Run) -> dict:
    from study.evaluation.robustness import EvalConfig, QuerySet, evaluate_encoder
    from study.orchestration.budgets import BUDGETS

    encoder, device = run.encoder(), run.device
    config = EvalConfig(**{**BUDGETS["gpu"].eval, "langs": list(CHECK_LANGS), "max_sentences": run.sizes[
        "check_sentences"], "english_check": False, "typo_rates": (), "xsts_langs": ()})
    sets = [QuerySet.load(encoder, lang, config.split, config, run.data_dir) for lang in config.langs]
    texts = [s for qs in sets for s in qs.source + qs.english]
    figures, embeddings, peaks = {}, {}, {}
    try:
        for precision in ("fp32", "bf16"):
            encoder.autocast = _autocast(device, precision)
            _reset_peak(device)
            figures[precision] = evaluate_encoder(encoder, config, run.data_dir)["languages"]
            peaks[precision] = _peak(device)["allocated"]
            embeddings[precision] = encoder.embed(texts)
    finally:
        encoder.__dict__.pop("autocast", None)
    names = ["clean"] + [f"attacked_eps{r:g}" for r in config.radii]
    agreement = {}
    for name in names:
        accuracy = {p: 100 * statistics.mean(f[lang][name] for lang in config.langs) for p, f in figures.items()}
        worst = max(abs(figures["bf16"][lang][name] - figures["fp32"][lang][name]) for lang in config.langs)
        difference = accuracy["bf16"] - accuracy["fp32"]
        agreement[name] = {"fp32": accuracy["fp32"], "bf16": accuracy["bf16"], "difference": difference,
                           "max_language_difference": 100 * worst, "pass": abs(difference) <= AGREEMENT_POINTS}
    n = sum(len(qs.source) for qs in sets)
    return {"langs": list(config.langs), "queries": n, "split": config.split, "radii": list(config.radii),
            "attack_steps": config.attack_steps, "one_sentence_points": 100 / n,
            "bar_points": AGREEMENT_POINTS, "min_cosine": (embeddings["bf16"] * embeddings["fp32"]).sum(1).min().item(),
            "embedded": len(texts), "figures": agreement, "all_pass": all(a["pass"] for a in agreement.values()),
            "peak_allocated": peaks}


class _Sampler(threading.Thread):
    """The GPU's utilisation and memory in use, read through NVML every `every` seconds until stopped."""

    def __init__(self, nvml, handle, every: float):
        super().__init__(daemon=True)
        self.nvml, self.handle, self.every = nvml, handle, every
        self.samples: list[tuple[float, int, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            self.samples.append((time.perf_counter(), util.gpu, self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used))
            self.stopped.wait(self.every)


def section_study(run: Run) -> dict:
    from study.analysis.trials import load_trials
    from study.orchestration.tracking import client_for

    sizes, device = run.sizes, run.device
    trials = sizes["study_trials"]
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-study-"))
    study_dir, uri = work / "study", f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, "-m", "study.run", "--space", "hybrid_ratio", "--budget", "smoke", "--num-samples",
               str(trials), "--gpus-per-trial", f"{run.gpus_per_trial:g}", "--cpus-per-trial", str(sizes["study_cpus"]),
               "--out", str(study_dir), "--tracking-uri", uri, "--model", run.args.model, *sizes["study_args"]]
    if run.args.data_dir:
        command += ["--data-dir", run.args.data_dir]
    sampler, sampling = None, "no GPU: not sampled"
    if device.type == "cuda":
        nvml = _nvml()
        if nvml:
            sampler, sampling = _Sampler(nvml, _nvml_handle(nvml, device), sizes["sample_every"]), "nvml"
            sampler.start()
        else:
            sampling = "pynvml (nvidia-ml-py) not importable: not sampled"
    start = time.perf_counter()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=max(240.0, run.left()),
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        wall = time.perf_counter() - start
        if sampler:
            sampler.stopped.set()
            sampler.join()
    out: dict = {"command": " ".join(command[1:]), "trials": trials, "gpus_per_trial": run.gpus_per_trial,
                 "cpus_per_trial": sizes["study_cpus"], "wall_seconds": wall, "returncode": process.returncode,
                 "sampling": sampling}
    if sampler and sampler.samples:
        util = [s[1] for s in sampler.samples]
        total = torch.cuda.get_device_properties(device).total_memory
        out["gpu"] = {"samples": len(util), "every_seconds": sizes["sample_every"], "mean_util": statistics.mean(util),
                      "max_util": max(util), "busy_share": sum(u > 0 for u in util) / len(util),
                      "max_memory_used": max(s[2] for s in sampler.samples),
                      "max_memory_fraction": max(s[2] for s in sampler.samples) / total}
    if process.returncode != 0:
        raise RuntimeError(f"study.run exited {process.returncode} (the study is kept in {work}): "
                           f"{(process.stderr or process.stdout)[-1500:]}")
    saved = json.loads((study_dir / "study.json").read_text())
    found = load_trials(client_for(uri), saved["experiment_id"], saved["parent_run_id"])
    statuses = sorted(t["status"] for t in found)
    out.update(statuses=statuses, finished=statuses.count("FINISHED"))
    if len(found) != trials or out["finished"] != trials:
        raise RuntimeError(f"{out['finished']} of {trials} trials FINISHED in MLflow (statuses {statuses}); "
                           f"the study is kept in {work}")
    shutil.rmtree(work, ignore_errors=True)  # kept only when it failed
    return out


def section_trial(run: Run) -> dict:
    from study.evaluation.robustness import evaluate_encoder
    from study.orchestration.budgets import BUDGETS
    from trainables.trainable import HybridTrainer

    device, cfg = run.device, run.trial_config()
    start = time.perf_counter()
    trainer = HybridTrainer(cfg)  # the encoder loaded, the untrained cross-lingual measurements, the data tokenised
    setup = time.perf_counter() - start
    epochs = []
    while trainer.epoch < cfg.epochs:
        _reset_peak(device)
        train = trainer.train_epoch()["train.seconds"]
        train_peak = _peak(device)["allocated"]
        last = trainer.epoch == cfg.epochs
        _reset_peak(device)
        eval_start = time.perf_counter()
        evaluate_encoder(trainer.encoder, cfg.eval, trainer.data_dir, also_report=last,
                         untrained_pairs=trainer.untrained_pairs)
        epochs.append({"train_seconds": train, "eval_seconds": time.perf_counter() - eval_start,
                       "train_peak": train_peak, "eval_peak": _peak(device)["allocated"], "report_split": last})
        one = epochs[0]["train_seconds"] + epochs[0]["eval_seconds"]
        if not last and (cfg.epochs - trainer.epoch) * one * 1.25 > run.left() - 10:
            break  # the rest would not fit the time left: projected from this epoch
    whole = trainer.epoch == cfg.epochs
    if whole:
        seconds, how = time.perf_counter() - start, "one whole trial, measured"
    else:  # the last epoch evaluates the report split too: about a second evaluation
        first = epochs[0]
        seconds = setup + cfg.epochs * first["train_seconds"] + (cfg.epochs + 1) * first["eval_seconds"]
        how = (f"projected from {len(epochs)} measured epoch(s): setup + {cfg.epochs} x epoch training + "
               f"{cfg.epochs + 1} x evaluation (the last epoch's covers the report split too)")
    budget = BUDGETS["gpu"]
    per_gpu = round(1 / run.gpus_per_trial) if run.gpus_per_trial else 1
    study = {f"{g}_gpu": budget.num_samples * seconds / per_gpu / g for g in (1, 8)}
    return {"how": how, "whole": whole, "seconds": seconds, "setup_seconds": setup, "epochs": epochs,
            "config": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "max_train_pairs": cfg.max_train_pairs,
                       "train_pairs": len(trainer.anchors), "steps_per_epoch": trainer.steps_per_epoch,
                       "max_seq_len": cfg.max_seq_len, "ratio": cfg.ratio, "epsilon": cfg.epsilon,
                       "method": cfg.method, "attack_steps": cfg.attack_steps, "langs": len(cfg.eval.langs),
                       "sentences": cfg.eval.max_sentences, "radii": list(cfg.eval.radii),
                       "xsts_langs": list(cfg.eval.xsts_langs)},
            "checkpoints": "not written (the trainable saves one per epoch through Ray; not timed here)",
            "study_projection": {"num_samples": budget.num_samples, "trials_per_gpu": per_gpu,
                                 "seconds": study, "hours": {k: v / 3600 for k, v in study.items()},
                                 "assumes": "trials sharing a GPU each run at the speed of one alone; see the "
                                            "study section's utilisation"}}


SECTIONS = [("environment", section_environment), ("encode", section_encode), ("train_step", section_train_step),
            ("memory", section_memory), ("evaluate", section_evaluate), ("bf16", section_bf16),
            ("study", section_study), ("trial", section_trial)]


# ----------------------------------------------------------------------------- report
def _fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _table(results: dict) -> list[str]:
    lines = []

    def row(section: str, what: str, value: str) -> None:
        lines.append(f"{section:<12} {what:<46} {value}")

    env = results.get("environment", {})
    if env.get("ok"):
        where = (f"{env['gpu']}, driver {env['driver']}, CUDA {env['cuda']}" if env.get("gpu")
                 else f"{env['cpu_model']}, {env['threads']} threads")
        row("environment", where, f"torch {env['torch']}")
    for name, section in results.items():
        if not section.get("ok", True):
            row(name, "FAILED", section["error"].splitlines()[0][:120])
    enc = results.get("encode", {})
    if enc.get("ok"):
        rate = enc["sentences_per_second"]
        for p in ("fp32", "bf16"):
            row("encode", f"Encoder {p} (token ids given)", f"{rate[f'Encoder {p}']:,.0f} sentences/s "
                f"({rate[f'Encoder, token ids given {p}']:,.0f}); {enc['tflops'][p]:.2f} TFLOP/s "
                f"(gemm {enc['gemm_tflops'][p]:.2f})")
            row("encode", f"plain loop / SentenceTransformer.encode {p}",
                f"{rate[f'plain loop {p}']:,.0f} / {rate[f'SentenceTransformer.encode {p}']:,.0f} sentences/s")
        row("encode", f"bf16 target {TARGET_BF16:,} sentences/s", "met" if enc["target_met"] else
            f"not met; profile: {', '.join(t['op'] for t in enc.get('profile_bf16', {}).get('top', [])[:3])}")
    step = results.get("train_step", {})
    if step.get("ok"):
        for r, v in step["by_ratio"].items():
            row("train_step", f"r={r} ({step['pairs_per_batch']} pairs, PGD-{step['pgd_steps']})",
                f"{v['ms_per_step']:.1f} ms, {v['pairs_per_second']:,.1f} pairs/s, {v['vs_r0']:.2f}x r=0 "
                f"(predicted {v['predicted_vs_r0']:.2f}x)")
        row("train_step", "marginal cost of r (0.5 = proportional)", f"{step['marginal_cost_of_r']:.3f}")
    mem = results.get("memory", {})
    if mem.get("ok"):
        gib = lambda b: "-" if b is None else f"{b / 2**30:.2f} GiB"  # noqa: E731
        row("memory", "train step peak at r=0 / 0.5 / 1",
            " / ".join(gib(mem["train"][r]["allocated"]) for r in ("0", "0.5", "1")))
        row("memory", "evaluation peak (last epoch)", f"{gib(mem['evaluation']['allocated'])} "
            f"in {mem['evaluation']['seconds']:.1f} s")
        if "fraction_allocated" in mem:
            row("memory", "fraction of the card: peak, 4 trials", f"{mem['fraction_allocated']:.3f}, "
                f"{mem['four_trials_fraction']:.3f} ({mem['four_trials_basis']}); fits 4: {mem['fits_four']}")
    ev = results.get("evaluate", {})
    if ev.get("ok"):
        row("evaluate", f"study path vs reference ({ev['budget']} budget)", f"{ev['speedup']:.2f}x "
            f"({ev['reference_seconds']:.1f} s vs {ev['study_seconds']:.1f} s); identical "
            f"{ev['figures_identical']}/{ev['figures']}")
    bf = results.get("bf16", {})
    if bf.get("ok"):
        row("bf16", f"min cosine bf16 vs fp32 ({bf['embedded']} sentences)", f"{bf['min_cosine']:.6f}")
        for name, a in bf["figures"].items():
            row("bf16", f"{name} ({bf['queries']} queries)", f"fp32 {a['fp32']:.2f}  bf16 {a['bf16']:.2f}  "
                f"diff {a['difference']:+.2f} points  {'pass' if a['pass'] else 'FAIL'}")
    st = results.get("study", {})
    if st.get("ok"):
        gpu = st.get("gpu")
        util = (f"GPU util mean {gpu['mean_util']:.0f}%, max {gpu['max_util']}%, memory "
                f"{gpu['max_memory_fraction']:.3f} of the card" if gpu else st["sampling"])
        row("study", f"{st['trials']} smoke trials at {st['gpus_per_trial']:g} GPU each",
            f"{st['finished']}/{st['trials']} FINISHED in {st['wall_seconds']:.0f} s; {util}")
    tr = results.get("trial", {})
    if tr.get("ok"):
        proj = tr["study_projection"]
        row("trial", "one gpu-budget trial" + ("" if tr["whole"] else " (projected)"), f"{tr['seconds']:.0f} s")
        row("trial", f"{proj['num_samples']}-trial study, {proj['trials_per_gpu']} a GPU: 1 / 8 GPUs",
            f"{proj['hours']['1_gpu']:.2f} h / {proj['hours']['8_gpu']:.2f} h")
    return lines


def headline(results: dict, device: torch.device) -> str:
    enc = results.get("encode", {})
    if not enc.get("ok"):
        return "headline: none (the encode section failed)"
    rate = enc["sentences_per_second"]
    if device.type == "cuda":
        return (f"bf16 over fp32 encoding throughput: {enc['bf16_over_fp32']:.2f}x ({rate['Encoder bf16']:,.0f} "
                f"against {rate['Encoder fp32']:,.0f} Tatoeba sentences/s; target {TARGET_BF16:,} in bf16 "
                f"{'met' if enc['target_met'] else 'not met'})")
    return (f"our encoder path over the plain loop (fp32, CPU): {enc['encoder_over_plain_fp32']:.2f}x "
            f"({rate['Encoder fp32']:,.0f} against {rate['plain loop fp32']:,.0f} sentences/s); bf16 over fp32 "
            f"{enc['bf16_over_fp32']:.2f}x")


def bench_gpu(args) -> int:
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu":  # the trainer and the study's trials pick CUDA whenever they see one
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        from study.errors import UsageError

        raise UsageError("--device cuda: no CUDA device here (use --device cpu)")
    run = Run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": args.device, "sizes": run.sizes, "time_limit": run.deadline - run.start,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": [name for name, _ in SECTIONS]}
    results = report["results"] = {}
    for number, (name, section) in enumerate(SECTIONS, 1):
        elapsed = time.perf_counter() - run.start
        print(f"[bench gpu] {number}/{len(SECTIONS)} {name}: started at {elapsed:.0f} s ({run.left():.0f} s left)",
              flush=True)
        start = time.perf_counter()
        try:
            results[name] = {"ok": True, **section(run)}
        except BaseException as err:  # SystemExit from bench_evaluate too; a Ctrl-C still stops the run
            results[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                             "traceback": traceback.format_exc()[-4000:]}
            print(f"[bench gpu] {name} FAILED: {type(err).__name__}: {str(err)[:500]}", flush=True)
            if isinstance(err, KeyboardInterrupt):
                raise
        results[name]["seconds_taken"] = time.perf_counter() - start
        report["seconds"] = time.perf_counter() - run.start
        _write(out, report)
        print(f"[bench gpu] {name}: {'done' if results[name]['ok'] else 'failed'} in "
              f"{results[name]['seconds_taken']:.1f} s", flush=True)
    failed = [name for name, r in results.items() if not r["ok"]]
    report.update(failed=failed, headline=headline(results, run.device))
    _write(out, report)
    print(f"\nstudy.bench gpu on {args.device}: {len(SECTIONS) - len(failed)} of {len(SECTIONS)} sections in "
          f"{report['seconds']:.0f} s; figures in {out}")
    print("\n".join(_table(results)))
    print(report["headline"])
    return 1 if failed else 0
