"""The headline study: how much of each batch to make adversarial, and how far to push it."""

from search_spaces import LogUniform, Uniform

DESCRIPTION = "mix ratio r in [0, 1] and radius epsilon (log scale), PGD: the headline study"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    # L2 per token. The word vectors of e5-small have norm 1.60 (median; 5-95%: 1.40-1.74) and two tokens of a
    # sentence lie 2.07 apart (median; 95%: 2.44), so 4.0 lets a perturbed token reach any other word vector:
    # the range spans "barely moves a token" (0.01; PGD-3 at 0.02 costs ~4 points of accuracy) to "replaces it"
    # (the evaluation attack reaches 0% at 0.5 already, so training may want radii well beyond it).
    "epsilon": LogUniform(0.01, 4.0),
}
FIXED = {"method": "pgd"}
