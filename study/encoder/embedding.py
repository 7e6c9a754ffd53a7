"""Sentence embeddings, the one place they are computed (training, attacks, evaluation).

Convention of the e5 family: every sentence gets the prefix "query: " (symmetric tasks such as bitext
retrieval use it on both sides), token states are mean-pooled over the attention mask, and the result is
L2-normalised so that a dot product is a cosine.

Why not sentence-transformers' `SentenceTransformer` here: it computes the same embeddings (the model that
`study.export` writes is one, checked against `Encoder.embed` to cosine >= 0.9999), but the attacks and the
hybrid batches need the embeddings of *perturbed input embeddings* with gradients (`sentence_embedding(...,
inputs_embeds=...)`), which its `encode` does not offer; and for evaluation, batching by a token budget
rather than a fixed batch size is faster (`python -m study.bench encode` measures both against a plain loop).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F

QUERY_PREFIX = "query: "  # the e5 convention, on both sides of a symmetric task (bitext retrieval)

# Tokens per sentence, prefix and special tokens included, wherever a sentence is tokenised: the trials'
# training (TrialConfig.max_seq_len's default), every evaluation (trials, the untrained reference, study.evaluate).
# 128 truncates no Tatoeba sentence of the default languages (the longest: 108) and no English training pair (87).
MAX_LENGTH = 128


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, H], mask [B, T] -> mean over unmasked tokens [B, H]."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def sentence_embedding(model, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
                       inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised sentence embeddings [B, H] from token ids or from input embeddings (word vectors,
    possibly perturbed: position and type embeddings are added inside the model, after them)."""
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask)
    return F.normalize(mean_pool(out.last_hidden_state, attention_mask).float(), dim=-1)


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad a list of token-id lists -> (input_ids [B, T], attention_mask [B, T]). To a GPU through pinned
    memory without blocking: a plain host-to-device copy waits for all queued device work (once per batch)."""
    width = max(len(ids) for ids in token_ids)
    # padded as lists, one tensor each: the same operators for any number of rows
    input_ids = torch.tensor([list(ids) + [pad_id] * (width - len(ids)) for ids in token_ids], dtype=torch.long)
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in token_ids], dtype=torch.long)
    if torch.device(device).type == "cuda":
        return input_ids.pin_memory().to(device, non_blocking=True), mask.pin_memory().to(device, non_blocking=True)
    return input_ids.to(device), mask.to(device)


def length_sorted_batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> Iterator[list[int]]:
    """Indices grouped by similar length, each batch holding at most max_tokens padded tokens:
    short sentences travel in big batches, long ones in small, and little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * lengths[i] > max_tokens or len(batch) == max_batch:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


class Encoder:
    """A transformers encoder with the e5 embedding convention.

    `embed(sentences) -> [N, H]` (no gradients, length-batched, original order kept) for evaluation;
    `tokenize` + `sentence_embedding` for training and attacks, which need gradients.
    """

    def __init__(self, model, tokenizer, max_length: int = MAX_LENGTH, max_tokens: int | None = None,
                 max_batch: int = 256, prefix: str = QUERY_PREFIX):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        # padded tokens per batch. CPU: 1,024 (a core's matmuls reach full speed at ~1,000 rows, and small
        # batches span narrow length ranges, so little goes to padding); GPU: 8,192 (it needs big batches)
        self.max_tokens = max_tokens or (8192 if self.device.type == "cuda" else 1024)
        self.max_batch = max_batch
        self.prefix = prefix

    @classmethod
    def load(cls, name_or_path: str, device: str | torch.device | None = None, **kwargs) -> Encoder:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path, use_safetensors=True, add_pooling_layer=False)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model.to(device).eval(), tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def tokenize(self, sentences: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Prefixed token ids, unpadded, truncated to `max_length` tokens (default: the encoder's)."""
        encoded = self.tokenizer([self.prefix + s for s in sentences], truncation=True,
                                 max_length=max_length or self.max_length, add_special_tokens=True)
        return encoded["input_ids"]

    def text_of(self, token_ids: Sequence[int]) -> str:
        """The sentence behind `tokenize`'s ids: special tokens and the prefix removed."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return text[len(self.prefix):] if text.startswith(self.prefix) else text.removeprefix(self.prefix.strip())

    @property
    def prefix_length(self) -> int:
        """Tokens the prefix takes after [CLS] ("query: " -> '▁que', 'ry', ':')."""
        return len(self.tokenizer(self.prefix.strip(), add_special_tokens=False)["input_ids"])

    def perturbable_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The positions an attack may move: the attention mask without the special tokens ([CLS], [SEP])
        and the prefix tokens, which every sentence shares (they are ~5 of ~15 tokens of a Tatoeba sentence)."""
        # compared with scalars: a tensor of the ids built here would be a host-to-device copy that waits
        special = (input_ids == self.tokenizer.cls_token_id) | (input_ids == self.tokenizer.sep_token_id)
        keep = attention_mask.masked_fill(special, 0)
        keep[:, 1 : 1 + self.prefix_length] = 0
        return keep

    def autocast(self):
        """bf16 autocast on CUDA (fast, and no loss scaling needed); plain fp32 on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def batches(self, token_ids: Sequence[Sequence[int]]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """(indices, input_ids, attention_mask) in length-sorted batches."""
        for idx in length_sorted_batches([len(t) for t in token_ids], self.max_tokens, self.max_batch):
            input_ids, mask = pad_batch([token_ids[i] for i in idx], self.pad_id, self.device)
            yield idx, input_ids, mask

    @torch.inference_mode()
    def embed(self, sentences: Sequence[str] | None = None, token_ids=None) -> torch.Tensor:
        """Normalised embeddings [N, H] on the CPU, in input order."""
        token_ids = token_ids if token_ids is not None else self.tokenize(sentences)
        out = torch.empty((len(token_ids), self.model.config.hidden_size))
        with self.autocast():
            for idx, input_ids, mask in self.batches(token_ids):
                out[idx] = sentence_embedding(self.model, mask, input_ids=input_ids).cpu()
        return out
