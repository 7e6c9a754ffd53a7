"""Randomized smoothing, the two kinds of Huang et al. (2021): rs-rp (random perturbations of the word vectors,
no gradient search: radius and number of draws) and rs-da (random WordNet synonym substitution: its rate)."""

from search_spaces import Choice, IntRange, LogUniform, Uniform

DESCRIPTION = "randomized smoothing: r, method rs-rp (noise radius, samples) or rs-da (synonym substitution rate)"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    "method": Choice(("rs-rp", "rs-da")),
    # random noise hurts far less than an attack of the same radius: search larger radii
    "epsilon": LogUniform(0.05, 4.0),
    "smoothing_samples": IntRange(1, 4),
    "substitution_rate": Uniform(0.05, 0.5),
}
ONLY_WHEN = {"epsilon": ("method", ("rs-rp",)), "smoothing_samples": ("method", ("rs-rp",)),
             "substitution_rate": ("method", ("rs-da",))}
