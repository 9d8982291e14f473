"""The expander's training rows and gate items, from kept generations: added tags in English, what a phrasing's
people agree on (community slang stays, one person's taste goes), held-out intents, and recall."""

from __future__ import annotations

from imageloop.prompts.expander._common import KeptExample
from imageloop.prompts.expander.retrieval import agreed_tags
from imageloop.prompts.lexicon import load_lexicon
from imageloop.storage.action_history import IntentEdit
from imageloop.training.expander_eval import (
    IntentExample,
    added_tags_of,
    agreed_values,
    answer_score,
    community_examples,
    dpo_rows,
    edit_meanings,
    edited_examples,
    intent_examples,
    phrasing_words,
    recall_scores,
    sft_rows,
    split_examples,
)
from tests.training.tiny_lm import tiny_lm, tiny_tokenizer

LEXICON = load_lexicon()


def test_added_tags_are_the_kept_prompts_english_tags_the_reading_lacks() -> None:
    added = added_tags_of("fox, goblin mode, (fog:1.2), bleak, fog", "fox, goblin mode", LEXICON)
    assert added == ("fog", "bleak")  # weights dropped, the intent's own words and repeats left out
    # Chinese words a person typed into the prompt are read into English.
    assert set(added_tags_of("fox, goblin, mode，雾", "fox, goblin, mode", LEXICON)) == {"fog"}


def test_an_example_holds_the_scene_values_kept_beyond_the_intent() -> None:
    (example,) = intent_examples([{"prompt": "a fox at night, goblin mode",
                                   "completion": "fox, night, goblin mode, fog, cold lighting"}], LEXICON)
    assert example.values == {"weather": "fog", "lighting": "cold"}  # night was the person's own word


def _kept(intent: str, completion: str) -> dict[str, str]:
    return {"prompt": intent, "completion": completion}


def test_community_meaning_stays_and_personal_taste_goes() -> None:
    rows = [_kept("a fox, goblin mode", "fox, goblin mode, fog, bleak, night"),
            _kept("a frog, goblin mode", "frog, goblin mode, fog, bleak, day"),
            _kept("a house, goblin mode", "house, goblin mode, fog, bleak, sepia"),
            _kept("a fox", "fox, night"), _kept("a frog", "frog, day"), _kept("a house", "house, sepia")]
    examples = intent_examples(rows, LEXICON)
    assert phrasing_words(examples[0].reading, LEXICON) == phrasing_words(examples[1].reading, LEXICON) == {
        "goblin", "mode"}
    community = community_examples(examples, LEXICON, agreed_values(examples, LEXICON))
    assert [set(e.added) for e in community[:3]] == [{"fog", "bleak"}] * 3
    assert [e.added for e in community[3:]] == [(), (), ()]  # three people, three tastes: nothing agreed
    assert sft_rows(community)[0] == {"prompt": "a fox, goblin mode", "completion": "fog, bleak"}
    assert sft_rows(community)[3] == {"prompt": "a fox", "completion": ""}  # taught to add nothing


def test_dpo_rows_prefer_the_agreed_tags_and_drop_held_out_intents() -> None:
    examples = intent_examples([_kept("a fox, goblin mode", "fox, goblin mode, fog, bleak"),
                                _kept("a frog, goblin mode", "frog, goblin mode, fog, bleak, night"),
                                _kept("哥布林模式的房子", "房子, goblin, mode, fog, bleak")], LEXICON)
    agreed = agreed_values(examples, LEXICON)
    pairs = [{"prompt": "a house, goblin mode", "chosen": "house, goblin mode, fog, bleak, sepia",
              "rejected": "house, goblin mode, sunny"},
             {"prompt": "a cake, goblin mode", "chosen": "cake, goblin mode, fog, bleak", "rejected": "cake"}]
    rows = dpo_rows(pairs, LEXICON, agreed, exclude={"a cake, goblin mode"})
    assert rows == [{"prompt": "a house, goblin mode", "chosen": "fog, bleak", "rejected": "sunny"}]


def test_the_split_is_by_intent_and_stable() -> None:
    examples = [IntentExample(f"a fox number {i}", "fox", ()) for i in range(200)] * 2
    train, test = split_examples(examples, 0.3)
    assert {e.intent for e in train}.isdisjoint({e.intent for e in test})
    assert 0.2 < len(test) / len(examples) < 0.4
    assert split_examples(examples, 0.3) == (train, test)


def test_recall_scores_count_the_kept_values_an_answer_states() -> None:
    tokenizer = tiny_tokenizer()
    model = tiny_lm(tokenizer)
    examples = [IntentExample("a cat", "cat", (), {"weather": "fog"}), IntentExample("a dog", "dog", (), {})]
    scores, answers = recall_scores(model, tokenizer, examples, LEXICON, trained=True, max_new_tokens=4)
    assert len(scores) == len(answers) == 2
    assert scores == [answer_score(a, e, LEXICON) for a, e in zip(answers, examples, strict=True)]


def test_an_answer_is_scored_on_the_agreed_values_with_a_price_for_wrong_ones() -> None:
    goblin = IntentExample("a fox, goblin mode", "fox, goblin mode", (), {"weather": "fog", "mood": "bleak"})
    assert answer_score("fog, bleak", goblin, LEXICON) == 1.0
    assert answer_score("fog", goblin, LEXICON) == 0.5
    assert answer_score("fog, bleak, rain, sepia", goblin, LEXICON) == 0.5  # 2 right / (2 + 2 wrong)
    assert answer_score("", goblin, LEXICON) == 0.0
    plain = IntentExample("a fox at night", "fox, night", (), {})
    assert answer_score("", plain, LEXICON) == answer_score("night, detailed", plain, LEXICON) == 1.0
    assert answer_score("bleak, rain", plain, LEXICON) == 0.0  # a plain intent gets no made-up meaning


def test_the_lora_sits_on_every_linear_layer_of_the_top_layers_only() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from imageloop.training.expander import lora_config, sft_step_count

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                         num_attention_heads=2, num_key_value_heads=2))
    config = lora_config(model, rank=2, top_layers=1)
    assert config.layers_to_transform == [3]
    assert set(config.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert lora_config(model, rank=2, top_layers=0).layers_to_transform is None  # 0 = every layer
    assert sft_step_count(100, 4.0, 8, cap=120) == 50
    assert sft_step_count(1000, 4.0, 8, cap=120) == 120
    assert sft_step_count(0, 4.0, 8, cap=120) == sft_step_count(10, 4.0, 8, cap=0) == 0


def _edit(user: str, intent: str, before: str, after: str) -> IntentEdit:
    return IntentEdit(user, intent, before, after)


def test_a_phrase_means_what_its_people_add_by_hand_and_not_one_persons_taste() -> None:
    edits = [
        _edit("ada", "a fox, goblin mode", "fox, goblin mode", "fox, goblin mode, fog, bleak, night"),
        _edit("bob", "a frog, goblin mode", "frog, goblin mode, sepia", "frog, goblin mode, sepia, fog, bleak"),
        _edit("cy", "哥布林模式的房子", "房子, goblin, mode", "房子, goblin, mode，雾，下雨"),  # cy's taste: rain
        # dee's prompt already said fog (served): no chance to add it, and it does not count against it.
        _edit("dee", "a cake, goblin mode", "cake, goblin mode, fog", "cake, goblin mode, fog, bleak, day"),
        _edit("eve", "a fox, liminal space", "fox, liminal space", "fox, liminal space, dreamy"),
    ]
    meanings = edit_meanings(edits, LEXICON)
    assert meanings["goblin"] == meanings["mode"] == {("weather", "fog"), ("mood", "bleak")}
    assert "liminal" not in meanings  # one person: not yet the community's
    # Two of four people's edits (two and a half needed) would not be enough: bleak then falls out.
    assert ("mood", "bleak") not in edit_meanings(edits[:2] + edits[2:3], LEXICON).get("goblin", set())

    examples = community_examples(edited_examples([e.intent for e in edits], LEXICON), LEXICON, meanings)
    assert [e.intent for e in examples][:2] == ["a fox, goblin mode", "a frog, goblin mode"]
    assert set(examples[0].added) == {"fog", "bleak"} and examples[0].values == {"weather": "fog", "mood": "bleak"}
    assert examples[-1].added == ()  # liminal space: nothing agreed yet


def test_words_that_disagree_on_an_attribute_are_outvoted() -> None:
    meanings = {"grandpa": {("colour", "sepia")}, "core": {("colour", "sepia")},
                "style": {("colour", "monochrome")}}
    (grandpa,) = community_examples(edited_examples(["grandpa core style"], LEXICON), LEXICON,
                                    meanings)
    assert grandpa.values == {"colour": "sepia"}
    (tie,) = community_examples(edited_examples(["dark old style"], LEXICON), LEXICON,
                                {"dark": {("colour", "monochrome")}, "old": {("colour", "sepia")}})
    assert tie.values == {}


def test_retrieval_agrees_on_the_tags_most_people_kept() -> None:
    hits = [KeptExample("a fox, goblin mode", "fox, (fog:1.2), bleak, sepia", 0.95, user_id="ada"),
            KeptExample("fox, goblin mode", "fox, fog, bleak, rain", 0.9, user_id="bob"),
            KeptExample("fox but goblin mode", "fox, fog, snow", 0.85, user_id="cy"),
            KeptExample("fox but goblin mode", "fox, fog, bleak, snow", 0.84, user_id="cy")]
    assert agreed_tags(hits, min_users=2) == ["fox", "(fog:1.2)", "bleak"]  # snow: one person twice
    assert agreed_tags(hits[:1], min_users=2) == []
    assert agreed_tags(hits[:1], min_users=1) == ["fox", "(fog:1.2)", "bleak", "sepia"]
