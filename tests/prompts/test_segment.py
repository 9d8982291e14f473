"""The segmenter keeps CC-CEDICT's words whole without swallowing the grammar around them."""

from __future__ import annotations

from imageloop.prompts.segment import _kept_whole_freq, segments


def words(text: str) -> list[str]:
    return [word for word, _ in segments(text)]


def test_a_dictionary_word_jieba_lacks_is_kept_whole() -> None:
    assert "极简主义" in words("极简主义，一棵树")  # jieba alone: 极 / 简 / 主义
    assert "全球变暖" in words("全球变暖主题")


def test_added_words_do_not_swallow_particles_or_numerals() -> None:
    assert words("暴风雨中的灯塔")[1:3] == ["中", "的"]  # CC-CEDICT's 中的 ("hit the target") is not added
    assert "一个人" not in words("一个人都没有")


def test_the_price_of_a_whole_word_beats_its_best_split() -> None:
    freq = {"甲": 10, "乙": 20, "甲乙": 0}
    assert _kept_whole_freq("甲乙", freq, 1000) == 1  # 0.01 * 0.02 * 1000 = 0.2 → 1
    freq = {"甲": 500, "乙": 500, "乙丙": 400, "丙": 1}
    assert _kept_whole_freq("甲乙丙", freq, 1000) == 201  # 甲 + 乙丙 = 0.5 * 0.4 beats 甲 + 乙 + 丙


def test_moderation_cuts_with_the_same_dictionary_whoever_cuts_first() -> None:
    from imageloop.prompts.segment import words as plain_words

    assert "极简主义" in plain_words("极简主义的海报")  # a CC-CEDICT word, also without parts of speech
    assert plain_words("金色情侣") == ["金色", "情侣"]
