"""Reading intents outside the lexicon: Chinese through jieba + CC-CEDICT, English typos, negation."""

from __future__ import annotations

import pytest

from imageloop.prompts.dictionary import load_dictionary, pick_gloss
from imageloop.prompts.lexicon import load_lexicon
from imageloop.prompts.reading import lexicon_matches_inside_words, read_intent
from imageloop.prompts.words import correct_word, is_real_word, unreal_words

LEXICON = load_lexicon()


def read(intent: str):  # type: ignore[no-untyped-def]
    return read_intent(intent, LEXICON, LEXICON.find_terms(intent))


def read_as_expanders(intent: str):  # type: ignore[no-untyped-def]
    """As the expanders read it: no lexicon match inside a word the dictionary reads (象 in 象棋, 街 in 老街)."""
    return read_intent(intent, LEXICON, lexicon_matches_inside_words(intent, LEXICON.find_terms(intent)))


def test_gloss_skips_learner_notes_and_prefers_the_common_word() -> None:
    assert pick_gloss(["(literary) to rain", "(of rain, snow etc) to fall", "to wet"]) == "wet"
    assert pick_gloss(["fiddle", "violin"]) == "violin"
    assert pick_gloss(["surname Hu", "fox", "fig. sly person"]) == "fox"
    assert pick_gloss(["CL:個|个[ge4]"]) is None
    assert pick_gloss(["not a soul in sight (idiom)"]) is None  # a negation would put "soul" in the prompt
    assert pick_gloss(["not bad", "pretty good"]) == "pretty good"
    assert pick_gloss(["station", "to stand"], verb=True) == "stand"
    # A one-word verb after a two-word first sense reads as the act ("骑": ride, not "sit astride").
    assert pick_gloss(["mounted soldier", "to sit astride", "to ride (a horse, bike etc)"], verb=True) == "ride"
    assert pick_gloss(["to look after", "to take care of", "to watch"], verb=True) == "watch"
    assert pick_gloss(["smile (archaic)", "to listen to; to hear"], verb=True) == "listen"  # "听", not "hear"
    assert pick_gloss(["to look up at", "to admire"], verb=True) == "look up"
    assert pick_gloss(["to look up", "to tilt one's head back to see"], verb=True) == "look up"


def test_the_dictionary_reads_words_the_lexicon_was_never_written_for() -> None:
    dictionary = load_dictionary()
    assert dictionary.gloss("宇航员") == "astronaut"
    assert dictionary.gloss("灯塔") == "lighthouse"
    assert dictionary.gloss("赛博朋克") == "cyberpunk"  # image terms CC-CEDICT lacks
    assert dictionary.gloss("量子计算机器人猫") is None


@pytest.mark.parametrize(("intent", "expected"), [
    ("孤独的宇航员", "lonely astronaut"),  # the modifier joins its noun across 的
    ("一座灯塔", "lighthouse"),
    ("一只corgi在海边奔跑", "corgi"),  # English inside Chinese stays English
])
def test_chinese_is_segmented_and_translated(intent: str, expected: str) -> None:
    reading = read_intent(intent, LEXICON)  # nothing left to the lexicon: every word read here
    assert expected in [p.text for p in reading.phrases]
    assert all(p.text.isascii() and p.translated == (p.source != p.text) for p in reading.phrases)


def test_english_typos_are_corrected_and_reported() -> None:
    reading = read("a cute kitten on a windowsil")
    assert "windowsill" in reading.english and reading.corrections == {"windowsil": "windowsill"}
    assert correct_word("astronuat") == "astronaut" and correct_word("lowpoly") == "low poly"
    assert correct_word("bokeh") == "bokeh"


@pytest.mark.parametrize("word", ["otter", "heron", "harp", "lute", "leash", "wren", "stormy", "dreamy", "earthy"])
def test_a_real_picture_word_of_middling_frequency_is_no_typo(word: str) -> None:
    assert correct_word(word) == word  # not "other", "hero", "hard", "late", "least", "when", "story"...


def test_a_dropped_g_and_a_rare_spelling_next_to_a_common_word_are_typos() -> None:
    assert (correct_word("sittin"), correct_word("sleepin"), correct_word("beatiful")) == (
        "sitting", "sleeping", "beautiful")


@pytest.mark.parametrize(("intent", "negated", "kept"), [
    ("an old fisherman, without people or boats", {"people", "boats"}, "old fisherman"),
    ("没有人的街道", {"people"}, None),
    ("a lighthouse, don't want seagulls", {"seagulls"}, "lighthouse"),
    ("一座灯塔，不要广告牌", {"billboard"}, "lighthouse"),
])
def test_negated_words_are_read_apart(intent: str, negated: set[str], kept: str | None) -> None:
    reading = read(intent)
    assert negated <= {p.text for p in reading.negatives}
    assert not negated & {p.text for p in reading.phrases}
    if kept is not None:
        assert kept in reading.english


def test_invented_words_are_told_from_real_ones() -> None:
    assert unreal_words("rain, foxy, snowysunshine, 85mm, ukiyo-e, snowymoonlighting") == [
        "snowysunshine", "snowymoonlighting"]
    assert is_real_word("lighthouse") and not is_real_word("snowynight")


def test_an_english_negation_ends_at_a_preposition_or_a_contrast() -> None:
    reading = read("a perfume bottle on a rock, no text or logo on the bottle")
    assert {p.text for p in reading.negatives} == {"text", "logo"}
    assert "perfume bottle" in reading.english
    reading = read("a reading nook, no lamp just candles")
    assert {p.text for p in reading.negatives} == {"lamp"} and "candles" in reading.english


def test_of_joins_a_phrase() -> None:
    assert "shallow depth of field" in read("macro, shallow depth of field").english


@pytest.mark.parametrize(("intent", "negated"), [
    ("城市夜景，请勿出现汽车", "car"),  # a cue the lexicon's own list lacks, before a lexicon word
    ("街道，路上不要有车", "car"),
    ("不希望有任何文字", "text"),
    ("草原，避开电线杆", "electric pole"),
])
def test_every_cue_negates_lexicon_words_and_read_words_alike(intent: str, negated: str) -> None:
    from imageloop.prompts.expander.rules import RulesExpander

    expansion = RulesExpander().expand(intent)
    assert negated in (expansion.negative or "").split(", ")
    assert negated not in expansion.prompt.split(", ")


def test_an_encoder_sense_far_rarer_than_the_first_is_not_used() -> None:
    assert load_dictionary().gloss("骆驼") == "camel"  # not the colloquial "ninny"


def test_a_cut_sense_does_not_end_on_a_function_word() -> None:
    assert pick_gloss(["very early in the morning"]) == "very early"
    assert pick_gloss(["according to"]) == "according to"  # a whole sense is kept as it is


def test_a_register_note_on_the_first_sense_marks_the_ordinary_meaning() -> None:
    # 奶奶: CC-CEDICT's first sense is "(informal) grandma"; the plain senses after it include "breasts".
    assert pick_gloss(["(informal) grandma (paternal grandmother)", "(respectful) mistress of the house",
                       "CL:位[wei4]", "(coll.) boobies", "breasts"]) == "grandma"
    assert pick_gloss(["lamp", "(polite) your lamp"]) == "lamp"  # on a later sense the note still marks a narrower use
    assert pick_gloss(["(slang) boss", "manager"]) == "manager"  # slang stays out wherever it is
    assert load_dictionary().gloss("奶奶") == "grandma"


def test_a_sense_in_a_field_is_read_and_a_register_note_is_not() -> None:
    assert pick_gloss(["(machine) gear", "pinion (gear wheel)"]) == "gear"
    assert pick_gloss(["(literary) to rain", "to wet"]) == "wet"
    assert load_dictionary().gloss("齿轮") == "gear"


@pytest.mark.parametrize(("intent", "phrase"), [
    ("一碗牛肉面", "bowl of beef noodle soup"),  # a container measure word is a thing in the picture
    ("一群锦鲤", "group of koi"),
    ("一个人在等车", "person"),  # counted as one: a person, not people
    ("一个戴防毒面具的人", "person"),  # the count reaches the noun its relative clause describes
])
def test_measure_words_and_counts_are_read(intent: str, phrase: str) -> None:
    assert phrase in [p.text for p in read(intent).phrases]


def test_a_plural_stays_plural_without_a_count() -> None:
    assert "people" in [p.text for p in read("一个女孩和很多人").phrases]


def test_a_name_jieba_tags_as_an_adverb_is_still_read() -> None:
    assert load_dictionary().is_name("莫奈") and not load_dictionary().is_name("灯塔")
    assert "claude monet" in read("莫奈风格的睡莲池塘").english


@pytest.mark.parametrize(("intent", "decade"), [
    ("90年代电脑界面", "90s"), ("八十年代的海报", "80s"), ("1990年代的街头", "1990s"),
])
def test_a_decade_is_read_as_one(intent: str, decade: str) -> None:
    phrases = [p.text for p in read(intent).phrases]
    assert decade in phrases and "era" not in phrases


def test_a_character_before_a_colour_is_a_colour() -> None:
    phrases = [p.text for p in read("蒸汽波，粉紫色，蓝紫色调").phrases]
    assert "pink" in phrases and "powder" not in phrases
    assert "tone" in phrases and "transfering" not in phrases


@pytest.mark.parametrize(("intent", "phrase"), [("一只橘猫", "orange cat"), ("一只灰狼", "gray wolf"),
                                                ("一只粉兔", "pink rabbit")])
def test_a_colour_character_keeps_its_colour_in_a_word_the_dictionary_lacks(intent: str, phrase: str) -> None:
    phrases = [p.text for p in read(intent).phrases]
    assert phrase in phrases


def test_a_first_character_that_is_no_plain_colour_keeps_its_own_sense() -> None:
    assert "tea room" in [p.text for p in read("竹林里的茶室").phrases]  # 茶色 is "tea-colored", not a colour word


def test_a_measure_word_after_a_request_verb_counts_the_noun_after_it() -> None:
    # jieba reads "画个头像" as 画/个头/像 ("height", "resemble"); 个 is the measure word and 头像 one word.
    assert [p.text for p in read("帮我画个头像").phrases] == ["portrait"]
    # ... only when the rest makes a word: in "画个子很高的女孩" 个子 (height) stays.
    assert "stature" in [p.text for p in read("画个子很高的女孩").phrases]


def test_a_character_before_a_colour_the_lexicon_reads_is_still_a_colour() -> None:
    # The lexicon takes 蓝色 (blue); 灰 before it is gray, not "ash".
    assert [p.text for p in read("灰蓝色的海").phrases] == ["gray"]


def test_a_colour_word_the_dictionary_lacks_is_its_colour_without_the_suffix() -> None:
    # 米黄色 is not in CC-CEDICT; 米黄 is (beige): not "rice yellow" from the parts.
    assert "beige" in [p.text for p in read("米黄色的墙").phrases]


@pytest.mark.parametrize(("intent", "phrase", "not_phrase"), [
    ("小男孩骑着马", "riding horse", "horse"),  # jieba's one word 骑着马: verb, particle, noun
    ("骑自行车的少年", "riding", "sitting astride"),
    ("透过舷窗看地球", "watching", "looking after"),
    ("墙上挂着一幅画", "painting", None),  # a counted 画 is a painting, not the request verb
    ("拿着花的女孩", "flower", "spending"),  # after 着 comes the object: 花 is a flower here
    ("穿着西装的男人", "wearing", "clothes"),  # 穿着 before its object is the verb, not "attire"
])
def test_verbs_with_their_particles_and_objects(intent: str, phrase: str, not_phrase: str | None) -> None:
    texts = [p.text for p in read(intent).phrases]
    assert phrase in texts
    assert not_phrase is None or not_phrase not in texts


def test_a_verb_with_its_particle_and_nothing_after_it_keeps_its_own_sense() -> None:
    assert "sinking" not in [p.text for p in read("他很沉着").phrases]  # 沉着 is calm; no object follows


@pytest.mark.parametrize("intent", ["门口的大个子", "一个大个子"])
def test_a_noun_jieba_tags_as_a_numeral_is_read_after_de_or_a_count(intent: str) -> None:
    assert "big stature" in [p.text for p in read(intent).phrases]  # jieba's dictionary tags 大个子 "m"


def test_shaonian_is_a_teenage_boy_wherever_it_stands() -> None:
    # jieba tags 少年 as a numeral; as an image term it is a noun everywhere ("滑板少年": no longer dropped)
    assert "teenage boy" in [p.text for p in read("滑板少年在公园").phrases]


def test_a_place_name_jieba_tags_is_read_as_the_place() -> None:
    assert "kyoto" in [p.text for p in read("下雪的京都寺庙").phrases]  # CC-CEDICT's common sense is "capital"


@pytest.mark.parametrize(("intent", "phrase", "not_phrase"), [
    ("汉堡和薯条", "hamburger", "hamburg"),
    ("天桥上的少女", "pedestrian bridge", "tianqiao"),
    ("朝阳下的寺庙", "morning sun", "chaoyang"),
])
def test_a_common_word_jieba_tags_as_a_place_is_the_common_word(intent: str, phrase: str, not_phrase: str) -> None:
    texts = [p.text for p in read(intent).phrases]
    assert phrase in texts
    assert not_phrase not in texts


def test_an_everyday_word_whose_dictionary_sense_misleads_comes_from_the_image_terms() -> None:
    assert "old woman" in [p.text for p in read("一个老奶奶在织毛衣").phrases]  # not "paternal great-grandmother"


@pytest.mark.parametrize(("intent", "phrase"), [
    ("侧脸特写", "side profile"),  # jieba: lean + face
    ("一辆红色跑车", "sports car"),  # CC-CEDICT's first sense: racing bicycle
    ("线稿，一只猫头鹰", "line art"),  # not in CC-CEDICT: "thread draft"
    ("很酷的女孩", "cool girl"),  # CC-CEDICT's first senses: ruthless, strong
    ("一家三口在野餐", "family of three"),  # jieba: two numerals, so the family was dropped
    ("浅景深人像", "shallow depth of field"),  # 浅 first reads jian1, "sound of moving water"
])
def test_art_community_and_everyday_words_the_dictionary_misreads(intent: str, phrase: str) -> None:
    from imageloop.prompts.expander.rules import RulesExpander

    assert phrase in RulesExpander().expand(intent).prompt.split(", ")


@pytest.mark.parametrize(("intent", "phrase", "not_phrase"), [
    ("帅哥站在天台上", "rooftop", "on stage"),  # jieba: 天 / 台上
    ("夕阳下的老街上", "old street", "old on the street"),  # jieba: 老 / 街上; 老街 is only a place name
    ("海面上的小船", "sea surface", None),
    ("桃花树下的女孩", "tree", "cultivating"),  # jieba tags 树 a verb ("to cultivate")
])
def test_a_locative_jieba_joins_to_the_next_word_goes_back_to_its_place(
        intent: str, phrase: str, not_phrase: str | None) -> None:
    from imageloop.prompts.expander.rules import RulesExpander

    tags = RulesExpander().expand(intent).prompt.split(", ")  # the lexicon's own words (街, 海) read whole
    assert phrase in tags
    assert not_phrase is None or not_phrase not in tags


def test_what_a_lexicon_match_leaves_of_a_word_is_read_when_it_is_a_word() -> None:
    from imageloop.prompts.expander.rules import RulesExpander

    tags = RulesExpander().expand("春天的樱花雨").prompt.split(", ")  # the lexicon reads 雨 inside jieba's 樱花雨
    assert "cherry blossoms" in tags and "rain" in tags
    assert "flower" not in RulesExpander().expand("雪花飘落").prompt.split(", ")  # 花 alone is no word to keep


def test_the_progressive_marker_is_no_thing_and_a_word_before_zhe_is_a_verb() -> None:
    chasing = [p.text for p in read("一只猫正在追蝴蝶").phrases]
    assert "just at" not in chasing  # 正在: "in the middle of (doing)"
    winged = [p.text for p in read("长着翅膀的猫").phrases]
    assert "growing" in winged and "length" not in winged  # jieba tags 长 an adjective ("long", "length")


def test_a_register_note_holds_for_every_part_of_its_sense_and_a_scope_note_for_its_own() -> None:
    from imageloop.prompts.dictionary import usable_senses

    machine = usable_senses(["locomotive; train engine car", "(Tw) scooter",
                             "(Tw) (slang) hard to get along with; to be a pain in the ass"])
    assert machine == ["locomotive", "train engine car"]  # no "a pain" from the slang sense
    assert "delicate" in usable_senses(["(of skin etc) smooth; satiny; delicate"])


def test_a_reading_that_is_a_variant_of_another_character_comes_after_the_characters_own() -> None:
    # CC-CEDICT lists 鳥 diao3 ("variant of 屌; penis") before niao3 ("bird")
    assert load_dictionary().gloss("鸟") == "bird"
    assert "bird" in [p.text for p in read("一只鸟").phrases]


def test_a_cut_sense_never_ends_on_a_copula() -> None:
    # "little girl who is older than another young child (e.g. her playmate)": cut to four words, not "who is"
    from imageloop.prompts.dictionary import cedict_senses

    assert pick_gloss(cedict_senses()["小姐姐"]) == "little girl"  # (the image terms read it "young woman")


@pytest.mark.parametrize(("word", "gloss"), [
    ("衣裳", "clothes"),  # "(coll.) clothes": a colloquial first sense is the word's ordinary meaning
    ("枣", "jujube"),  # "(bound form) jujube; Chinese date"
    ("蔷薇", "japanese rose"),  # a sense that opens with "Japanese" is no "Japanese variant of"
    ("眶", "eye socket"),  # not "taiwan pr", from "Taiwan pr. [kuang1]"
])
def test_colloquial_and_bound_first_senses_are_ordinary_and_pronunciation_notes_no_sense(word: str, gloss: str) -> None:
    assert load_dictionary().gloss(word) == gloss


def test_a_hyphenated_sense_is_not_one_common_word() -> None:
    # "lady-killer" is as rare as "killer"; it is no plainer word than the first sense
    assert pick_gloss(["handsome guy", "lady-killer", "handsome (form of address)"]) == "handsome guy"


def test_a_loanword_english_rarely_uses_is_read_by_its_description() -> None:
    dictionary = load_dictionary()
    assert dictionary.gloss("古筝") == "large zither"  # "guzheng (large zither with 13 to 25 strings, ...)"
    assert dictionary.gloss("窑洞") == "cave dwelling"  # "yaodong (a kind of cave dwelling in the Loess Plateau ...)"


def test_a_count_fused_to_a_one_character_noun_is_that_noun() -> None:
    assert "dragon" in [p.text for p in read("一条龙盘在山上").phrases]  # not the idiom "integrated chain"


def test_no_shipped_sense_ends_on_a_dangling_function_word() -> None:
    import json
    from importlib import resources

    chosen = json.loads(resources.files("imageloop").joinpath("data/zh_senses.json").read_text(encoding="utf-8"))
    # A whole sense may end on a preposition ("full of"); a cut one never ends on a relative word.
    dangling = [gloss for gloss in chosen.values() if gloss.split()[-1] in ("where", "which", "whose", "who")]
    assert dangling == []  # "龙门": "mythical dragon gate", not "... gate where"


def test_a_long_verb_sense_gives_way_to_the_shortest() -> None:
    # 仰视: "to tilt one's head back to see; to look up at": no one-word verb, so the shortest sense.
    from imageloop.prompts.dictionary import cedict_senses

    assert pick_gloss(cedict_senses()["仰视"], verb=True) == "look up at"  # (the image terms read 仰视 as a shot)


def test_cheng_after_the_request_verb_is_as_not_succeed() -> None:
    reading = read("一只猫，别画成卡通")  # "don't draw it as a cartoon"
    assert [p.text for p in reading.negatives] == ["cartoon"]


def test_an_english_preposition_of_place_splits_phrases() -> None:
    assert "steampunk airship" in [p.text for p in read("steampunk airship above the clouds").phrases]


@pytest.mark.parametrize(("intent", "phrase"), [
    ("春天的油菜花田", "oilseed rape flower"),  # 油菜 + 花, not 油 + 菜花 "oil cauliflower"
    ("一张通话费账单", "phone call fee"),  # 通话 + 费, not "open call charge"
    ("一个小女孩", "small girl"),  # a modifier character first: 小 + 女孩
    ("老父亲的背影", "old father"),  # 老 + 父亲, not "father parent"
])
def test_a_compound_the_dictionary_lacks_is_split_where_its_head_is(intent: str, phrase: str) -> None:
    assert phrase in [p.text for p in read(intent).phrases]


@pytest.mark.parametrize(("word", "english"), [
    ("上海", "shanghai"),  # "Shanghai municipality, central east China"
    ("杭州", "hangzhou"),  # "Hangzhou subprovincial city and capital of Zhejiang province"
    ("四川", "sichuan"),  # "Sichuan province (Szechuan) in southwest China"
    ("莫奈", "claude monet"),  # a person's name is read as before
])
def test_a_place_is_its_own_name_without_what_the_dictionary_says_of_it(word: str, english: str) -> None:
    assert load_dictionary().gloss(word) == english


def test_a_measure_word_after_the_request_verb_is_no_thing() -> None:
    texts = [p.text for p in read("来张赛博朋克的头像").phrases]
    assert "portrait" in texts and "sheet of paper" not in texts


@pytest.mark.parametrize(("intent", "phrase", "not_phrase"), [
    ("ins风的咖啡店", "style", "wind"),  # 风 after a Latin word is its style
    ("y2k风的女孩", "style", "wind"),
    ("海边的风", "wind", "style"),
])
def test_feng_after_a_latin_word_is_a_style(intent: str, phrase: str, not_phrase: str) -> None:
    texts = [p.text for p in read(intent).phrases]
    assert phrase in texts and not_phrase not in texts


def test_a_reading_that_is_an_old_unit_of_measure_comes_after_the_characters_own() -> None:
    # CC-CEDICT lists 石 dan4 ("dry measure for grain ...") before shi2 ("rock; stone")
    assert load_dictionary().gloss("石") == "rock"


@pytest.mark.parametrize(("intent", "phrase"), [
    ("小木屋前有一只熊", "small wooden house"),  # was "house": three single characters, 木 read as "tree"
    ("打字机放在木桌上", "wooden table"),  # jieba's 木/桌上: the material stays before its thing
    ("古老的石桥", "stone bridge"),  # not "bridge" alone
    ("一张皮沙发", "leather sofa"),
])
def test_a_material_before_a_thing_is_what_it_is_made_of(intent: str, phrase: str) -> None:
    assert phrase in [p.text for p in read(intent).phrases]


def test_a_material_in_a_colour_word_or_alone_is_the_dictionarys() -> None:
    assert "earth yellow" in [p.text for p in read("土黄色的墙").phrases]
    assert "stone" in [p.text for p in read("一块石头").phrases]


@pytest.mark.parametrize(("intent", "phrase"), [
    ("快递员在雨里送包裹", "express delivery worker"),  # jieba's 快递/员: the suffix is no measure word
    ("一个咖啡师", "coffee specialist"),  # not "coffee teacher"
    ("一个外卖员", "takeout worker"),
    ("芭蕾舞者", "ballet dancer"),  # 舞者 is a word of its own: dancer
])
def test_a_job_suffix_makes_the_person(intent: str, phrase: str) -> None:
    assert phrase in [p.text for p in read(intent).phrases]


def test_a_one_character_action_before_a_locative_moves() -> None:
    texts = [p.text for p in read("一盏孔明灯升上夜空").phrases]
    assert "ascending" in texts and "liter" not in texts
    assert "tree" in [p.text for p in read("桃花树下").phrases]  # 树's first sense is a thing: under the tree


def test_a_verb_is_read_in_the_reading_with_by_far_the_most_verb_senses() -> None:
    # CC-CEDICT lists 追 dui1 ("to sculpt") before zhui1 ("to chase; to pursue; ...")
    assert load_dictionary().gloss("追", verb=True) == "chase"
    assert load_dictionary().gloss("看", verb=True) == "watch"  # kan1 has 4 verb senses to kan4's 10: it stays


@pytest.mark.parametrize(("intent", "phrase", "not_phrase"), [
    ("树下弹琵琶的女子", "plucking", "bullet"),  # jieba's 树/下弹/琵琶: 弹 plays the pipa under the tree
    ("篝火旁弹吉他的年轻人", "plucking", "bullet"),
    ("老爷爷在公园下象棋", "chinese chess", "down chinese chess"),  # jieba's 下象棋, a word CC-CEDICT lacks
])
def test_a_locative_fused_onto_the_next_word_is_split_off(intent: str, phrase: str, not_phrase: str) -> None:
    texts = [p.text for p in read_as_expanders(intent).phrases]
    assert phrase in texts and not_phrase not in texts


def test_a_modal_verb_is_no_picture() -> None:
    assert [p.text for p in read("会飞的鲸鱼").phrases] == ["flying", "whale"]  # not "likely to"


def test_a_literal_note_holds_nothing_back_and_a_noted_verb_sense_is_a_verb_sense() -> None:
    assert pick_gloss(["(lit. and fig.) stage; arena"]) == "stage"  # 舞台, was "arena"
    assert pick_gloss(["to run", "to jog", "(military) to march at the double"]) == "run"  # 跑步


def test_an_unknown_verb_and_object_is_the_act_and_its_thing() -> None:
    assert "listening song" in [p.text for p in read("戴着耳机听歌的少年").phrases]  # not 听 "smile (archaic)"


@pytest.mark.parametrize(("intent", "not_phrase"), [
    ("希腊圣托里尼", "buddhist nun"),  # jieba's 圣托/里尼 are parts of a name, no locative and 尼
    ("坐在月球上看地球", "sitting exist"),  # 坐在: the verb and its particle, not a verb and an object
    ("消防员从火里抱出一只猫", "holding classifier for dramas"),  # 抱出: a verb and its direction
])
def test_what_splits_and_joins_words_leaves_names_particles_and_directions_alone(intent: str, not_phrase: str) -> None:
    assert not_phrase not in [p.text for p in read(intent).phrases]


def test_image_words_the_dictionary_gets_wrong_in_a_picture_request() -> None:
    assert "silhouette" in [p.text for p in read("逆光下的少女剪影").phrases]  # not "outline"
    assert "photographed" in [p.text for p in read("长焦镜头拍的月亮").phrases]  # not "pat"


def test_a_common_word_that_names_a_place_elsewhere_is_the_common_word() -> None:
    # CC-CEDICT knows 老街 only as "Lao Cai, Vietnam" and 大树 as a township in Taiwan; jieba tags both common nouns.
    assert "old street" in [p.text for p in read_as_expanders("灯笼挂满了老街").phrases]
    assert "big tree" in [p.text for p in read("一棵大树").phrases]
    assert "milky way" in [p.text for p in read("星空下的银河").phrases]  # a name known on its own stays


def test_a_place_name_beside_its_transliteration_is_read_by_its_english() -> None:
    assert load_dictionary().gloss("西湖") == "west lake"  # "Xihu or West lake (place name)", was "place name"


def test_an_action_after_zai_is_in_progress() -> None:
    texts = [p.text for p in read("两个小朋友在玩沙子").phrases]
    assert "playing" in texts and "toy" not in texts  # jieba tags 玩 a noun there
    assert "tree" in [p.text for p in read("小鸟在树上").phrases]  # a place after 在 stays a place


def test_an_image_term_jieba_knows_as_an_adjective_or_verb_keeps_that_tag() -> None:
    from imageloop.prompts.segment import segments

    assert dict(segments("模糊的背景"))["模糊"].startswith("a")  # so it describes the background after 的
    assert dict(segments("门口的少年"))["少年"] == "n"  # jieba's numeral tag is overridden
    assert "glowing" in [p.text for p in read("深海里发光的水母").phrases]
