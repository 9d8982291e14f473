"""resolve_prompt: for now the explicit prompt, else the intent unchanged, recorded as passthrough v0."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageloop.errors import InvalidRequestError
from imageloop.prompts.expand import resolve_prompt

texts = st.text(min_size=1).filter(lambda text: text.strip() != "")


@given(intent=texts, prompt=st.one_of(st.none(), texts))
def test_prompt_wins_else_intent_passes_through(intent: str, prompt: str | None) -> None:
    resolved = resolve_prompt(intent=intent, prompt=prompt, negative_prompt="blurry", language="zh")
    assert resolved.final_prompt == (prompt if prompt is not None else intent)
    assert (resolved.strategy, resolved.version) == ("passthrough", "0")
    assert (resolved.negative_prompt, resolved.language) == ("blurry", "zh")


@pytest.mark.parametrize(("intent", "prompt"), [(None, None), ("", "  "), (" \n", None)])
def test_nothing_to_draw_names_intent(intent: str | None, prompt: str | None) -> None:
    with pytest.raises(InvalidRequestError) as error:
        resolve_prompt(intent=intent, prompt=prompt)
    assert error.value.field == "intent"
