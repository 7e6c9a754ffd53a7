"""Issue 26: bugs of the CUDA path found by reading, checked on the CPU (no line of the CUDA path had run).

1. A CUDA generator cannot draw a CPU tensor: every torch random call given `generator=` must say `device=`.
2. Evaluation noise: one vectorised draw per batch (`RowStreams`), the same draw for a sentence in any batch.
3. No host synchronisation in the training step: only reading the running loss sum, when the epoch reports.
"""

from __future__ import annotations

import ast
import copy
import os
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from study.evaluation.data import load_tatoeba
from trainables.attacks import RowStreams, make_attack, random_in_ball

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- 1. generator and device
# torch functions that create a tensor on a device they are told (default: the CPU) from a generator's draws
FACTORIES = {"rand", "randn", "randint", "randperm", "normal"}


def draws_without_device(source: str, filename: str = "<source>") -> list[str]:
    """'file:line call' of every call torch.<factory>(..., generator=...) without device=. In-place methods
    (t.uniform_(generator=g)), torch.bernoulli / multinomial / *_like (the device of their input tensor) and
    torch.normal with tensor mean and std are not factories: their device comes from a tensor."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        is_torch_factory = (isinstance(func, ast.Attribute) and func.attr in FACTORIES
                            and isinstance(func.value, ast.Name) and func.value.id == "torch")
        keywords = {k.arg for k in node.keywords}
        if not is_torch_factory or "generator" not in keywords or "device" in keywords:
            continue
        if func.attr == "normal" and len(node.args) < 3 and "size" not in keywords:
            continue  # normal(mean tensor, std tensor): the tensors' device
        found.append(f"{filename}:{node.lineno} {ast.unparse(node)}")
    return found


def test_every_seeded_draw_names_its_device():
    """A generator lives on a device (the trainer's attack generator on the GPU when there is one), and torch refuses
    to fill a tensor of another device from it: rs-da's torch.rand((), generator=g) failed every trial on a GPU."""
    sources = sorted(p for folder in ("trainables", "study") for p in (REPO / folder).rglob("*.py"))
    assert len(sources) > 20 and any(p.name == "attacks.py" for p in sources)
    offending = [hit for p in sources for hit in draws_without_device(p.read_text(), str(p.relative_to(REPO)))]
    assert offending == [], "\n".join(offending)


def test_the_device_check_finds_the_draws_that_failed_on_a_gpu():
    """The check above is not vacuous: it flags rs-da's old draws and nothing that takes its device from a tensor."""
    old_rs_da = """
if not options or torch.rand((), generator=self.generator).item() >= self.rate:
    choice = options[int(torch.randint(len(options), (), generator=self.generator))]
order = torch.randperm(n, generator=generator).tolist()
"""
    assert len(draws_without_device(old_rs_da)) == 3
    fine = """
torch.rand((2, 3), generator=g, device=g.device)
torch.randperm(n, generator=g, device="cpu")
x.uniform_(generator=g)
torch.bernoulli(p, generator=g)
torch.normal(mean, std, generator=g)
torch.randn(3)
"""
    assert draws_without_device(fine) == []
    assert len(draws_without_device("torch.normal(0.0, 1.0, (3,), generator=g)")) == 1


def test_rs_da_draws_once_per_batch():
    """rs-da draws on its generator's device (the check above) in one call for the batch, not two per word (each
    read back by the host: two waits per word on a GPU)."""
    calls = []

    class Recording(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith(("aten.rand", "aten.uniform")):
                calls.append(str(func))
            return func(*args, **(kwargs or {}))

    synonyms = {"big": ("large", "great"), "dog": ("hound",), "house": ("home", "dwelling")}.get
    attack = make_attack("rs-da", 0.0, substitution_rate=1.0, text_of=lambda ids: ids, tokenize=lambda s: s,
                         generator=torch.Generator().manual_seed(0))
    attack.synonyms = lambda word: synonyms(word.lower(), ())
    with Recording():
        out = attack.substitute(["A big dog", "the house and the big dog", "nothing here"])
    assert len(calls) == 1, calls  # one draw for 5 replaceable words in 3 sentences
    assert out[0] in ("A large hound", "A great hound") and out[2] == "nothing here" and attack.substituted == 5
    assert out[1].startswith("the ") and out[1].count(" the ") == 1 and "house" not in out[1]


# ----------------------------------------------------------------------------- 2. evaluation noise per batch
@pytest.fixture(scope="module")
def swahili(encoder, data_dir):
    """64 real Swahili sentences, tokenised (the evaluation's queries)."""
    return encoder.tokenize(load_tatoeba("swh", data_dir, 64)["source"])


def _row_draws(encoder, token_ids, seeds, eps=0.1):
    """Each sentence's noise on its real tokens, drawn in one batch (`random_in_ball` with `RowStreams`)."""
    from study.encoder.embedding import pad_batch

    input_ids, mask = pad_batch(token_ids, encoder.pad_id, "cpu")
    with torch.no_grad():
        inputs = encoder.model.get_input_embeddings()(input_ids)
    movable = encoder.perturbable_mask(input_ids, mask)
    streams = RowStreams(seeds)
    first = random_in_ball(inputs, movable, eps, "l2", streams)
    second = random_in_ball(inputs, movable, eps, "l2", streams)  # a restart draws again: a new draw
    return [(first[i, : len(t)], second[i, : len(t)], movable[i, : len(t)]) for i, t in enumerate(token_ids)]


def test_a_sentence_gets_the_same_noise_in_any_batch(encoder, swahili):
    seeds = [1000 + i for i in range(len(swahili))]
    together = _row_draws(encoder, swahili, seeds)
    order = list(reversed(range(len(swahili))))[::3]  # another order, another width, other neighbours
    apart = _row_draws(encoder, [swahili[i] for i in order], [seeds[i] for i in order])
    alone = _row_draws(encoder, [swahili[5]], [seeds[5]])
    for j, i in enumerate(order):
        for a, b in zip(together[i], apart[j]):
            assert torch.equal(a, b), i
    assert all(torch.equal(a, b) for a, b in zip(together[5], alone[0]))
    # not vacuous: the draws move the movable tokens, differ between sentences and between draws, stay in the ball
    first, second, movable = together[0]
    assert (first.norm(dim=-1)[movable.bool()] > 0).all() and not first[~movable.bool()].any()
    assert not torch.equal(first, second)
    assert not torch.equal(together[1][0], _row_draws(encoder, [swahili[1]], [seeds[0]])[0][0])  # the seed decides
    assert max(d.norm(dim=-1).max().item() for d, _, _ in together) <= 0.1 + 1e-6


def test_row_streams_draw_uniformly_from_the_ball():
    """The counter-based draws keep the distribution of the torch draws they replace: Gaussian coordinates,
    uniform radii, rows uncorrelated; an l2 draw is uniform in the ball ((|delta| / eps)^d is uniform)."""
    from scipy.stats import kstest

    streams = RowStreams(range(256))
    z = streams.normal((256, 20, 384))
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1) < 0.01
    assert kstest(z.flatten()[::7].numpy(), "norm").pvalue > 1e-3
    u = streams.uniform((256, 20, 1)).flatten()
    assert 0 < u.min() and u.max() < 1 and kstest(u.numpy(), "uniform").pvalue > 1e-3
    correlation = torch.corrcoef(z.flatten(1)[:64]) - torch.eye(64)
    assert correlation.abs().max().item() < 0.05
    delta = random_in_ball(torch.zeros(256, 20, 384), torch.ones(256, 20), 0.5, "l2", RowStreams(range(256)))
    assert kstest(((delta.norm(dim=-1) / 0.5) ** 384).flatten().double().clamp(max=1).numpy(),
                  "uniform").pvalue > 1e-3


def _aten_ops(run) -> Counter:
    """aten operators that `run()` calls (torch's profiler), by name: those called by Python code or autograd, not
    the ones an operator calls inside itself (a CPU sum's partial buffers grow with its input; a GPU's do not)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return Counter(e.name for e in prof.events() if e.name.startswith("aten::")
                   and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))


@pytest.mark.parametrize("how", ["noise", "attack"])
def test_evaluation_noise_costs_the_same_kernels_for_4_or_64_sentences(encoder, swahili, how):
    """The noise of a batch is one vectorised draw: the operators an evaluation batch runs do not grow with its
    rows (they did: one generator and ~10 small kernels per sentence, each a synchronisation on a GPU)."""
    from study.evaluation.robustness import embed_perturbed

    wide = copy.copy(encoder)
    wide.max_tokens, wide.max_batch = 1 << 20, 1 << 10  # one batch whatever the rows
    targets = encoder.embed(token_ids=swahili)

    def batch_of(n):
        return lambda: embed_perturbed(wide, swahili[:n], targets[:n], 0.1, how, 1, range(n))

    small, large = _aten_ops(batch_of(4)), _aten_ops(batch_of(64))
    assert sum(small.values()) > 100  # the profiler saw the batch
    assert small == large, {k: (small[k], large[k]) for k in small.keys() | large.keys() if small[k] != large[k]}


# ----------------------------------------------------------------------------- 3. no host sync in a step
class HostReads(TorchDispatchMode):
    """Records every read of a tensor's value by the host (.item(), float(t), bool(t), `if t:`, math.isfinite(t):
    torch's _local_scalar_dense, which on a GPU waits for all queued work) made by the project's own code, with
    the line that made it. Reads inside torch (the CPU-held optimizer step count) or transformers are not ours."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            wrappers = (os.path.join("torch", "_compile.py"), os.path.join("torch", "_dynamo"),
                        os.path.join("torch", "utils", "_python_dispatch.py"))
            caller = next(f for f in reversed(traceback.extract_stack()[:-1])
                          if not any(w in f.filename for w in wrappers))
            path = Path(caller.filename).resolve()
            if path.is_relative_to(REPO) and path.parts[len(REPO.parts)] in ("study", "trainables"):
                self.reads.append(f"{path.relative_to(REPO)}:{caller.lineno} {caller.line}")
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def trainer(model_dir, data_dir):
    from trainables.trainable import HybridTrainer

    return HybridTrainer(dict(model=model_dir, data_dir=str(data_dir), max_train_pairs=8, batch_size=4, epochs=2,
                              max_seq_len=16, method="pgd", attack_steps=1, epsilon=0.1, ratio=0.5, seed=3,
                              eval=dict(langs=["swh"], max_sentences=8, max_xsts_pairs=16, xsts_langs=())))


@pytest.mark.parametrize("method", ["pgd", "freelb", "rs-da", "plain"])  # rs-rp: FreeLB's path (accumulates)
def test_a_training_step_reads_nothing_back_from_the_device(trainer, method):
    """Every attack's step, run for real: no value read by the host in the project's code (the loss stays on the
    device). The old step read its loss with .item() and checked it with math.isfinite: one wait per step."""
    saved = trainer.attack
    trainer.attack = attack = None if method == "plain" else make_attack(
        method, 0.1, steps=1, samples=1, substitution_rate=0.5, text_of=trainer.encoder.text_of,
        generator=trainer.selection_rng if method == "rs-da" else trainer.attack_rng,
        tokenize=lambda s: trainer.encoder.tokenize(s, max_length=16))
    try:
        batch = next(trainer.batches())
        with HostReads() as host:
            loss, n_adv = trainer.train_step(batch)
    finally:
        trainer.attack = saved
    assert host.reads == []
    assert loss.dim() == 0 and torch.isfinite(loss) and n_adv == (0 if method == "plain" else 2)
    if method == "rs-da":
        assert attack.substituted > 0


def test_an_epoch_reads_its_loss_once_when_it_reports(trainer):
    with HostReads() as host:
        metrics = trainer.train_epoch()
    assert len(host.reads) == 1 and host.reads[0].endswith("value = loss_sum.item()"), host.reads
    assert isinstance(metrics["train.loss"], float) and 0 < metrics["train.loss"] < 10
    assert set(metrics) == {"train.loss", "train.adversarial_share", "train.seconds", "epoch"}


def test_the_host_read_check_sees_a_read_in_project_code(trainer):
    """Not vacuous: an .item() on the step's path, as the old plain_step made, is seen."""
    from trainables.hybrid import PairBatch, plain_step

    batch = next(trainer.batches())
    with HostReads() as host:
        plain_step(trainer.model, PairBatch(batch.anchors, batch.positives), trainer.loss_fn,
                   trainer.encoder.pad_id).item()
    trainer.model.zero_grad(set_to_none=True)
    assert host.reads == [], "the read above is the test's own, not project code"
    with HostReads() as host:
        trainer.check_finite(torch.ones(()))
    assert len(host.reads) == 1 and host.reads[0].startswith("trainables/trainable.py")
