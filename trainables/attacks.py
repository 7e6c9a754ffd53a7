"""Perturbations in the encoder's input-embedding space (the word vectors fed as `inputs_embeds`).

Each attack is a small object holding its budget, with one call
    attack(inputs [B, T, H], mask [B, T], loss_fn) -> perturbed inputs [B, T, H]
where `loss_fn(perturbed inputs) -> scalar` is the loss the attack pushes up.

The budget: `eps`, the radius, under `norm`:
  "l2"   (default) per token: every token's perturbation vector has Euclidean norm <= eps;
  "linf" every coordinate of the perturbation lies in [-eps, eps].
Padding positions (mask 0) are never perturbed.

Two attacks *train while they perturb* (`accumulates_parameter_gradients = True`): they call
`backward()` on `loss_fn(...) / steps` themselves, so parameter gradients accumulate over their
perturbations and the caller does not run a final pass over the perturbed inputs:
  FreeLB (Zhu et al., 2020): the gradient of every ascent step is kept, the "free" adversarial training;
  RandomPerturbation (randomized smoothing, rs-rp in Huang et al., 2021): the mean loss over random draws.
"""

from __future__ import annotations

import torch

NORMS = ("l2", "linf")


def random_in_ball(inputs: torch.Tensor, mask: torch.Tensor, eps: float, norm: str,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A perturbation drawn uniformly from the eps-ball (per token for l2), zero on padding."""
    shape, device = inputs.shape, inputs.device
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator, device=device) * 2 - 1) * eps
    else:
        direction = torch.randn(shape, generator=generator, device=device)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        # radius ~ eps * U^(1/d) makes the draw uniform in the d-dimensional ball, not on its shell
        u = torch.rand(shape[:-1] + (1,), generator=generator, device=device)
        delta = direction * eps * u.pow(1.0 / shape[-1])
    return delta * mask.unsqueeze(-1).to(delta.dtype)


def default_alpha(eps: float, steps: int) -> float:
    """The step size when none is given: 2.5 * eps / steps (Madry et al.'s rule: K steps can cross the ball
    and come back)."""
    return 2.5 * eps / max(steps, 1)


class EmbeddingAttack:
    """Budget and geometry shared by all attacks."""

    name = "base"
    accumulates_parameter_gradients = False

    def __init__(self, eps: float, norm: str = "l2", generator: torch.Generator | None = None):
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.eps, self.norm, self.generator = eps, norm, generator

    def project(self, delta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Nearest point of the eps-ball, zero on padding."""
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            scale = (self.eps / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * scale
        return delta * mask.unsqueeze(-1).to(delta.dtype)

    def ascent_direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Steepest ascent direction of unit size under the norm."""
        if self.norm == "linf":
            return grad.sign()
        return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def random_start(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return random_in_ball(inputs, mask, self.eps, self.norm, self.generator)

    def forward(self, inputs, mask, loss_fn):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, inputs: torch.Tensor, mask: torch.Tensor, loss_fn) -> torch.Tensor:
        return self.forward(inputs, mask, loss_fn)

    def __repr__(self) -> str:
        budget = ", ".join(f"{k}={v}" for k, v in vars(self).items() if k != "generator")
        return f"{type(self).__name__}({budget})"


class PGD(EmbeddingAttack):
    """Projected gradient ascent (Madry et al.): `steps` steps of size `alpha` from a random start."""

    name = "pgd"

    def __init__(self, eps: float, steps: int = 3, alpha: float | None = None, norm: str = "l2",
                 random_start: bool = True, generator: torch.Generator | None = None):
        super().__init__(eps, norm, generator)
        self.steps = steps
        self.alpha = alpha if alpha is not None else default_alpha(eps, steps)
        self.use_random_start = random_start

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, loss_fn) -> torch.Tensor:
        inputs = inputs.detach()
        delta = self.random_start(inputs, mask) if self.use_random_start else torch.zeros_like(inputs)
        for _ in range(self.steps):
            delta.requires_grad_(True)
            # autograd.grad: the gradient reaches delta only; parameters collect nothing
            (grad,) = torch.autograd.grad(loss_fn(inputs + delta), delta)
            delta = self.project(delta.detach() + self.alpha * self.ascent_direction(grad), mask)
        return (inputs + delta).detach()


class FGSM(PGD):
    """One signed/normalised gradient step of size eps from the clean point (Goodfellow et al.)."""

    name = "fgsm"

    def __init__(self, eps: float, norm: str = "l2", generator: torch.Generator | None = None, **_):
        super().__init__(eps, steps=1, alpha=eps, norm=norm, random_start=False, generator=generator)


class FreeLB(EmbeddingAttack):
    """FreeLB: `steps` ascent steps; each step's loss / steps is back-propagated into the parameters too,
    so training uses the gradient averaged over the whole ascent. Returns the last perturbation trained on."""

    name = "freelb"
    accumulates_parameter_gradients = True

    def __init__(self, eps: float, steps: int = 3, alpha: float | None = None, norm: str = "l2",
                 generator: torch.Generator | None = None):
        super().__init__(eps, norm, generator)
        self.steps = steps
        self.alpha = alpha if alpha is not None else default_alpha(eps, steps)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, loss_fn) -> torch.Tensor:
        inputs = inputs.detach()
        delta = self.random_start(inputs, mask)
        for step in range(self.steps):
            delta.requires_grad_(True)
            (loss_fn(inputs + delta) / self.steps).backward()
            if step == self.steps - 1:
                break
            delta = self.project(delta.detach() + self.alpha * self.ascent_direction(delta.grad), mask)
        return (inputs + delta).detach()


class RandomPerturbation(EmbeddingAttack):
    """Randomized smoothing by random perturbation (rs-rp): `samples` draws uniform in the eps-ball, no
    gradient search; trains on the mean loss over the draws. Returns the last draw."""

    name = "rs-rp"
    accumulates_parameter_gradients = True

    def __init__(self, eps: float, samples: int = 1, norm: str = "l2",
                 generator: torch.Generator | None = None, **_):
        super().__init__(eps, norm, generator)
        self.samples = samples

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, loss_fn) -> torch.Tensor:
        inputs = inputs.detach()
        for _ in range(self.samples):
            perturbed = inputs + self.random_start(inputs, mask)
            (loss_fn(perturbed) / self.samples).backward()
        return perturbed


ATTACKS = {cls.name: cls for cls in (PGD, FGSM, FreeLB, RandomPerturbation)}


def make_attack(method: str, eps: float, steps: int = 3, step_ratio: float | None = None, norm: str = "l2",
                samples: int = 1, generator: torch.Generator | None = None) -> EmbeddingAttack:
    """An attack from a trial config: alpha = step_ratio * eps (default: `default_alpha`)."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack method {method!r} (one of {', '.join(ATTACKS)})")
    alpha = step_ratio * eps if step_ratio is not None else None
    if method in ("pgd", "freelb"):
        return ATTACKS[method](eps, steps=steps, alpha=alpha, norm=norm, generator=generator)
    if method == "rs-rp":
        return RandomPerturbation(eps, samples=samples, norm=norm, generator=generator)
    return FGSM(eps, norm=norm, generator=generator)
