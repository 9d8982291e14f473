"""The same rows train the same expander adapter, whatever used torch's global generator before the cycle."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from imageloop.config import Settings
from imageloop.training.expander import ExpanderTrainer
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer

SFT = [{"prompt": "a cozy cat", "completion": "cat, warm lighting"}, {"prompt": "a bleak city", "completion": "rain"}]
DPO = [{"prompt": "a bleak city", "chosen": "rain, monochrome", "rejected": "sunset"}] * 2


def _train(folder: Path, noise: int) -> dict[str, torch.Tensor]:
    settings = Settings(data_dir=folder / "data", training={"sft_max_steps": 2, "dpo_max_steps": 2, "batch_size": 2,
                                                            "max_length": 32})
    tokenizer = tiny_tokenizer()
    model = tiny_lm(tokenizer)
    torch.randn(noise)  # whatever ran in the process before the cycle moved the global generator
    ExpanderTrainer(model, tokenizer, settings).train(SFT, DPO, folder / "out")
    return load_file(str(folder / "out" / "adapter" / "adapter_model.safetensors"))


def test_a_fresh_adapter_trains_the_same_from_the_same_rows(tmp_path: Path) -> None:
    first, second = _train(tmp_path / "a", 3), _train(tmp_path / "b", 11)
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[name], second[name]) for name in first)
