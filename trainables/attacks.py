"""Perturbations in the encoder's input-embedding space (the word vectors fed as `inputs_embeds`).

Each attack is a small object holding its budget, with one call
    attack(inputs [B, T, H], mask [B, T], loss_fn) -> perturbed inputs [B, T, H]
where `loss_fn(perturbed inputs) -> scalar` is the loss the attack pushes up.

The budget: `eps`, the radius, under `norm`:
  "l2"   (default) per token: every token's perturbation vector has Euclidean norm <= eps;
  "linf" every coordinate of the perturbation lies in [-eps, eps].
Padding positions (mask 0) are never perturbed. Random draws come from `generator`: a torch.Generator for the
batch (training), or `RowStreams`, one counter-based stream per example drawn for the whole batch at once
(evaluation: an example's draws are then the same in any batch, see `random_in_ball`).

Two attacks *train while they perturb* (`accumulates_parameter_gradients = True`): they call
`backward()` on `loss_fn(...) / steps` themselves, so parameter gradients accumulate over their
perturbations and the caller does not run a final pass over the perturbed inputs:
  FreeLB (Zhu et al., 2020): the gradient of every ascent step is kept, the "free" adversarial training;
  RandomPerturbation (randomized smoothing, rs-rp in Huang et al., 2021): the mean loss over random draws.

`mask` says which positions the attack may move: the caller passes the attention mask, or (the default of
`TrialConfig.perturb_special` and `EvalConfig.perturb_special`) the attention mask without [CLS], [SEP] and the
"query: " prefix (`study.encoder.embedding.Encoder.perturbable_mask`), so the budget goes to the sentence's own words.

Two more, outside the embedding-space interface above:
  RestartPGD, the strong evaluation attack: PGD with random restarts on a per-example loss (the evaluation
    gives it a margin against the nearest wrong candidate), keeping each example's most damaging point;
  SynonymSubstitution (rs-da, randomized smoothing by data augmentation in Huang et al., 2021): it replaces
    words of the adversarial sentences' token ids by WordNet synonyms (`substitute`), no embeddings involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

NORMS = ("l2", "linf")


MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(x * factor) mod 2^32 for x, factor < 2^32, in int64 without overflow (16-bit halves: products < 2^48)."""
    return ((x & 0xFFFF) * factor + ((((x >> 16) * factor) & 0xFFFF) << 16)) & MASK32


def _hash32(x):
    """C. Wellons' lowbias32: a bijection of 32-bit integers with good avalanche; int64 tensors or Python ints."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class RowStreams:
    """Random streams for the rows of a batch, one per seed, each row's draws independent of the batch.

    Counter-based: the value row i gets at element e of its k-th draw is a hash of (seeds[i], k, e), with e the
    flat index over the trailing dimensions (position * width + coordinate: batch width and padding sit at the
    end, so they do not move it). Every draw is one vectorised computation for all rows: a batch of any size costs
    the same kernels, with no generator per row and nothing read back to the host. Uniforms have 23 bits, in (0, 1);
    Gaussians come from pairs of them (Box-Muller, both outputs used)."""

    def __init__(self, seeds: Sequence[int], device=None):
        folded = [(int(s) ^ (int(s) >> 32)) & MASK32 for s in seeds]  # crc32 seeds fit; larger ones are folded
        keys = torch.tensor(folded, dtype=torch.int64)
        if device is not None and torch.device(device).type == "cuda":  # a pageable copy would wait for the device
            keys = keys.pin_memory()
        self.keys = keys.to(device, non_blocking=True)
        self.draws = 0  # draws made so far: the k of the next one, the same for every row

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def _bits(self, rows_shape: tuple[int, ...], count: int) -> torch.Tensor:
        """[rows, count] hashes of (row key, this draw, element 0..count-1), in [0, 2^32)."""
        salt = _hash32((self.draws * 0x9E3779B9 + 0x7F4A7C15) & MASK32)  # the draw's own key, host arithmetic
        self.draws += 1
        row_keys = _hash32(self.keys ^ salt).view(-1, *([1] * len(rows_shape)))
        counters = _hash32(torch.arange(count, dtype=torch.int64, device=self.device)).view(rows_shape)
        return _hash32(counters ^ row_keys)

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform in (0, 1), float32, shape [rows, ...]."""
        shape = tuple(shape)
        count = math.prod(shape[1:])
        bits = self._bits((count,), count)
        # odd multiples of 2^-24: exact in float32, never 0 or 1
        return (((bits >> 9) * 2 + 1).float() * 2.0**-24).view(shape)

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard Gaussian, float32, shape [rows, ...]: element 2p and 2p + 1 from the p-th uniform pair."""
        shape = tuple(shape)
        count = math.prod(shape[1:])
        pairs = (count + 1) // 2
        bits = self._bits((pairs, 2), 2 * pairs)
        u = ((bits >> 9) * 2 + 1).float() * 2.0**-24
        radius, angle = (-2.0 * u[..., 0].log()).sqrt(), (2 * math.pi) * u[..., 1]
        z = torch.stack((radius * angle.cos(), radius * angle.sin()), dim=-1).flatten(1)
        return z[:, :count].reshape(shape)


def _ball_draw(shape, eps: float, norm: str, generator, device) -> torch.Tensor:
    """Vectors of the last dimension drawn uniformly from the eps-ball (per vector for l2)."""
    if isinstance(generator, RowStreams):
        uniform, normal = generator.uniform, generator.normal
    else:
        uniform = lambda size: torch.rand(size, generator=generator, device=device)
        normal = lambda size: torch.randn(size, generator=generator, device=device)
    if norm == "linf":
        return (uniform(shape) * 2 - 1) * eps
    direction = normal(shape)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # radius ~ eps * U^(1/d) makes the draw uniform in the d-dimensional ball, not on its shell
    u = uniform(tuple(shape[:-1]) + (1,))
    return direction * eps * u.pow(1.0 / shape[-1])


def random_in_ball(inputs: torch.Tensor, mask: torch.Tensor, eps: float, norm: str,
                   generator: torch.Generator | RowStreams | None = None) -> torch.Tensor:
    """A perturbation drawn uniformly from the eps-ball (per token for l2), zero where `mask` is 0.

    `generator`: a torch.Generator for the whole batch, or `RowStreams` with one seed per row; then row i's draw
    at each position depends on its seed alone, so it is the same whatever batch (and padding) the row travels in
    (the draw is made at every position, padding too, and masked: one computation for the batch)."""
    delta = _ball_draw(inputs.shape, eps, norm, generator, inputs.device)
    return (delta * mask.unsqueeze(-1).to(delta.dtype)).to(inputs.dtype)


def default_alpha(eps: float, steps: int) -> float:
    """The step size when none is given: 2.5 * eps / steps (Madry et al.'s rule: K steps can cross the ball
    and come back)."""
    return 2.5 * eps / max(steps, 1)


class EmbeddingAttack:
    """Budget and geometry shared by all attacks."""

    name = "base"
    accumulates_parameter_gradients = False

    def __init__(self, eps: float, norm: str = "l2",
                 generator: torch.Generator | RowStreams | None = None):
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
                 random_start: bool = True, generator: torch.Generator | RowStreams | None = None):
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


class RestartPGD(PGD):
    """The strong evaluation attack: `restarts` runs of PGD-`steps`, each from a fresh random start in the ball.

    loss_fn(perturbed inputs [B, T, H]) -> per-example losses [B] (not a scalar); the ascent follows their sum
    (examples do not interact in an encoder in eval mode). Every example keeps the point with its highest loss
    over all steps and restarts. Loss > `success` counts as broken (the evaluation's margin loss is > 0 exactly
    when a wrong candidate is retrieved): when every example is broken, the remaining restarts are skipped.
    Returns the kept points [B, T, H], detached."""

    name = "pgd-restarts"

    def __init__(self, eps: float, steps: int = 20, restarts: int = 3, alpha: float | None = None,
                 norm: str = "l2", success: float = 0.0, generator: torch.Generator | RowStreams | None = None):
        super().__init__(eps, steps=steps, alpha=alpha, norm=norm, random_start=True, generator=generator)
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        self.restarts, self.success = restarts, success

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor, loss_fn) -> torch.Tensor:
        inputs = inputs.detach()
        best = inputs.clone()
        with torch.no_grad():
            best_loss = loss_fn(inputs).detach().float()

        def keep(delta: torch.Tensor, losses: torch.Tensor) -> None:
            better = losses > best_loss
            best[better] = inputs[better] + delta[better]
            best_loss[better] = losses[better]

        for _ in range(self.restarts):
            if bool((best_loss > self.success).all()):
                break
            delta = self.random_start(inputs, mask)
            for _ in range(self.steps):
                delta.requires_grad_(True)
                losses = loss_fn(inputs + delta)
                (grad,) = torch.autograd.grad(losses.sum(), delta)
                keep(delta.detach(), losses.detach().float())
                delta = self.project(delta.detach() + self.alpha * self.ascent_direction(grad), mask)
            with torch.no_grad():
                keep(delta, loss_fn(inputs + delta).detach().float())
        return best


class SynonymSubstitution:
    """rs-da: each word of a sentence that has WordNet synonyms is, with probability `rate`, replaced by one of
    them drawn uniformly (seeded by `generator`). Works on token ids: `text_of(ids) -> sentence` (no prefix,
    no special tokens) and `tokenize(sentences) -> ids` (prefixed, truncated) are the encoder's.
    `substitute(token_ids) -> token ids` is all it does; `trainables.hybrid.hybrid_step` applies it to the
    adversarial share of a batch and trains a plain step on the result. `synonyms(word) -> tuple of words`
    (default: `trainables.synonyms.WordNetSynonyms`, which raises DataError without WordNet's files)."""

    name = "rs-da"
    substitutes_tokens = True
    accumulates_parameter_gradients = False
    WORD = re.compile(r"[A-Za-z]+")

    def __init__(self, rate: float, text_of, tokenize, synonyms=None, generator: torch.Generator | None = None):
        if not 0 <= rate <= 1:
            raise ValueError(f"substitution rate must lie in [0, 1], got {rate}")
        if synonyms is None:
            from trainables.synonyms import WordNetSynonyms

            synonyms = WordNetSynonyms().synonyms
        self.rate, self.text_of, self.tokenize, self.synonyms = rate, text_of, tokenize, synonyms
        self.generator = generator
        self.substituted = 0  # words replaced so far (a count for tests and logs)

    def substitute_texts(self, sentences: Sequence[str]) -> list[str]:
        """Every sentence with its words replaced as the class says. Two uniforms per word that has synonyms (replace
        it? which synonym?) drawn for the whole batch in one call on the generator's device, read back once."""
        words = [[(m, self.synonyms(m.group(0))) for m in self.WORD.finditer(s)] for s in sentences]
        count = sum(1 for found in words for _, options in found if options)
        device = self.generator.device if self.generator is not None else None
        draws = iter(torch.rand((count, 2), generator=self.generator, device=device).tolist() if count else [])
        out = []
        for sentence, found in zip(sentences, words):
            pieces, end = [], 0
            for match, options in found:
                if not options:
                    continue
                replace, pick = next(draws)
                if replace >= self.rate:
                    continue
                choice = options[min(int(pick * len(options)), len(options) - 1)]
                self.substituted += 1
                word = match.group(0)
                pieces += [sentence[end : match.start()], choice.capitalize() if word[0].isupper() else choice]
                end = match.end()
            out.append("".join(pieces) + sentence[end:])
        return out

    def substitute(self, token_ids: list[list[int]]) -> list[list[int]]:
        return self.tokenize(self.substitute_texts([self.text_of(ids) for ids in token_ids]))

    def __repr__(self) -> str:
        return f"SynonymSubstitution(rate={self.rate})"


ATTACKS = {cls.name: cls for cls in (PGD, FGSM, FreeLB, RandomPerturbation, SynonymSubstitution)}


def make_attack(method: str, eps: float, steps: int = 3, step_ratio: float | None = None, norm: str = "l2",
                samples: int = 1, generator: torch.Generator | None = None, substitution_rate: float = 0.25,
                text_of=None, tokenize=None) -> EmbeddingAttack | SynonymSubstitution:
    """An attack from a trial config: alpha = step_ratio * eps (default: `default_alpha`). rs-da needs the
    encoder's `text_of` and `tokenize` (see `SynonymSubstitution`)."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack method {method!r} (one of {', '.join(ATTACKS)})")
    alpha = step_ratio * eps if step_ratio is not None else None
    if method in ("pgd", "freelb"):
        return ATTACKS[method](eps, steps=steps, alpha=alpha, norm=norm, generator=generator)
    if method == "rs-rp":
        return RandomPerturbation(eps, samples=samples, norm=norm, generator=generator)
    if method == "rs-da":
        if text_of is None or tokenize is None:
            raise ValueError("rs-da substitutes words: pass the encoder's text_of and tokenize")
        return SynonymSubstitution(substitution_rate, text_of, tokenize, generator=generator)
    return FGSM(eps, norm=norm, generator=generator)
