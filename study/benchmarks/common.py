"""What the benchmarks share: synchronised timings, interleaved rounds, Tatoeba sentences, a device's
matrix-product rate, and the plain transformers loop the Encoder is measured against."""

from __future__ import annotations

import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_mean_times(runs: dict, rounds: int, device) -> tuple[dict, dict]:
    """(outputs of a warm-up call, seconds of `rounds` calls) of each function, interleaved round by round."""
    outputs = {name: fn() for name, fn in runs.items()}
    seconds: dict = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return outputs, {name: statistics.mean(s) for name, s in seconds.items()}


def tatoeba_sentences(data_dir, langs: list[str], per_lang: int) -> list[str]:
    from study.evaluation.data import load_tatoeba

    out: list[str] = []
    for lang in langs:
        pairs = load_tatoeba(lang, data_dir, per_lang)
        out += list(pairs["source"]) + list(pairs["english"])
    return out


def gemm_flop_rate(device: torch.device, hidden: int, intermediate: int, rows: int = 1024,
               dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an encoder's biggest matrix product ([rows, hidden] @ [hidden, intermediate]) on this device:
    what its linear layers could reach at best."""
    a = torch.randn(rows, hidden, device=device, dtype=dtype)
    b = torch.randn(hidden, intermediate, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start, repeats = time.perf_counter(), 50
    for _ in range(repeats):
        a @ b
    sync(device)
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
