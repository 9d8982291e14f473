"""A tiny random causal LM + word-level tokenizer built offline, standing in for SmolLM2 in expander tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

WORDS = (
    "a", "an", "the", "cat", "dog", "bird", "house", "tree", "red", "blue", "green", "night", "day", "rain", "snow",
    "fog", "sunset", "forest", "city", "beach", "river", "sky", "cozy", "bleak", "cheerful", "dreamy", "photo",
    "painting", "monochrome", "sepia", "warm", "cold", "cinematic", "lighting", "close-up", "wide", "left", "right",
    "lonely", "figure", "golden", "hour", "in", "at", "by",
)


def tiny_tokenizer() -> Any:
    """Word-level tokenizer over WORDS plus the frame words of ``prompt_text``; no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [*WORDS, "Intent", "Prompt", ":", ",", "(", ")", ".", "1", "2"]
    tokenizer.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_lm(tokenizer: Any, seed: int = 0) -> Any:
    """A one-layer Llama with hidden size 32 over ``tokenizer``'s vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(config)


def save_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """Save the tiny LM + tokenizer as a folder that ``training.expander_base`` can name."""
    tokenizer = tiny_tokenizer()
    tiny_lm(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
