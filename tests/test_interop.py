"""The project's own code against the libraries of the field, on the same inputs: its in-batch contrastive loss
against sentence-transformers' MultipleNegativesRankingLoss, and its Tatoeba evaluation against MTEB's
bitext-mining evaluator (the class behind MTEB's Tatoeba task, fed the local files: no hub)."""

from __future__ import annotations

import time

import pytest
import torch

from trainables.losses import InBatchContrastiveLoss

MTEB_LANGS = ("swh", "uig", "deu")  # low, low, high resource; three scripts' worth of tokenisation
MTEB_SENTENCES = 100


@pytest.mark.parametrize("temperature", [0.05, 0.1])
def test_in_batch_loss_equals_multiple_negatives_ranking_loss(temperature):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.util import cos_sim

    gen = torch.Generator().manual_seed(0)
    # the encoder's raw pooled outputs; the project normalises them (study.encoder.embedding), cos_sim does it itself
    raw_anchors = torch.randn(16, 384, generator=gen, requires_grad=True)
    raw_positives = (raw_anchors.detach() + 0.5 * torch.randn(16, 384, generator=gen)).requires_grad_()
    normalize = torch.nn.functional.normalize
    ours = InBatchContrastiveLoss(temperature)(normalize(raw_anchors, dim=-1), normalize(raw_positives, dim=-1))
    # MNRL's own computation on precomputed embeddings (its forward only embeds the batch first)
    mnrl = MultipleNegativesRankingLoss(model=None, scale=1 / temperature, similarity_fct=cos_sim)
    theirs = mnrl.compute_loss_from_embeddings([raw_anchors, raw_positives], labels=None)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours.item(), theirs.item())
    grads = [torch.autograd.grad(loss, (raw_anchors, raw_positives)) for loss in (ours, theirs)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-7)


class _MtebModel:
    """What MTEB's evaluators call on a model: `encode(DataLoader of {"text": [...]}, ...)` and `similarity`
    (cosine, as MTEB's SentenceTransformer models use). Encodes with the exported sentence-transformers model,
    whose default prompt is "query: "."""

    def __init__(self, st_model):
        self.st_model = st_model
        self.cache = {}  # both directions encode the same two columns: once is enough

    def encode(self, inputs, **kwargs):
        texts = tuple(text for batch in inputs for text in batch["text"])
        if texts not in self.cache:
            self.cache[texts] = self.st_model.encode(list(texts), convert_to_tensor=True, batch_size=64)
        return self.cache[texts]

    def similarity(self, a, b):
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)


def test_mteb_bitext_mining_agrees_with_the_project_evaluation(encoder, model_dir, data_dir):
    """MTEB's Tatoeba accuracy on subset `<lang>-eng` (sentence1 = the language, sentence2 = English: each
    sentence1 retrieves among all sentence2) is the project's acc.<lang>.l2e; with the columns swapped, e2l."""
    from datasets import Dataset
    from mteb.tasks.bitext_mining.multilingual.tatoeba_bitext_mining import TatoebaBitextMining
    from mteb.timing import TimingStack

    from study.analysis.exporting import sentence_model
    from study.evaluation.data import load_tatoeba
    from study.evaluation.robustness import EvalConfig, evaluate_encoder

    start = time.time()
    config = EvalConfig(langs=list(MTEB_LANGS), radii=(), typo_rates=(), max_sentences=MTEB_SENTENCES,
                        english_check=False, split="all", xsts_langs=())  # the first 100 pairs, as MTEB reads them
    ours = evaluate_encoder(encoder, config, data_dir)["languages"]
    task, model = TatoebaBitextMining(), _MtebModel(sentence_model(model_dir, max_seq_length=encoder.max_length))
    rows = []
    for lang in MTEB_LANGS:
        pairs = load_tatoeba(lang, data_dir, MTEB_SENTENCES, "all")
        for direction, (first, second) in {"l2e": ("source", "english"), "e2l": ("english", "source")}.items():
            split = Dataset.from_dict({"sentence1": list(pairs[first]), "sentence2": list(pairs[second])})
            scores = task._evaluate_subset(model, split, hf_split="test", hf_subset=f"{lang}-eng",
                                           encode_kwargs={"batch_size": 64}, timer=TimingStack())
            rows.append((lang, direction, 100 * ours[lang][direction], 100 * scores["accuracy"],
                         100 * scores["f1"]))
    report = "\n".join(f"{lang} {d}: project {p:.1f}  MTEB accuracy {m:.1f} (F1 {f:.1f})"
                       for lang, d, p, m, f in rows)
    print(f"\n{report}\n({time.time() - start:.0f} s)")
    for _, _, project, mteb_accuracy, _ in rows:
        assert abs(project - mteb_accuracy) <= 0.1, report
    assert all(ours[lang]["n"] == MTEB_SENTENCES for lang in MTEB_LANGS)
