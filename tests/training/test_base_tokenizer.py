"""The embedded model's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from imageloop.training.base.tokenizer import BOS, EOS, MAX_LENGTH, PAD, build_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer(n_captions=500), folder)
    return folder


def test_round_trips_english_and_chinese(saved: Path) -> None:
    tok = PreTrainedTokenizerFast.from_pretrained(str(saved))
    for text in ["a red fox in the forest, (monochrome:1.2), rain", "一只狐狸在森林里，黑白，下雨"]:
        ids = tok(text).input_ids
        assert tok.unk_token_id not in ids
        decoded = tok.decode(ids, skip_special_tokens=True).replace(" ", "")
        assert decoded == text.replace(" ", "")


def test_clip_style_specials_and_padding(saved: Path) -> None:
    tok = AutoTokenizer.from_pretrained(str(saved))
    assert tok.model_max_length == MAX_LENGTH
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    ids = tok("cat", padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == tok.bos_token_id and tok.eos_token_id in ids
    assert ids[-1] == tok.pad_token_id and len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    long = tok("fox " * 200, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(long) == MAX_LENGTH and long[-1] == tok.eos_token_id  # truncation keeps the eos for pooling


def test_each_chinese_character_is_a_token(saved: Path) -> None:
    tok = PreTrainedTokenizerFast.from_pretrained(str(saved))
    assert tok.tokenize("黑白") == ["黑", "白"]
    assert tok.tokenize("Black AND white") == ["black", "and", "white"]


def test_build_is_deterministic() -> None:
    a, b = build_tokenizer(n_captions=300), build_tokenizer(n_captions=300)
    assert a.get_vocab() == b.get_vocab()
