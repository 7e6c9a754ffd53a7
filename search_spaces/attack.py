"""Which adversary: the attack method, its number of steps and its step size, with r and epsilon."""

from search_spaces import Choice, IntRange, LogUniform, Uniform

DESCRIPTION = "r, epsilon, attack method (pgd/fgsm/freelb), steps K and step size alpha/epsilon (pgd/freelb)"
SPACE = {
    "ratio": Uniform(0.0, 1.0),
    "epsilon": LogUniform(0.01, 4.0),  # the range of hybrid_ratio, justified there from the word-vector norms
    "method": Choice(("pgd", "fgsm", "freelb")),
    "attack_steps": IntRange(1, 5),
    "step_ratio": LogUniform(0.25, 2.5),
}
# FGSM takes one step of size epsilon: its trials do not sample K and alpha/epsilon
ONLY_WHEN = {"attack_steps": ("method", ("pgd", "freelb")), "step_ratio": ("method", ("pgd", "freelb"))}
