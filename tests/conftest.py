"""Shared fixtures: the real data directory, the real converted encoder, fresh copies for training.

Names are part of the contract with other test modules: `data_dir`, `model_dir`, `encoder`, `fresh_encoder`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import pytest
import torch

from study.encoder.embedding import Encoder
from study.encoder.loading import resolve_model
from study.evaluation.data import resolve_data_dir

# Once per session: the CI machines have 2 cores, and progress bars only clutter the output.
torch.set_num_threads(2)
datasets.disable_progress_bars()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data: $STUDY_DATA_DIR, else <repo>/../shared/data (never copied into the repository)."""
    path = resolve_data_dir()
    if path is None or not (path / "tatoeba").is_dir():
        pytest.fail(f"data directory not found (got {path}); set STUDY_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def model_dir() -> str:
    """The default encoder, converted into the cache (prepared here if it is missing)."""
    return resolve_model(None)


@pytest.fixture(scope="session")
def encoder(model_dir) -> Encoder:
    """The shared, read-only encoder on the CPU. Tests must not train or otherwise change its weights."""
    return Encoder.load(model_dir, device="cpu")


@pytest.fixture(scope="session")
def fresh_encoder_factory(encoder, model_dir):
    """`make()` -> an encoder with its own weights, freshly loaded from `model_dir`, free to be trained.

    The weights are loaded as `Encoder.load` loads them (eval mode, on the session encoder's device); the
    tokenizer (read-only, but ~4 s to parse) and the encoder's settings are shared with the session encoder.
    """
    from transformers import AutoModel

    def make() -> Encoder:
        model = AutoModel.from_pretrained(model_dir, use_safetensors=True, add_pooling_layer=False)
        fresh = copy.copy(encoder)
        fresh.model = model.to(encoder.device).eval()
        return fresh

    return make


@pytest.fixture
def fresh_encoder(fresh_encoder_factory) -> Encoder:
    """A new encoder per test (see `fresh_encoder_factory`): train it, break it, it is thrown away."""
    return fresh_encoder_factory()
