"""Randomized smoothing (rs-rp): random perturbations, no gradient search; radius and number of draws."""

from search_spaces import IntRange, LogUniform, Uniform

DESCRIPTION = "randomized smoothing rs-rp: r, noise radius (log scale) and samples per example"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    # random noise hurts far less than an attack of the same radius: search larger radii
    "epsilon": LogUniform(0.05, 4.0),
    "smoothing_samples": IntRange(1, 4),
}
FIXED = {"method": "rs-rp"}
