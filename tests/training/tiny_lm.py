"""A tiny random causal LM + word-level tokenizer built offline, standing in for SmolLM2 in expander tests, and
the loader that hands it to a training cycle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings
from tests.server.kit import Gate

# Training settings that let a cycle train, gate and register the expander and the reward model in seconds.
FAST_CYCLE = {"sft_max_steps": 40, "sft_epochs": 20, "dpo_max_steps": 24, "batch_size": 8, "learning_rate": 1e-2,
              "min_pairs": 8, "reward_epochs": 12, "gate_confidence": 0.9, "heldout_fraction": 0.3, "max_length": 48,
              "ab_share": 0.3, "diffusion_dpo_enabled": False, "min_heldout_items": 2,
              "meaning_min_users": 1}

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


class TinyLoader:
    """The cycle's ``expander_loader``: a fresh tiny LM each call, counted (a resumed cycle must not retrain). With a
    ``gate``, each call waits there first: the test holds the cycle inside its expander stage."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.calls = 0
        self.gate = gate

    def __call__(self, settings: Settings) -> tuple[Any, Any]:
        self.calls += 1
        if self.gate is not None:
            self.gate.pass_through()
        tokenizer = tiny_tokenizer()
        return tiny_lm(tokenizer), tokenizer
