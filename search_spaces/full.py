"""Everything that plausibly matters: hybrid-batch knobs plus the optimisation recipe."""

from search_spaces import Choice, IntRange, LogUniform, Uniform

DESCRIPTION = "r, epsilon, method (incl. rs-da), learning rate, temperature, epochs and embedding freezing"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    "epsilon": LogUniform(0.01, 4.0),  # the range of hybrid_ratio, justified there from the word-vector norms
    "method": Choice(("pgd", "fgsm", "freelb", "rs-rp", "rs-da")),
    "lr": LogUniform(5e-6, 1e-4),
    "temperature": LogUniform(0.02, 0.1),
    "epochs": IntRange(1, 3),
    "freeze_embeddings": Choice((True, False)),
}
# rs-da substitutes words (at TrialConfig's substitution_rate): it has no radius
ONLY_WHEN = {"epsilon": ("method", ("pgd", "fgsm", "freelb", "rs-rp"))}
