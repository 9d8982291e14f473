"""Trained expander adapters reach users: the registry's routing picks each user's adapter, the local LLM strategy
loads it once (by tag) on the one base model, switches per request, and records the tag in the expansion's version.
Runs on the tiny causal LM of :mod:`tests.training.tiny_lm`, written where the strategy keeps its converted model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.prompts.expander import local_llm
from imageloop.prompts.expander.local_llm import MODEL_NAME, LocalLLMExpander
from imageloop.storage import Storage
from imageloop.training.registry import ModelKind, Registry
from imageloop.training.serving import ExpanderRouting
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer

CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def _adapter(folder: Path, seed: int) -> Path:
    """A PEFT LoRA adapter for the tiny LM with large random weights, so it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_lm(tiny_tokenizer()), LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                                 target_modules=["q_proj", "v_proj", "o_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    model.save_pretrained(folder)
    return folder


def _expander(settings: Settings, tmp_path: Path, routing: ExpanderRouting) -> LocalLLMExpander:
    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"not a real gguf: the converted folder below already exists")
    expander = LocalLLMExpander(settings, gguf=gguf, adapters=routing)
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tiny_lm(tokenizer).save_pretrained(expander.model_dir())
    tokenizer.save_pretrained(expander.model_dir())
    return expander


def test_served_adapters_reach_the_local_llm_and_their_tag_is_recorded(
    storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        prompts={"llm_max_new_tokens": 8, "few_shot_examples": 0})
    routing = ExpanderRouting(Registry(storage.sessions, settings), ttl=0)
    expander = _expander(settings, tmp_path, routing)
    # The tiny LM writes word salad with ':' and digits; keep its words as tags (post-processing is tested elsewhere).
    monkeypatch.setattr(local_llm, "clean_llm_output",
                        lambda raw, lexicon, guard: ", ".join(w for w in raw.split() if w.isalpha()))
    base_loads: list[Any] = []
    real_load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **kw: base_loads.append(a) or real_load(*a, **kw))

    intent = "a fox in a snowy forest at night"  # lexicon words: the guard keeps the prompt usable
    assert expander.expand(intent, user="u0") is None  # nothing promoted: the LLM declines (the rules answer)
    monkeypatch.setattr(expander, "base_serves", True)
    before = expander.expand(intent, user="u0")
    assert before is not None and before.version == f"{MODEL_NAME}+base"  # the base model, where it may serve
    monkeypatch.setattr(expander, "base_serves", False)

    registry = Registry(storage.sessions, settings)
    common = {"data_hash": "h" * 64, "metrics": {}}
    current = registry.promote(registry.register(ModelKind.EXPANDER, _adapter(tmp_path / "a", 1), name="a",
                                                 **common).id)
    candidate = registry.start_ab_test(registry.register(ModelKind.EXPANDER, _adapter(tmp_path / "b", 2),
                                                         name="b", **common).id, 0.5)
    arms: dict[str, str] = {}
    for user in (f"user{i}" for i in range(64)):
        served = routing.adapter_for(user)
        assert served is not None
        arms.setdefault(served.tag, user)
    assert set(arms) == {current.tag, candidate.tag}

    on_current = expander.expand(intent, user=arms[current.tag])
    on_candidate = expander.expand(intent, user=arms[candidate.tag])
    again = expander.expand(intent, user=arms[current.tag])
    assert on_current.version == f"{MODEL_NAME}+{current.tag}"
    assert on_candidate.version == f"{MODEL_NAME}+{candidate.tag}"
    # Each adapter changes what the model writes, and switching back gives the same text again.
    raws = {before.details["raw"], on_current.details["raw"], on_candidate.details["raw"]}
    assert len(raws) == 3, raws
    assert again.details["raw"] == on_current.details["raw"]
    assert len(base_loads) == 1  # one base model: adapters are loaded onto it, not beside it

    # A rollback sends users back to the base model, without reloading it (where the base may serve; else the LLM
    # declines again).
    registry.rollback(candidate.id)
    registry.rollback(current.id)
    assert routing.adapter_for(arms[current.tag]) is None
    assert expander.expand(intent, user=arms[current.tag]) is None
    monkeypatch.setattr(expander, "base_serves", True)
    back = expander.expand(intent, user=arms[current.tag])
    assert back is not None
    assert back.version == f"{MODEL_NAME}+base" and back.details["raw"] == before.details["raw"]
    assert len(base_loads) == 1
