"""An expander adapter is trained on exactly the chat it is served with."""

from __future__ import annotations

from imageloop.prompts.expander.llm_prompt import adapter_prefix, user_message
from imageloop.prompts.expander.rules import english_reading
from imageloop.prompts.lexicon import load_lexicon
from imageloop.training.expander import prompt_messages


def test_training_chat_is_the_served_chat_with_the_english_reading() -> None:
    lexicon = load_lexicon()
    for intent in ("孤独的宇航员", "a lighthouse in the fog", "I want that really bleak feeling"):
        assert prompt_messages(intent) == [*adapter_prefix(), user_message(english_reading(intent, lexicon))]
    reading = english_reading("孤独的宇航员", lexicon)
    assert "astronaut" in reading and reading.isascii()  # a Chinese intent reaches the model in English
