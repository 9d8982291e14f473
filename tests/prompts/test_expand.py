"""resolve_prompt: the explicit prompt as written (passthrough), else the intent expanded (rules without a service)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageloop.config import Settings
from imageloop.errors import InvalidRequestError, ModerationError
from imageloop.prompts.expand import resolve_prompt
from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.service import PromptService

texts = st.text(min_size=1).filter(lambda text: text.strip() != "")


@given(intent=st.one_of(st.none(), texts), prompt=texts)
def test_an_explicit_prompt_passes_through(intent: str | None, prompt: str) -> None:
    resolved = resolve_prompt(intent=intent, prompt=prompt, negative_prompt="blurry", language="zh")
    assert resolved.final_prompt == prompt
    assert (resolved.strategy, resolved.version) == ("passthrough", "0")
    assert (resolved.negative_prompt, resolved.language) == ("blurry", "zh")


def test_an_intent_is_expanded_by_the_rules_without_a_service() -> None:
    resolved = resolve_prompt(intent="城市的雨夜，不要雾", prompt=None, negative_prompt="blurry")
    assert resolved.final_prompt == "city street, rain, night"
    assert resolved.negative_prompt == "blurry, fog"
    assert resolved.strategy == "rules" and resolved.version == RulesExpander().version
    assert resolved.language == "zh"


def test_the_service_moderates_intents_and_explicit_prompts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    service = PromptService(Settings(data_dir=tmp_path), strategies=[RulesExpander()])
    with pytest.raises(ModerationError) as error:
        resolve_prompt(intent="p0rn", prompt=None, service=service)
    assert error.value.category == "sexual"
    with pytest.raises(ModerationError):
        resolve_prompt(intent=None, prompt="色 情", service=service)
    assert resolve_prompt(intent="a fox", prompt=None, service=service).final_prompt == "fox"


@pytest.mark.parametrize(("intent", "prompt"), [(None, None), ("", "  "), (" \n", None)])
def test_nothing_to_draw_names_intent(intent: str | None, prompt: str | None) -> None:
    with pytest.raises(InvalidRequestError) as error:
        resolve_prompt(intent=intent, prompt=prompt)
    assert error.value.field == "intent"
