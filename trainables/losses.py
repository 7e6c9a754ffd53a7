"""In-batch-negatives contrastive loss (InfoNCE): sentence-transformers' MultipleNegativesRankingLoss with
scale = 1 / temperature and cosine similarity, on embeddings already computed.

It is kept apart from sentence-transformers' loss because the hybrid batch embeds its adversarial anchors
from perturbed `inputs_embeds` (trainables/hybrid.py) and needs the loss of precomputed embeddings, per
example; MNRL embeds its own batch from token features. tests/test_interop.py checks that both give the same
loss and gradients on the same embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InBatchContrastiveLoss(nn.Module):
    """anchors [n, H] and positives [n, H], L2-normalised, row i of each a pair ->
    mean over i of  -log softmax_j( anchors_i . positives_j / temperature )[i]:
    every anchor is scored against every positive in the batch, the others acting as negatives."""

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature

    def per_example(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        logits = anchors @ positives.T / self.temperature
        targets = torch.arange(len(anchors), device=anchors.device)
        return F.cross_entropy(logits, targets, reduction="none")

    def forward(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        return self.per_example(anchors, positives).mean()
