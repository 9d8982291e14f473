"""How the local LLM strategy serves completions, on a tiny random Llama written where the strategy keeps its
converted model (so no GGUF is read): the cached prompt prefix changes no token, adapters are switched per user on
one base model, and requests are declined while the model loads in the background."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imageloop.config import Settings
from imageloop.prompts.expander import StrategyFailed, local_llm
from imageloop.prompts.expander.local_llm import LocalLLMExpander, added_tags, greedy_continue
from imageloop.prompts.lexicon import load_lexicon
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
PHRASES = ("red cat, night", "blue bird, forest, rain", "dog")
NEW_TOKENS = 12


@dataclass(frozen=True)
class Adapter:
    tag: str
    path: Path


class Routing:
    """Users → adapters, as the registry's routing answers."""

    def __init__(self, table: dict[str, Adapter]) -> None:
        self.table = table

    def adapter_for(self, user_id: str | None) -> Adapter | None:
        return self.table.get(user_id or "")


def _tokenizer() -> Any:
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _model(tokenizer: Any) -> Any:
    """The tiny LM with its attention scaled up, so what it writes depends on the whole prompt, not the last word."""
    import torch

    model = tiny_lm(tokenizer)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("q_proj", "k_proj", "v_proj", "o_proj")):
                param.mul_(6.0)
    return model


def _adapter(folder: Path, seed: int) -> Path:
    """A LoRA adapter on q and v with large random weights, so it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model(_tokenizer()), LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                                             target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 2.0)
    model.save_pretrained(folder)
    return folder


def _expander(tmp_path: Path, adapters: Routing | None = None, *, base_serves: bool = True,
              base_tokens: int = NEW_TOKENS) -> LocalLLMExpander:
    gguf = tmp_path / "stand-in.gguf"
    gguf.write_bytes(b"not a real gguf: the converted folder below already exists")
    settings = Settings(data_dir=tmp_path / "data", prompts={"llm_max_new_tokens": NEW_TOKENS,
                                                             "llm_base_max_new_tokens": base_tokens, "llm_threads": 1,
                                                             "llm_base_serves": base_serves})
    expander = LocalLLMExpander(settings, gguf=gguf, adapters=adapters)
    tokenizer = _tokenizer()
    _model(tokenizer).save_pretrained(expander.model_dir())
    tokenizer.save_pretrained(expander.model_dir())
    return expander


@pytest.fixture
def expander(tmp_path: Path) -> Iterator[LocalLLMExpander]:
    expander = _expander(tmp_path)
    yield expander
    expander.close()


def _uncached(model: Any, tokenizer: Any, ids: list[int], cached: int) -> tuple[str, int]:
    """What the strategy's decoding writes when the whole prompt is run from scratch: (text, new tokens)."""
    new, _ = greedy_continue(model, ids, max_new_tokens=NEW_TOKENS, penalty_from=cached,
                             stop=lambda t: t in (tokenizer.eos_token_id, tokenizer.pad_token_id)
                             or "\n" in tokenizer.decode([t]))
    return tokenizer.decode(new, skip_special_tokens=True), len(new)


def test_the_cached_prefix_gives_the_tokens_of_an_uncached_greedy_run(expander: LocalLLMExpander) -> None:
    model, tokenizer = expander.load()
    written = 0
    texts = set()
    for phrase in PHRASES:
        ids, cached = expander.prompt_ids(None, phrase)
        assert 0 < cached < len(ids)
        first = expander.complete(phrase, user=None)
        again = expander.complete(phrase, user=None)  # the kept prefix is copied, never extended in place
        assert (first.text, first.new_tokens) == _uncached(model, tokenizer, ids, cached)
        assert (again.text, again.new_tokens, again.prompt_tokens) == (first.text, first.new_tokens, len(ids))
        assert first.adapter is None
        written += first.new_tokens
        texts.add(first.text)
    assert written > 0 and len(texts) == len(PHRASES)  # real replies that depend on the prompt


def test_plain_greedy_decoding_with_a_cache_matches_transformers_generate(expander: LocalLLMExpander) -> None:
    import copy

    import torch

    model, tokenizer = expander.load()
    ids, cached = expander.prompt_ids(None, PHRASES[1])
    with torch.inference_mode():
        prefix = model(input_ids=torch.tensor([ids[:cached]]), use_cache=True).past_key_values
        reference = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
    new, finished = greedy_continue(model, ids, cache=copy.deepcopy(prefix), cached=cached,
                                    max_new_tokens=NEW_TOKENS, stop=lambda _: False, repetition_penalty=1.0,
                                    no_repeat_ngram=0)
    assert (new, finished) == (reference, False)


def test_each_user_gets_their_adapter_on_one_base_model(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    first = Adapter("expander-v1.aaaa", _adapter(tmp_path / "v1", seed=1))
    second = Adapter("expander-v2.bbbb", _adapter(tmp_path / "v2", seed=2))
    expander = _expander(tmp_path, Routing({"ann": first, "bob": second}))
    tokenizer = expander.load()[1]

    def alone(adapter: Adapter | None, phrase: str) -> tuple[str, int]:
        """The reply of a fresh model with only ``adapter`` (None: no adapter) on it."""
        model: Any = AutoModelForCausalLM.from_pretrained(expander.model_dir()).eval()
        if adapter is not None:
            model = PeftModel.from_pretrained(model, str(adapter.path)).eval()
        ids, cached = expander.prompt_ids(adapter, phrase)
        return _uncached(model, tokenizer, ids, cached)

    phrase = PHRASES[0]
    expected = {"ann": alone(first, phrase), "bob": alone(second, phrase), "cy": alone(None, phrase)}
    assert len(set(expected.values())) == 3  # the two adapters and the base model each write something else
    try:
        for user in ("cy", "ann", "bob", "ann", "cy", "bob"):
            completion = expander.complete(phrase, user=user)
            assert (completion.text, completion.new_tokens) == expected[user], user
            assert completion.adapter == {"ann": first.tag, "bob": second.tag}.get(user)
    finally:
        expander.close()


def test_without_a_trained_adapter_the_llm_declines_unless_the_base_may_serve(tmp_path: Path) -> None:
    adapter = Adapter("expander-v1.aaaa", _adapter(tmp_path / "v1", seed=1))
    expander = _expander(tmp_path, Routing({"ann": adapter}), base_serves=False)
    try:
        assert expander.expand("a red cat at night", user="cy") is None  # nothing trained serves cy: declined
        assert not expander.ready  # and nothing was loaded for it
        served = expander.expand("a red cat at night", user="ann")
        assert served is not None and served.version.endswith(adapter.tag)
    finally:
        expander.close()


def test_requests_are_declined_while_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expander = _expander(tmp_path)
    release = threading.Event()
    entered = threading.Event()
    convert = local_llm.convert_gguf

    def held_convert(gguf: Path, out_dir: Path) -> Path:
        entered.set()
        release.wait()
        return convert(gguf, out_dir)

    monkeypatch.setattr(local_llm, "convert_gguf", held_convert)
    try:
        expander.start_loading()
        expander.start_loading()  # idempotent: one load
        assert entered.wait(60)
        assert not expander.ready
        with pytest.raises(StrategyFailed, match="warming up"):
            expander.complete("red cat, night", user=None)
        with pytest.raises(StrategyFailed, match="warming up"):
            expander.expand("a red cat at night")
        release.set()
        expander.load()  # waits for the background load
        assert expander.ready
        assert expander.complete("red cat, night", user=None).prompt_tokens > 0
    finally:
        release.set()
        expander.close()


def test_a_failed_background_load_is_reported_by_every_request(tmp_path: Path) -> None:
    expander = LocalLLMExpander(Settings(data_dir=tmp_path), gguf=tmp_path / "nope.gguf", base_serves=True)
    expander.start_loading()
    with pytest.raises(Exception, match="does not exist"):
        expander.load()
    for _ in range(2):
        with pytest.raises(StrategyFailed, match="does not exist"):
            expander.complete("red cat", user=None)
    assert not expander.ready
    expander.close()


def test_added_tags_leave_out_the_phrases_own_tags_and_junk() -> None:
    lexicon = load_lexicon()
    text = "Tags: rain, soft rim light, Rain, wet fur, reflections, 雨, close-up, bokeh, film grain, detailed"
    assert added_tags(text, "little fox, rain, night", lexicon) == [
        "soft rim light", "wet fur", "reflections", "close-up", "bokeh", "film grain"]
    assert added_tags("", "fox", lexicon) == []


def test_the_speed_benchmark_reports_latency_and_token_counts(expander: LocalLLMExpander) -> None:
    from imageloop.bench.llm_speed import measure_llm_speed

    result = measure_llm_speed(expander.settings, list(PHRASES), repeats=2, expander=expander)
    assert (result["completions"], result["failures"]) == (6, 0)
    assert 0 < result["p50_seconds"] <= result["p95_seconds"]
    assert result["mean_prompt_tokens"] > result["mean_new_tokens"] > 0
    assert result["tokens_per_second"] > 0 and result["load_seconds"] > 0
    assert (result["threads"], result["max_new_tokens"]) == (1, NEW_TOKENS)
    with pytest.raises(ValueError, match="repeats"):
        measure_llm_speed(expander.settings, list(PHRASES), repeats=0, expander=expander)


def test_a_pasted_essay_is_read_only_up_to_the_phrase_cap(expander: LocalLLMExpander) -> None:
    expander.load()
    short, cached = expander.prompt_ids(None, "red cat, night")
    essay, _ = expander.prompt_ids(None, ", ".join(["red cat, night"] * 2000))
    tail = len(short) - cached - len(expander._tokens("red cat, night"))
    assert len(essay) == cached + local_llm.MAX_PHRASE_TOKENS + tail


def test_the_base_model_writes_fewer_tokens_than_a_trained_adapter(tmp_path: Path) -> None:
    adapter = Adapter("expander-v2.bbbb", _adapter(tmp_path / "v2", seed=2))
    expander = _expander(tmp_path, Routing({"bob": adapter}), base_tokens=5)
    try:
        base, trained = (expander.complete(PHRASES[0], user=user) for user in ("cy", "bob"))
    finally:
        expander.close()
    assert (base.adapter, trained.adapter) == (None, adapter.tag)
    assert (base.new_tokens, trained.new_tokens) == (5, NEW_TOKENS), (base, trained)  # both cut by their cap
