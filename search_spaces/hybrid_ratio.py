"""The headline study: how much of each batch to make adversarial, and how far to push it."""

from search_spaces import LogUniform, Uniform

DESCRIPTION = "mix ratio r in [0, 1] and radius epsilon (log scale), PGD: the headline study"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    # L2 per token; word vectors of e5-small have norm ~1.6, and PGD-3 at 0.2 already breaks retrieval
    "epsilon": LogUniform(0.01, 1.0),
}
FIXED = {"method": "pgd"}
