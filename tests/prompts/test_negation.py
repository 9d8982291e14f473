"""Chinese negation grammar: cues that stand as words, what they reach, lists after one cue."""

from __future__ import annotations

import pytest

from imageloop.prompts.expander.rules import RulesExpander
from imageloop.prompts.negation import negation_split, strip_cues
from imageloop.prompts.segment import segments

RULES = RulesExpander()


def negated_part(clause: str) -> str:
    (start, end), _ = negation_split(clause, segments, lambda word: {"别墅": "villa", "无人": "unmanned"}.get(word))
    return clause[start:end]


@pytest.mark.parametrize(("clause", "negated"), [
    ("海边的别墅", ""),  # 别 inside a word of its own is no cue
    ("特别安静", ""),
    ("被洪水淹没的城市", ""),
    ("无人的海滩", "人"),  # a fused cue whose word is glossed as a negation
    ("无云", "云"),  # a fused cue the dictionary does not know as a word
    ("不要白天而是黄昏", "白天"),  # a turn to what is wanted ends the reach
    ("没有人的街道", "人"),  # 的 after a thing ends it: a street without people
    ("不要文字的海报", "文字"),
    ("不要模糊的背景", "模糊的背景"),  # 的 after an adjective does not: the blurry background is negated
    ("没有任何的文字", "任何的文字"),  # nor after a quantifier
    ("没有开灯的房间", "开灯"),  # nor after an action ("to turn on the light"): a room without the light on
    ("文字不要", "文字"),  # nothing after the cue: what came before
])
def test_what_a_chinese_cue_reaches(clause: str, negated: str) -> None:
    assert negated_part(clause) == negated


def test_inner_cues_are_blanked_to_the_same_length() -> None:
    assert strip_cues("文字无水印") == "文字、水印"


@pytest.mark.parametrize(("intent", "negatives", "kept"), [
    ("不要文字、水印和logo，一只猫", {"text", "watermark", "logo"}, "cat"),
    ("无文字无水印的风景壁纸", {"text", "watermark"}, "wallpaper"),
    ("无人的海滩，夕阳", {"people"}, "beach"),
    ("森林小屋，不要白天而是黄昏", {"day"}, "dusk"),
    ("雪山，不许有云", {"cloud"}, "snow"),
    ("不是卡通，是写实的老虎", {"cartoon"}, "tiger"),
    ("一只猫，不要模糊的背景", {"blurry background"}, "cat"),
    ("一座灯塔，不要船", {"boat"}, "lighthouse"),  # the person's word beside the lexicon's tag (sailboat)
    ("dog in the snow, don't make it cartoonish", {"cartoonish"}, "dog"),  # "don't make it", "do not draw"...
    ("portrait of a cat, do not use flash", {"flash"}, "portrait of cat"),
    ("a dog in the park, leave out the leash", {"leash"}, "dog"),  # leave out / get rid of / remove
    ("a kitchen, get rid of the clutter", {"clutter"}, "kitchen"),
    ("办公室里的程序员，不戴眼镜", {"eyeglasses"}, "programmer"),  # 不戴 / 不穿 / 不拿: not wearing, not holding
    ("不穿鞋的小孩", {"shoe"}, "child"),
    ("夜市，不要拥挤的人群", {"thronging crowd"}, "night market"),  # jieba tags 拥挤 (crowded) a verb
])
def test_negated_things_reach_the_negative_prompt_only(intent: str, negatives: set[str], kept: str) -> None:
    expansion = RULES.expand(intent)
    negative = set((expansion.negative or "").split(", "))
    positive = set(expansion.prompt.split(", "))
    assert negatives <= negative
    assert not negatives & positive
    assert kept in positive


@pytest.mark.parametrize("intent", ["海边的别墅，特别安静", "被洪水淹没的城市"])
def test_words_that_hold_a_cue_character_are_not_negations(intent: str) -> None:
    assert RULES.expand(intent).negative is None
