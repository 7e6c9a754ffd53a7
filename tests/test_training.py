"""Issue 4: the attacks, the hybrid-batch step and the trainer, on the real encoder and real English pairs.

Sizes are tiny (8 pairs a batch, at most 24 tokens a sentence) so that a 2-core CPU runs this in well
under two minutes; every check is exact or has a margin measured on the real model.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from study.encoder.embedding import pad_batch, sentence_embedding
from study.errors import ConfigError
from study.evaluation.data import load_english_pairs
from trainables.attacks import FGSM, PGD, FreeLB, RandomPerturbation, make_attack, random_in_ball
from trainables.hybrid import PairBatch, adversarial_count, choose_adversarial, hybrid_step, plain_step
from trainables.losses import InBatchContrastiveLoss
from trainables.trainable import HybridTrainer, TrainingDiverged

N = 8  # pairs per batch
MAX_LEN = 24  # tokens per sentence, "query: " prefix and specials included


@pytest.fixture(scope="module")
def batches(encoder, data_dir) -> list[PairBatch]:
    """Three batches of 8 real English training pairs (STS-B / MSRP), tokenised and truncated to 24 tokens."""
    pairs = load_english_pairs("train", data_dir).select(range(3 * N))
    short = copy.copy(encoder)
    short.max_length = MAX_LEN
    anchors, positives = short.tokenize(pairs["anchor"]), short.tokenize(pairs["positive"])
    return [PairBatch(anchors[i : i + N], positives[i : i + N]) for i in range(0, 3 * N, N)]


@pytest.fixture(scope="module")
def scratch(fresh_encoder_factory):
    """A private copy of the encoder for tests whose attacks back-propagate into the parameters."""
    enc = fresh_encoder_factory()
    yield enc
    enc.model.zero_grad(set_to_none=True)


@pytest.fixture
def attack_inputs(scratch, batches):
    """A real padded batch of anchors: (model, input embeddings, mask, clean positive embeddings)."""
    model = scratch.model.eval()
    batch = batches[0]
    input_ids, mask = pad_batch(batch.anchors, scratch.pad_id, "cpu")
    assert (mask == 0).any() and (mask == 1).all(dim=1).any(), "the batch must mix lengths (padding)"
    with torch.no_grad():
        inputs = model.get_input_embeddings()(input_ids)
        pos_ids, pos_mask = pad_batch(batch.positives, scratch.pad_id, "cpu")
        positives = sentence_embedding(model, pos_mask, input_ids=pos_ids)
    yield model, inputs, mask, positives
    model.zero_grad(set_to_none=True)


def _make(method: str, eps: float, norm: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "pgd": lambda: PGD(eps, steps=3, norm=norm, generator=gen),
        "fgsm": lambda: FGSM(eps, norm=norm, generator=gen),
        "freelb": lambda: FreeLB(eps, steps=3, norm=norm, generator=gen),
        "rs-rp": lambda: RandomPerturbation(eps, samples=2, norm=norm, generator=gen),
    }[method]()


# ----------------------------------------------------------------------------- the budget
# L2 radius per token (word vectors have norm ~1.4 here); Linf per coordinate (coordinates ~0.07).
RADIUS = {"l2": 0.2, "linf": 0.01}


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("method", ["pgd", "fgsm", "freelb", "rs-rp"])
def test_every_perturbation_stays_in_the_ball_and_off_padding(attack_inputs, method, norm):
    model, inputs, mask, positives = attack_inputs
    eps, loss = RADIUS[norm], InBatchContrastiveLoss()
    seen = []  # every point the attack evaluates (FreeLB and rs-rp train on each of them)

    def loss_fn(x):
        seen.append(x.detach() - inputs)
        return loss(sentence_embedding(model, mask, inputs_embeds=x), positives)

    out = _make(method, eps, norm)(inputs, mask, loss_fn)
    assert out.shape == inputs.shape and out.dtype == inputs.dtype
    final = out - inputs
    real = mask.bool()
    for delta in [*seen, final]:
        assert torch.equal(delta[~real], torch.zeros_like(delta[~real])), "padding positions were perturbed"
        if norm == "l2":
            assert delta.norm(dim=-1).max().item() <= eps + 1e-5
        else:
            assert delta.abs().max().item() <= eps + 1e-5
    # not vacuous: every real token moved, and some by a good part of the radius
    size = final.norm(dim=-1) if norm == "l2" else final.abs().amax(dim=-1)
    assert (size[real] > 0).all()
    assert size[real].max().item() > 0.5 * eps
    assert len(seen) == {"pgd": 3, "fgsm": 1, "freelb": 3, "rs-rp": 2}[method]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_random_in_ball_is_inside_and_zero_on_padding(attack_inputs, norm):
    _, inputs, mask, _ = attack_inputs
    eps = RADIUS[norm]
    delta = random_in_ball(inputs, mask, eps, norm, torch.Generator().manual_seed(3))
    size = delta.norm(dim=-1) if norm == "l2" else delta.abs().amax(dim=-1)
    assert size.max().item() <= eps + 1e-6
    assert torch.equal(delta[~mask.bool()], torch.zeros_like(delta[~mask.bool()]))
    assert (size[mask.bool()] > 0).all()


def test_attack_rejects_bad_budget():
    with pytest.raises(ValueError):
        PGD(-0.1)
    with pytest.raises(ValueError):
        PGD(0.1, norm="l1")
    with pytest.raises(ValueError):
        make_attack("nope", 0.1)


# ----------------------------------------------------------------------------- the attack attacks
@pytest.mark.parametrize("method", ["pgd", "fgsm"])
def test_attack_raises_the_contrastive_loss_of_the_perturbed_examples(attack_inputs, method):
    model, inputs, mask, positives = attack_inputs  # eval mode: no dropout noise in the comparison
    loss, eps = InBatchContrastiveLoss(), 0.2

    def per_example(x):
        with torch.no_grad():
            return loss.per_example(sentence_embedding(model, mask, inputs_embeds=x), positives)

    clean = per_example(inputs)
    attacked = per_example(
        _make(method, eps, "l2")(inputs, mask,
                                 lambda x: loss(sentence_embedding(model, mask, inputs_embeds=x), positives)))
    noisy = per_example(inputs + random_in_ball(inputs, mask, eps, "l2", torch.Generator().manual_seed(1)))
    assert (attacked > clean).all(), (clean, attacked)
    assert attacked.mean() > 1.3 * clean.mean()
    # the gradient direction matters: a random perturbation of the same radius does much less
    assert attacked.mean() - clean.mean() > 3 * (noisy.mean() - clean.mean()).abs()


# ----------------------------------------------------------------------------- r = 0 is plain fine-tuning
def _train(model, step, batches, seed: int = 0) -> list[float]:
    """3 AdamW steps in train mode (dropout on), frozen word-embedding table as in the trainer."""
    model.train()
    model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    torch.manual_seed(seed)
    losses = []
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        losses.append(step(model, batch))
        optimizer.step()
    return losses


def test_ratio_zero_is_bit_identical_to_plain_fine_tuning(fresh_encoder_factory, encoder, batches):
    loss_fn, pad = InBatchContrastiveLoss(), encoder.pad_id
    plain, zero, half = (fresh_encoder_factory().model for _ in range(3))

    def hybrid(ratio):
        selection, attack_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
        attack = PGD(0.2, steps=2, generator=attack_gen)
        return lambda model, batch: hybrid_step(model, batch, loss_fn, attack=attack, ratio=ratio, generator=selection,
                                                      pad_id=pad)[0]

    plain_losses = _train(plain, lambda model, batch: plain_step(model, batch, loss_fn, pad), batches)
    zero_losses = _train(zero, hybrid(0.0), batches)
    half_losses = _train(half, hybrid(0.5), batches)

    assert plain_losses == zero_losses
    for (name, p), q in zip(plain.named_parameters(), zero.parameters()):
        assert torch.equal(p, q), name
    # the comparison can fail: training moved the weights, and r = 0.5 moves them elsewhere
    original = dict(encoder.model.named_parameters())
    moved = [n for n, p in plain.named_parameters() if not torch.equal(p, original[n])]
    assert len(moved) > 100
    differ = [n for (n, p), q in zip(plain.named_parameters(), half.parameters()) if not torch.equal(p, q)]
    assert len(differ) > 100
    assert half_losses != plain_losses


# ----------------------------------------------------------------------------- cost of the attack
def test_adversarial_count_rounds_halves_up():
    assert [adversarial_count(r, 8) for r in (0, 0.1, 0.3, 0.5, 0.9, 1)] == [0, 1, 2, 4, 7, 8]
    assert adversarial_count(0.5, 5) == 3  # 2.5 -> 3 (Python's round would give 2)
    assert adversarial_count(0.5, 3) == 2  # 1.5 -> 2
    clean, adv = choose_adversarial(8, 0.3, torch.Generator().manual_seed(0))
    assert len(adv) == 2 and sorted(clean + adv) == list(range(8))


# (method, perturb, ratio, K or m, adversarial pairs a, sentences through the encoder for n = 8)
COST_CASES = [
    ("plain", "anchor", 0.0, 0, 0, 16),             # 2n
    ("pgd", "anchor", 0.0, 2, 0, 16),               # r = 0: 2n
    ("pgd", "anchor", 0.5, 2, 4, 16 + 2 * 4),       # 2n + K a
    ("pgd", "both", 0.5, 2, 4, 16 + 2 * 2 * 4),     # 2n + K 2a
    ("pgd", "anchor", 1.0, 2, 8, 16 + 2 * 8),       # r = 1: no clean anchors at all
    ("pgd", "both", 0.3, 3, 2, 16 + 3 * 2 * 2),     # 2n + K 2a, a = round(2.4) = 2
    ("fgsm", "anchor", 0.3, 1, 2, 16 + 2),          # 2n + a
    ("freelb", "anchor", 0.5, 3, 4, 16 + 2 * 4),    # 2n + (K - 1) a
    ("freelb", "both", 0.5, 2, 4, 16 + 1 * 2 * 4),  # 2n + (K - 1) 2a
    ("rs-rp", "anchor", 0.5, 3, 4, 16 + 2 * 4),     # 2n + (m - 1) a
    ("rs-rp", "anchor", 0.5, 1, 4, 16),             # one draw costs nothing extra
]


@pytest.mark.parametrize("method,perturb,ratio,k,a,expected", COST_CASES,
                         ids=[f"{c[0]}-{c[1]}-r{c[2]}-k{c[3]}" for c in COST_CASES])
def test_attack_work_is_confined_to_the_adversarial_share(scratch, batches, method, perturb, ratio, k, a,
                                                          expected):
    model, batch, loss_fn = scratch.model.eval(), batches[1], InBatchContrastiveLoss()
    assert len(batch) == N and adversarial_count(ratio, N) == a
    sentences = []

    def count(module, args, kwargs):
        sentences.append(kwargs["attention_mask"].shape[0])

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        if method == "plain":
            plain_step(model, batch, loss_fn, scratch.pad_id)
            n_adv = 0
        else:
            attack = make_attack(method, 0.1, steps=k, samples=k, generator=torch.Generator().manual_seed(0))
            _, n_adv = hybrid_step(model, batch, loss_fn, attack=attack, ratio=ratio,
                                   generator=torch.Generator().manual_seed(0), pad_id=scratch.pad_id, perturb=perturb)
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    assert n_adv == a
    assert sum(sentences) == expected, sentences


def test_hybrid_step_gradients_reach_clean_and_adversarial_paths(scratch, batches):
    """The loss's gradient flows through both the clean graphs (sent at the end) and the adversarial pass:
    the summed gradient equals the gradient of the same loss computed in one graph."""
    model, batch, loss_fn = scratch.model.eval(), batches[2], InBatchContrastiveLoss()
    model.zero_grad(set_to_none=True)
    attack = PGD(0.1, steps=1, generator=torch.Generator().manual_seed(0))
    selection = torch.Generator().manual_seed(5)
    hybrid_step(model, batch, loss_fn, attack=attack, ratio=0.5, generator=selection, pad_id=scratch.pad_id)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    # the same loss in one graph: same split, same attack draw, perturbed inputs as constants
    clean, adv = choose_adversarial(N, 0.5, torch.Generator().manual_seed(5))
    attack = PGD(0.1, steps=1, generator=torch.Generator().manual_seed(0))
    ids, mask = pad_batch([batch.anchors[i] for i in adv], scratch.pad_id, "cpu")
    embed = model.get_input_embeddings()
    inputs = embed(ids).detach()

    def encode(token_ids):
        i, m = pad_batch(token_ids, scratch.pad_id, "cpu")
        return sentence_embedding(model, m, input_ids=i)

    clean_anchors = encode([batch.anchors[i] for i in clean]).detach()
    positives = encode([batch.positives[i] for i in clean + adv]).detach()
    perturbed = attack(inputs, mask, lambda x: loss_fn(
        torch.cat([clean_anchors, sentence_embedding(model, mask, inputs_embeds=x)]), positives))
    # the live embedding table under the (constant) perturbation, as in the step's final pass
    anchors = torch.cat([encode([batch.anchors[i] for i in clean]),
                         sentence_embedding(model, mask, inputs_embeds=embed(ids) + (perturbed - inputs))])
    loss_fn(anchors, encode([batch.positives[i] for i in clean + adv])).backward()
    reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert grads.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(grads[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- the trainer
def _trainer_config(model_dir, data_dir, **overrides) -> dict:
    # the evaluation a trainer is built with: small (its untrained cross-lingual measurement runs at construction)
    return dict(model=model_dir, data_dir=str(data_dir), max_train_pairs=16, batch_size=8, epochs=2,
                max_seq_len=16, method="pgd", attack_steps=2, epsilon=0.1, ratio=0.5, seed=3,
                eval=dict(langs=["swh"], max_sentences=8, max_xsts_pairs=16)) | overrides


def test_restored_trainer_continues_exactly(model_dir, data_dir, tmp_path):
    config = _trainer_config(model_dir, data_dir)
    first = HybridTrainer(config)
    assert first.model.training and first.steps_per_epoch == 2
    metrics = first.train_epoch()
    assert first.epoch == 1 and metrics["train.adversarial_share"] == 0.5
    first.save(str(tmp_path))
    uninterrupted = [first.train_step(batch) for batch in first.batches()]

    second = HybridTrainer(config)
    second.restore(str(tmp_path))
    assert second.epoch == 1
    resumed = [second.train_step(batch) for batch in second.batches()]

    # step 1 of epoch 2 needs the weights and the RNG states (dropout, adversarial choice, PGD start);
    # step 2 also needs the optimizer's moments and the scheduler's position
    # train_step leaves its loss on the device (read only when an epoch reports): read here
    assert [loss.item() for loss, _ in resumed] == pytest.approx([loss.item() for loss, _ in uninterrupted], abs=1e-6)
    assert [n for _, n in resumed] == [n for _, n in uninterrupted] == [4, 4]
    for (name, p), q in zip(first.model.named_parameters(), second.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_last_checkpoint_keeps_weights_and_drops_the_optimizer(model_dir, data_dir, tmp_path):
    config = _trainer_config(model_dir, data_dir) | dict(epochs=1)
    first = HybridTrainer(config)
    first.train_epoch()
    first.save(str(tmp_path))
    state = torch.load(tmp_path / "training_state.pt", weights_only=True)
    assert state["epoch"] == 1 and "optimizer" not in state and "scheduler" not in state

    restored = HybridTrainer(config)  # a finished trial restored (a crash after its last report): nothing to run
    restored.restore(str(tmp_path))
    assert restored.epoch == restored.cfg.epochs
    for (name, p), q in zip(first.model.named_parameters(), restored.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_nan_loss_ends_training_with_a_clear_reason(model_dir, data_dir):
    # temperature 1e-45 underflows float32: logits / temperature overflow to inf and the first loss is NaN
    config = _trainer_config(model_dir, data_dir, temperature=1e-45) | dict(epochs=1)
    trainer = HybridTrainer(config)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf|-inf) at epoch 1") as err:
        trainer.train_epoch()
    assert "ratio 0.5, epsilon 0.1" in str(err.value)
    assert trainer.epoch == 0


def test_trainer_refuses_unknown_and_out_of_range_keys(model_dir, data_dir):
    with pytest.raises(ConfigError, match="unknown trial configuration key.*'lerning_rate'"):
        HybridTrainer(_trainer_config(model_dir, data_dir, lerning_rate=1e-4))
    with pytest.raises(ConfigError, match="key 'ratio': 1.5 outside"):
        HybridTrainer(_trainer_config(model_dir, data_dir) | dict(ratio=1.5))


# ----------------------------------------------------------------------------- issue 14: bugs and new methods
@pytest.mark.parametrize("method", ["pgd", "fgsm", "freelb", "rs-rp"])
def test_adversarial_sentences_train_the_word_embedding_table_for_every_method(scratch, batches, method):
    """With a trainable table, the adversarial sentences' loss reaches the rows of their tokens (FreeLB and rs-rp
    used to train on detached word vectors: rows only the adversarial sentences use got no gradient)."""
    model, batch, loss_fn = scratch.model.eval(), batches[0], InBatchContrastiveLoss()
    table = model.get_input_embeddings().weight
    clean, adv = choose_adversarial(N, 0.5, torch.Generator().manual_seed(7))
    seen_clean = {t for i in clean for t in batch.anchors[i]} | {t for ids in batch.positives for t in ids}
    adversarial_only = sorted({t for i in adv for t in batch.anchors[i]} - seen_clean)
    assert len(adversarial_only) >= 2
    model.zero_grad(set_to_none=True)
    table.requires_grad_(True)
    try:
        attack = make_attack(method, 0.1, steps=2, samples=2, generator=torch.Generator().manual_seed(0))
        hybrid_step(model, batch, loss_fn, attack=attack, ratio=0.5, generator=torch.Generator().manual_seed(7),
                    pad_id=scratch.pad_id)
        rows = table.grad[adversarial_only].norm(dim=1)
    finally:
        table.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    assert (rows > 0).all(), f"{int((rows == 0).sum())} of {len(rows)} adversarial-only rows got no gradient"


def test_special_tokens_and_prefix_stay_out_of_the_perturbation(scratch, batches, monkeypatch):
    """perturb_special=False (the default): [CLS], [SEP] and the "query: " prefix are never moved, in training
    (hybrid_step with the encoder's perturbable_mask) and in the evaluation attack and noise."""
    from study.evaluation import robustness
    from trainables.config import DEFAULTS

    assert DEFAULTS.perturb_special is False and robustness.EvalConfig().perturb_special is False
    model, loss_fn = scratch.model.eval(), InBatchContrastiveLoss()
    moved = []

    class RecordingPGD(PGD):
        def forward(self, inputs, mask, loss_fn):
            out = super().forward(inputs, mask, loss_fn)
            moved.append(((out - inputs).norm(dim=-1) > 0, mask))
            return out

    ids = sorted(batches[0].anchors[:4], key=len)  # the evaluation batches by length: keep the rows in order
    input_ids, attention = pad_batch(ids, scratch.pad_id, "cpu")
    lengths = attention.sum(1)
    fixed = torch.zeros_like(attention, dtype=torch.bool)
    fixed[:, :4] = True  # [CLS] '▁que' 'ry' ':'
    fixed[torch.arange(len(ids)), lengths - 1] = True  # [SEP]
    words = attention.bool() & ~fixed

    def check(changed, everything: bool):
        assert not changed[~attention.bool()].any(), "padding moved"
        assert changed[words].all(), "every word token moves"
        assert changed[fixed].all() if everything else not changed[fixed].any()

    hybrid_step(model, PairBatch(ids, batches[0].positives[:4]), loss_fn, attack=RecordingPGD(0.1, steps=1),
                ratio=1.0, generator=torch.Generator().manual_seed(0), pad_id=scratch.pad_id,
                perturbable=scratch.perturbable_mask)
    model.zero_grad(set_to_none=True)
    check(moved.pop()[0], everything=False)
    monkeypatch.setattr(robustness, "PGD", RecordingPGD)
    targets = scratch.embed(token_ids=ids)
    for special in (False, True):
        robustness.embed_perturbed(scratch, ids, targets, 0.1, "attack", 1, range(len(ids)), perturb_special=special)
        check(moved.pop()[0], everything=special)


def test_trials_evaluate_at_the_same_length_as_the_untrained_reference(model_dir, data_dir):
    """The untrained reference row (study.evaluation.robustness.evaluate_model) and a trial's evaluation tokenise alike,
    whatever the trial trains at; the training length defaults to the same constant."""
    from study.encoder.embedding import MAX_LENGTH, Encoder
    from trainables.config import DEFAULTS

    assert DEFAULTS.max_seq_len == MAX_LENGTH
    long_sentence = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)  # ~130 tokens
    reference = Encoder.load(model_dir, device="cpu")  # as evaluate_model loads it
    for overrides in ({}, {"max_seq_len": 16}):
        trainer = HybridTrainer(_trainer_config(model_dir, data_dir) | overrides)
        assert trainer.encoder.tokenize([long_sentence]) == reference.tokenize([long_sentence])
        assert max(map(len, trainer.anchors)) <= trainer.cfg.max_seq_len
    assert len(reference.tokenize([long_sentence])[0]) == MAX_LENGTH


def test_the_paraphrase_check_counts_a_retrieved_copy_of_the_gold_sentence(encoder, data_dir):
    """The English test pairs repeat 36 positive sentences: retrieving an identical copy of the gold is a hit
    (argmax returns the first of identical rows, so by index the later copies could never be retrieved)."""
    from collections import Counter

    from study.evaluation.robustness import paraphrase_hits, retrieval_hits

    pairs = load_english_pairs("test", data_dir)
    counts = Counter(pairs["positive"])
    rows = [i for i, text in enumerate(pairs["positive"]) if counts[text] > 1]
    assert sum(counts[t] - 1 for t in counts) == 36 and len(rows) == 72
    anchors = encoder.embed([pairs["anchor"][i] for i in rows])
    texts = [pairs["positive"][i] for i in rows]
    distinct = sorted(set(texts))  # embedded once each, as the check does: copies get identical rows
    positives = encoder.embed(distinct)[[distinct.index(t) for t in texts]]
    later_copy = torch.tensor([texts.index(t) != j for j, t in enumerate(texts)])
    by_index, by_text = retrieval_hits(anchors, positives), paraphrase_hits(anchors, positives, texts)
    assert not by_index[later_copy].any(), "the bug: a later copy is never retrieved by index"
    assert by_text[later_copy].float().mean() > 0.8
    assert torch.equal(by_text[~later_copy], by_index[~later_copy] | by_text[~later_copy])


def test_strong_attack_is_at_least_as_strong_as_the_cheap_one_and_stays_in_the_ball(encoder, data_dir):
    """RestartPGD on the margin to the nearest wrong candidate (the evaluation's strong attack) against the
    per-trial PGD-3 on the cosine to the gold, on the same 24 Swahili sentences and radius."""
    from study.evaluation.data import load_tatoeba
    from study.evaluation.robustness import embed_perturbed, margin_to_nearest_wrong, retrieval_accuracy
    from trainables.attacks import RestartPGD

    pairs = load_tatoeba("swh", data_dir, 24)
    ids, eng = encoder.tokenize(pairs["source"]), encoder.embed(pairs["english"])
    eps, seeds = 0.1, range(len(ids))
    cheap_queries = embed_perturbed(encoder, ids, eng, eps, "attack", 3, seeds)
    strong_queries = embed_perturbed(encoder, ids, eng, eps, "strong", 20, seeds, restarts=2)
    cheap, strong = retrieval_accuracy(cheap_queries, eng), retrieval_accuracy(strong_queries, eng)
    clean = retrieval_accuracy(encoder.embed(token_ids=ids), eng)
    print(f"swh, 24 sentences, eps {eps}: clean {clean:.3f}  PGD-3 {cheap:.3f}  strong {strong:.3f}")
    assert strong <= cheap < clean
    # and it pushes every sentence further towards a wrong candidate, on average
    gold = torch.arange(len(ids))
    assert (margin_to_nearest_wrong(strong_queries, eng, gold).mean()
            > margin_to_nearest_wrong(cheap_queries, eng, gold).mean())

    model = encoder.model
    input_ids, mask = pad_batch(ids[:8], encoder.pad_id, "cpu")
    inputs = model.get_input_embeddings()(input_ids).detach()
    movable = encoder.perturbable_mask(input_ids, mask)
    seen = []

    def margin(x):
        seen.append(x.detach() - inputs)
        return margin_to_nearest_wrong(sentence_embedding(model, mask, inputs_embeds=x), eng.clone(),
                                       torch.arange(8))

    restart_pgd = RestartPGD(eps, steps=3, restarts=2, generator=torch.Generator().manual_seed(0))
    out = restart_pgd(inputs, mask=movable, loss_fn=margin)
    assert len(seen) == 1 + 2 * (3 + 1), "clean point, then steps + final point per restart"
    for delta in [*seen, out - inputs]:
        assert delta.norm(dim=-1).max().item() <= eps + 1e-5
        assert torch.equal(delta[~movable.bool()], torch.zeros_like(delta[~movable.bool()]))


def test_rs_da_substitutes_synonyms_in_the_adversarial_share_and_trains(model_dir, data_dir):
    """rs-da: one training step on real English pairs; the adversarial anchors get WordNet synonyms, the clean
    ones are untouched, the loss is finite and the parameters receive gradients."""
    trainer = HybridTrainer(_trainer_config(model_dir, data_dir) | dict(method="rs-da", substitution_rate=0.5))
    batch = next(trainer.batches())
    clean, adv = choose_adversarial(len(batch), trainer.cfg.ratio, copy.deepcopy(trainer.selection_rng))
    sent = []
    original_plain_step = plain_step

    import trainables.hybrid as hybrid

    def recording_plain_step(model, batch, *args, **kwargs):
        sent.append(batch)
        return original_plain_step(model, batch, *args, **kwargs)

    hybrid.plain_step = recording_plain_step
    try:
        loss, n_adv = trainer.train_step(batch)
    finally:
        hybrid.plain_step = original_plain_step
    assert math.isfinite(loss) and n_adv == len(adv) == 4
    assert trainer.attack.substituted > 0
    (trained,) = sent
    assert all(trained.anchors[i] == batch.anchors[i] for i in clean)
    assert trained.positives == batch.positives  # perturb="anchor"
    changed = [i for i in adv if trained.anchors[i] != batch.anchors[i]]
    assert changed, "some adversarial anchor got a synonym"
    print("rs-da:", [(trainer.encoder.text_of(batch.anchors[i]), trainer.encoder.text_of(trained.anchors[i]))
                     for i in changed[:2]])


def test_rs_da_without_wordnet_is_one_line_naming_the_package(model_dir, data_dir, tmp_path, monkeypatch):
    import subprocess
    import sys

    from study.errors import DataError
    from trainables.synonyms import WORDNET_DIR_ENV, load_wordnet

    monkeypatch.setenv(WORDNET_DIR_ENV, str(tmp_path))
    load_wordnet.cache_clear()
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        HybridTrainer(_trainer_config(model_dir, data_dir) | dict(method="rs-da"))
    result = subprocess.run([sys.executable, "-m", "study.run", "--method", "rs-da", "--budget", "smoke",
                             "--out", str(tmp_path / "never")], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and lines[-1].startswith("error: WordNet not found"), result.stderr[-2000:]
    assert "apt-get install wordnet-base" in lines[-1] and not (tmp_path / "never").exists()


def test_a_sentence_survives_the_strong_attack_only_if_it_survives_the_cheap_one(encoder, data_dir):
    """The two attacks start from different random points, so on its own the strong one can miss a sentence the
    cheap one breaks; the strong figure counts the per-sentence minimum, so it bounds the cheap one."""
    from study.evaluation.robustness import EvalConfig, QuerySet, evaluate_query_sets

    config = EvalConfig(langs=["swh"], max_sentences=24, radii=(0.05, 0.1), attack_steps=2, strong_attack=True,
                        strong_steps=2, strong_restarts=1)
    sets = [QuerySet.load(encoder, "swh", "selection", config, data_dir)]
    ((figures, hits),) = evaluate_query_sets(encoder, sets, config, keep_hits=True)
    for eps in ("0.05", "0.1"):
        strong, cheap = hits[f"strong_eps{eps}"], hits[f"attacked_eps{eps}"]
        assert all(s <= c for s, c in zip(strong, cheap)), eps
        assert figures[f"strong_eps{eps}"] == pytest.approx(sum(strong) / len(strong))
        assert figures[f"strong_eps{eps}"] <= figures[f"attacked_eps{eps}"]
    assert figures["strong_eps0.1"] < figures["l2e"], "not vacuous: the attack bites"


def test_evaluation_figures_do_not_depend_on_how_languages_are_batched(encoder, data_dir):
    """The evaluation encodes every language and split together (study.evaluation.robustness.evaluate_query_sets); each
    language's figures, hits included, must equal those of evaluating it alone, in batches of another size: the
    draws are per sentence, and the noise figure is the attack's random start, the same as a noise pass."""
    from study.evaluation.robustness import (
        EvalConfig,
        QuerySet,
        embed_perturbed,
        evaluate_query_sets,
        retrieval_accuracy,
    )

    config = EvalConfig(langs=["swh", "uig"], max_sentences=12, radii=(0.05, 0.5), attack_steps=2)
    sets = [QuerySet.load(encoder, lang, split, config, data_dir) for lang in config.langs
            for split in ("selection", "report")]
    together = evaluate_query_sets(encoder, sets, config, keep_hits=True)
    small = encoder.max_tokens
    try:
        encoder.max_tokens = 64  # a few sentences per batch
        alone = [evaluate_query_sets(encoder, [qs], config, keep_hits=True)[0] for qs in sets]
        qs = sets[0]
        pool = encoder.embed(qs.english)
        noise = embed_perturbed(encoder, qs.source_ids, pool, 0.5, "noise", 0, qs.seeds(config, "noise", 0.5))
    finally:
        encoder.max_tokens = small
    assert together == alone
    assert together[0][0]["noise_eps0.5"] == retrieval_accuracy(noise, pool)
    figures = together[0][0]
    assert figures["attacked_eps0.5"] < figures["l2e"] and figures["n"] == 12  # not vacuous: the attack bites
