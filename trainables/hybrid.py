"""The hybrid batch: in every step a share r of the pairs is adversarial, the rest clean.

A batch is n English pairs (anchor_i, positive_i). round(r * n) of them, chosen at random (seeded),
become adversarial: their anchors (and, with perturb="both", their positives) are perturbed in the
input-embedding space within radius epsilon by the attack (by default not on [CLS], [SEP] and the "query: "
prefix), or, for rs-da, get some of their words replaced by WordNet synonyms. The loss is the
in-batch-negatives contrastive loss over the whole batch, clean and adversarial pairs together, so each
adversarial anchor is still scored against every positive in the batch.

Cost: the attack runs only on the adversarial sentences, never on the whole batch behind a mask.
Sentences through the encoder per step (n pairs, a adversarial sentences, K attack steps):
    plain fine-tuning   2n
    pgd                 2n + K a     (K ascent passes; the final pass replaces the clean one)
    fgsm                2n + a
    freelb              2n + (K - 1) a
    rs-rp (m samples)   2n + (m - 1) a
    rs-da               2n           (the adversarial share's words replaced by synonyms, then a plain step)
With r = 0 the step is plain fine-tuning, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from study.encoder.embedding import pad_batch, sentence_embedding
from trainables.attacks import EmbeddingAttack, SynonymSubstitution
from trainables.losses import InBatchContrastiveLoss


@dataclass
class PairBatch:
    """Token ids (unpadded) of n anchors and their n positives."""

    anchors: list[list[int]]
    positives: list[list[int]]

    def __len__(self) -> int:
        return len(self.anchors)


def adversarial_count(ratio: float, n: int) -> int:
    """round(r * n), halves rounded up (Python's round() would round 0.5 to even)."""
    return int(math.floor(ratio * n + 0.5))


def choose_adversarial(n: int, ratio: float, generator: torch.Generator) -> tuple[list[int], list[int]]:
    """(clean indices, adversarial indices), a seeded random split of range(n)."""
    k = adversarial_count(ratio, n)
    if k == 0:
        return list(range(n)), []
    order = torch.randperm(n, generator=generator, device=generator.device).tolist()  # a host generator: no sync
    return sorted(order[k:]), sorted(order[:k])


def _encode(model, token_ids: Sequence[Sequence[int]], pad_id: int, device) -> torch.Tensor:
    if not token_ids:  # r = 1 leaves no clean sentences
        return torch.empty((0, model.config.hidden_size), device=device)
    input_ids, mask = pad_batch(token_ids, pad_id, device)
    return sentence_embedding(model, mask, input_ids=input_ids)


def plain_step(model, batch: PairBatch, loss_fn: InBatchContrastiveLoss, pad_id: int,
               autocast=nullcontext) -> torch.Tensor:
    """Plain contrastive fine-tuning: encode anchors, encode positives, loss, backward. Returns the loss, detached,
    on the model's device (reading it would wait for the device: the caller reads once, when it reports)."""
    device = next(model.parameters()).device
    with autocast():
        anchors = _encode(model, batch.anchors, pad_id, device)
        positives = _encode(model, batch.positives, pad_id, device)
    loss = loss_fn(anchors, positives)
    loss.backward()
    return loss.detach()


def substituted(batch: PairBatch, adv: list[int], attack: SynonymSubstitution, both: bool) -> PairBatch:
    """The batch with the adversarial anchors (and, `both`, their positives) passed through `attack.substitute`."""
    anchors, positives = list(batch.anchors), list(batch.positives)
    for rows, wanted in ((anchors, True), (positives, both)):
        if wanted:
            for i, ids in zip(adv, attack.substitute([rows[i] for i in adv])):
                rows[i] = ids
    return PairBatch(anchors, positives)


def hybrid_step(model, batch: PairBatch, loss_fn: InBatchContrastiveLoss, *,
                attack: EmbeddingAttack | SynonymSubstitution | None, ratio: float, generator: torch.Generator,
                pad_id: int, perturb: str = "anchor", autocast=nullcontext,
                perturbable=None) -> tuple[torch.Tensor, int]:
    """One hybrid-batch step: round(r n) pairs made adversarial, the loss over the whole batch, backward.

    Args:
        model: the encoder (a transformers model taking `inputs_embeds`); its parameters receive gradients.
        batch: n (anchor, positive) pairs of token ids.
        loss_fn: the in-batch contrastive loss over all n pairs, clean and adversarial together.
        attack: perturbs the adversarial sentences' input embeddings within its eps-ball; None = plain step.
        ratio: r, the share of pairs made adversarial (`adversarial_count`).
        generator: draws which pairs are adversarial (seeded: a restored trial draws the same).
        pad_id: the tokenizer's padding id.
        perturb: "anchor" perturbs the adversarial anchors; "both" their positives too.
        autocast: the encoder's autocast context (bf16 on CUDA).
        perturbable: (input_ids, attention mask) -> the positions the attack may move (e.g.
            `Encoder.perturbable_mask`: not [CLS], [SEP] and the prefix); None: every real token.

    Gradient contract: on return the parameters' `.grad` hold d loss / d theta (added to what was there; the
    caller zeroes, clips and steps). How the adversarial part gets there depends on the attack:
      - `attack.accumulates_parameter_gradients` False (PGD, FGSM): the attack only computes gradients with
        respect to its perturbation (`torch.autograd.grad`); here one final pass at the perturbed point, from
        the live embedding table, is back-propagated into the parameters.
      - True (FreeLB, rs-rp): the attack itself calls `backward()` on each loss it evaluates, divided by
        its number of evaluations, so the parameters hold the mean gradient over its perturbations; no final
        pass is run, and the loss returned is the mean of the losses it saw.
    The clean sentences enter every loss as detached leaves; their gradients are collected over all passes
    and sent through the clean graphs once, at the end. When the word-embedding table is trainable, every loss
    of the adversarial sentences is computed from the live table plus the perturbation, so the table's rows
    receive the adversarial gradient for every attack (the attack itself sees the word vectors as constants).
    rs-da (`attack.substitutes_tokens`) is no embedding attack: the adversarial share's words are replaced by
    synonyms (`substituted`) and the step is a plain step on that batch.

    Returns: (loss, detached, on the model's device: nothing in the step waits for the device; number of
    adversarial pairs).
    """
    n = len(batch)
    clean, adv = choose_adversarial(n, ratio, generator)
    if not adv or attack is None:
        return plain_step(model, batch, loss_fn, pad_id, autocast), 0
    both = perturb == "both"
    if getattr(attack, "substitutes_tokens", False):
        return plain_step(model, substituted(batch, adv, attack, both), loss_fn, pad_id, autocast), len(adv)
    device = next(model.parameters()).device

    # Rows are ordered clean first, then adversarial: anchors[j] pairs with positives[j].
    with autocast():
        clean_anchors = _encode(model, [batch.anchors[i] for i in clean], pad_id, device)
        positive_rows = clean if both else clean + adv
        clean_positives = _encode(model, [batch.positives[i] for i in positive_rows], pad_id, device)
    # Detached stand-ins: the attack and the adversarial loss see the clean embeddings as constants
    # (leaves); their gradients are collected and sent through the clean graphs once, at the end.
    anchor_leaf = clean_anchors.detach().requires_grad_(True)
    positive_leaf = clean_positives.detach().requires_grad_(True)

    adv_ids = [batch.anchors[i] for i in adv] + ([batch.positives[i] for i in adv] if both else [])
    input_ids, mask = pad_batch(adv_ids, pad_id, device)
    embed_layer = model.get_input_embeddings()
    clean_inputs = embed_layer(input_ids).detach()
    attack_mask = perturbable(input_ids, mask) if perturbable else mask
    table_trains = embed_layer.weight.requires_grad

    losses_seen: list[torch.Tensor] = []

    def batch_loss(perturbed_inputs: torch.Tensor) -> torch.Tensor:
        """Contrastive loss of the whole batch with the adversarial sentences at `perturbed_inputs`."""
        if table_trains:  # the same point, as the live table plus the perturbation: the table's rows get gradients
            perturbed_inputs = embed_layer(input_ids) + (perturbed_inputs - clean_inputs)
        with autocast():
            adv_emb = sentence_embedding(model, mask, inputs_embeds=perturbed_inputs)
        adv_anchors, adv_positives = adv_emb[: len(adv)], adv_emb[len(adv):]
        anchors = torch.cat([anchor_leaf, adv_anchors])
        positives = torch.cat([positive_leaf, adv_positives]) if both else positive_leaf
        loss = loss_fn(anchors, positives)
        losses_seen.append(loss.detach())
        return loss

    perturbed = attack(clean_inputs, attack_mask, batch_loss)
    if attack.accumulates_parameter_gradients:  # it trained on every loss it saw: report their mean
        loss_value = torch.stack(losses_seen).mean()
    else:  # one final pass at the perturbed point, back-propagated into the parameters
        loss = batch_loss(perturbed)
        loss.backward()
        loss_value = loss.detach()
    live = [(t, leaf.grad) for t, leaf in ((clean_anchors, anchor_leaf), (clean_positives, positive_leaf))
            if t.requires_grad and leaf.grad is not None]
    if live:
        torch.autograd.backward([t for t, _ in live], [g for _, g in live])
    return loss_value, len(adv)
