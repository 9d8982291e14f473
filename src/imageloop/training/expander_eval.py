"""What the expander adapter learns from, and how it is judged: intents and the words people kept for them.

An adapter is served the intent read into English tags (:func:`~imageloop.prompts.expander.rules.english_reading`)
and answers with the tags to ADD (the local-LLM strategy keeps the intent's own words itself). So a kept generation
becomes one :class:`IntentExample`: the intent, its reading, and the kept final prompt's tags that the reading lacks
(Chinese tags a person typed are read into English first), plus the scene values those tags state
(``weather=fog``, ``mood=bleak``): what people kept for this intent beyond what they said.

The gate asks the question that matters: on intents held out of training (by a stable hash of the intent text), does
the candidate produce the scene values people kept for them? :func:`recall_scores` gives one score per held-out
example (the share of its kept values the model's answer states) for a model with its adapter, or for the base
model served as it would be without one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from imageloop.prompts.expander.llm_prompt import enrich_prefix, user_message
from imageloop.prompts.expander.local_llm import greedy_continue
from imageloop.prompts.expander.rules import english_reading, plan_scene
from imageloop.prompts.language import resolve_language
from imageloop.prompts.lexicon import Lexicon, normalise_text, parse_tag
from imageloop.prompts.usual import split_tags
from imageloop.storage.action_history import IntentEdit
from imageloop.training.data import Row, heldout

__all__ = [
    "IntentExample",
    "added_tags_of",
    "agreed_values",
    "answer_score",
    "community_examples",
    "dpo_rows",
    "edit_meanings",
    "edited_examples",
    "intent_examples",
    "phrasing_words",
    "recall_scores",
    "scene_values",
    "sft_rows",
    "split_examples",
]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class IntentExample:
    """One kept generation seen as the expander sees it."""

    intent: str
    reading: str
    added: tuple[str, ...]  # the kept prompt's tags (in English) the reading lacks, in the kept prompt's order
    values: dict[str, str] = field(default_factory=dict)  # scene values the added tags state beyond the intent's


def scene_values(text: str, lexicon: Lexicon) -> dict[str, str]:
    """Attribute -> value key that ``text`` states (the subject left out: it is the intent's own)."""
    plan = plan_scene(text, lexicon, resolve_language(text, None))
    return {attribute: value.key for attribute, value in plan.values.items() if attribute != "subject"}


def _english_tags(prompt: str, lexicon: Lexicon) -> list[str]:
    """The prompt's tags without weights, a Chinese tag read into English tags."""
    out: list[str] = []
    for raw in split_tags(prompt):
        text = parse_tag(raw).text.strip()
        if not text:
            continue
        out.extend(split_tags(english_reading(text, lexicon)) if _CJK.search(text) else [text])
    return out


def added_tags_of(prompt: str, reading: str, lexicon: Lexicon) -> tuple[str, ...]:
    """The English tags of ``prompt`` that ``reading`` (an intent's English tags) does not have, without repeats."""
    own = {normalise_text(tag) for tag in split_tags(reading)}
    added: dict[str, str] = {}
    for tag in _english_tags(prompt, lexicon):
        key = normalise_text(tag)
        if key and key not in own and key not in added:
            added[key] = tag
    return tuple(added.values())


@lru_cache(maxsize=4096)
def _is_subject(word: str, lexicon: Lexicon) -> bool:
    return "subject" in plan_scene(word, lexicon, resolve_language(word, None)).values


def phrasing_words(reading: str, lexicon: Lexicon) -> frozenset[str]:
    """The words of an intent's reading other than its subject's: what intents about different things share
    ("goblin", "mode"; a Chinese intent's reading shares them with the English one)."""
    words = re.findall(r"[a-z0-9][a-z0-9'-]*", normalise_text(reading))
    return frozenset(w for w in words if len(w) > 2 and not _is_subject(w, lexicon))


def agreed_values(examples: Sequence[IntentExample], lexicon: Lexicon, *, min_share: float = 0.5,
                  min_count: int = 3) -> dict[str, set[tuple[str, str]]]:
    """Phrasing word (:func:`phrasing_words`) -> the scene values most people kept when they used it: at least
    ``min_count`` kept examples with the word, and at least ``min_share`` of them, kept the value."""
    uses: dict[str, int] = {}
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for example in examples:
        for word in phrasing_words(example.reading, lexicon):
            uses[word] = uses.get(word, 0) + 1
            tally = counts.setdefault(word, {})
            for item in example.values.items():
                tally[item] = tally.get(item, 0) + 1
    return {word: {item for item, n in tally.items() if n >= min_count and n >= min_share * uses[word]}
            for word, tally in counts.items()}


def edit_meanings(edits: Sequence[IntentEdit], lexicon: Lexicon, *, min_share: float = 0.5,
                  min_users: int = 3) -> dict[str, set[tuple[str, str]]]:
    """Phrasing word -> the scene values people add by hand after it: what the word means to its community.

    A person edits a prompt to add what the image lacked. For a word ("goblin") and a value (``weather=fog``), every
    person who edited a prompt for an intent with that word while the prompt lacked the value had the chance to add
    it; the value is agreed when at least ``min_users`` people added it and at least ``min_share`` of those who had
    the chance did. A person's own taste is added by that person alone and stays out; a value the served prompt
    already carries (once the meaning is learnt) gives no chance, so later edits do not dilute it. Unlike kept
    prompts, edits never carry values that merely rode along in what was served."""
    chances: dict[tuple[str, tuple[str, str]], set[str]] = {}
    added_by: dict[tuple[str, tuple[str, str]], set[str]] = {}
    for edit in edits:
        reading = english_reading(edit.intent, lexicon)
        words = phrasing_words(reading, lexicon)
        if not words:
            continue
        before, after = _all_values(edit.before, lexicon), _all_values(edit.after, lexicon)
        added = after - before
        stated = set(scene_values(reading, lexicon).items())
        for value in _every_value(lexicon) - before - stated:
            for word in words:
                chances.setdefault((word, value), set()).add(edit.user_id)
                if value in added:
                    added_by.setdefault((word, value), set()).add(edit.user_id)
    out: dict[str, set[tuple[str, str]]] = {}
    for (word, value), users in added_by.items():
        if len(users) >= min_users and len(users) >= min_share * len(chances[(word, value)]):
            out.setdefault(word, set()).add(value)
    return out


def _all_values(prompt: str, lexicon: Lexicon) -> set[tuple[str, str]]:
    """Every scene value ``prompt`` names (two of one attribute included), its Chinese tags read into English."""
    named = lexicon.attributes_in(", ".join(_english_tags(prompt, lexicon)))
    return {(a, k) for a, keys in named.items() if a != "subject" for k in keys}


@lru_cache(maxsize=4)
def _every_value(lexicon: Lexicon) -> frozenset[tuple[str, str]]:
    return frozenset((a, k) for a in lexicon.attributes if a != "subject" for k in lexicon.keys(a))


def edited_examples(intents: Sequence[str], lexicon: Lexicon) -> list[IntentExample]:
    """One example per distinct intent people edited or typed (no tags yet: :func:`community_examples` gives it the
    agreed ones)."""
    distinct = dict.fromkeys(intent.strip() for intent in intents if intent.strip())
    return [IntentExample(intent, english_reading(intent, lexicon), ()) for intent in distinct]


def _agreed_for(reading: str, agreed: dict[str, set[tuple[str, str]]], lexicon: Lexicon) -> set[tuple[str, str]]:
    """The agreed values of ``reading``'s words, one per attribute: where its words disagree on an attribute
    ("style" in two phrases), the value more of its words agree on; a tie says neither."""
    votes: dict[tuple[str, str], int] = {}
    for word in phrasing_words(reading, lexicon):
        for value in agreed.get(word, set()):
            votes[value] = votes.get(value, 0) + 1
    out: set[tuple[str, str]] = set()
    for attribute in {a for a, _ in votes}:
        ranked = sorted(((n, k) for (a, k), n in votes.items() if a == attribute), reverse=True)
        if len(ranked) == 1 or ranked[0][0] > ranked[1][0]:
            out.add((attribute, ranked[0][1]))
    return out


def _agreed_tags(tags: Sequence[str], keep: set[tuple[str, str]], lexicon: Lexicon) -> tuple[str, ...]:
    """The tags stating a value of ``keep``, then the lexicon's word for each value of ``keep`` none of them
    states (an edited intent has no kept tags: its agreed values are written out)."""
    chosen = [t for t in tags if set(scene_values(t, lexicon).items()) & keep]
    stated = set(scene_values(", ".join(chosen), lexicon).items()) if chosen else set()
    written = [lexicon.canonical(a, k) for a, k in sorted(keep - stated)
               if not any(a2 == a for a2, _ in stated)]
    return (*chosen, *written)


def community_examples(examples: Sequence[IntentExample], lexicon: Lexicon,
                       agreed: dict[str, set[tuple[str, str]]]) -> list[IntentExample]:
    """Each example with the values people agree on for its phrasing's words (``agreed``: :func:`edit_meanings`,
    :func:`agreed_values`) and the tags that state them: its own kept tags where they do, the lexicon's word else.

    What one person adds to every intent (their own taste) is spread thin over a phrasing and goes: per-user memory
    serves it, and an adapter shared by everyone should not guess it. What a phrasing means to the community
    ("goblin mode" -> fog, bleak) is kept by nearly everyone who used it, and stays."""
    out: list[IntentExample] = []
    for example in examples:
        stated = scene_values(example.reading, lexicon)
        keep = {(a, k) for a, k in _agreed_for(example.reading, agreed, lexicon) if a not in stated}
        out.append(IntentExample(example.intent, example.reading, _agreed_tags(example.added, keep, lexicon),
                                 dict(sorted(keep))))
    return out


def intent_examples(sft: Sequence[Row], lexicon: Lexicon) -> list[IntentExample]:
    """One example per exported SFT row (``prompt`` = intent, ``completion`` = kept final prompt)."""
    out: list[IntentExample] = []
    for row in sft:
        intent = str(row.get("prompt") or "").strip()
        if not intent:
            continue
        reading = english_reading(intent, lexicon)
        added = added_tags_of(str(row.get("completion") or ""), reading, lexicon)
        stated = scene_values(reading, lexicon)
        values = {a: v for a, v in scene_values(", ".join(added), lexicon).items() if stated.get(a) != v}
        out.append(IntentExample(intent, reading, added, values))
    return out


def split_examples(examples: Sequence[IntentExample], fraction: float) -> tuple[list[IntentExample],
                                                                                list[IntentExample]]:
    """(train, held-out) by a stable hash of the intent text: a held-out intent is never trained on."""
    train = [e for e in examples if not heldout(e.intent, fraction)]
    test = [e for e in examples if heldout(e.intent, fraction)]
    return train, test


def sft_rows(examples: Sequence[IntentExample]) -> list[Row]:
    """SFT rows in the served format: the intent (read by the trainer's prompt) -> the tags to add (none: the
    adapter learns to add nothing where people agree on nothing)."""
    return [{"prompt": e.intent, "completion": ", ".join(e.added)} for e in examples]


def dpo_rows(dpo: Sequence[Row], lexicon: Lexicon, agreed: dict[str, set[tuple[str, str]]], *,
             exclude: set[str]) -> list[Row]:
    """The exported DPO rows (intent, kept prompt, rerolled-away prompt) in the served format: the kept side adds
    the tags of the values people agree on for its words (``agreed``), the other side what it added. Pairs of
    ``exclude``d intents, pairs whose kept side adds nothing agreed, and pairs whose sides add the same, are left
    out."""
    out: list[Row] = []
    for row in dpo:
        intent = str(row.get("prompt") or "").strip()
        if not intent or intent in exclude:
            continue
        reading = english_reading(intent, lexicon)
        keep = _agreed_for(reading, agreed, lexicon)
        chosen = ", ".join(_agreed_tags(added_tags_of(str(row.get("chosen") or ""), reading, lexicon), keep, lexicon))
        rejected = ", ".join(added_tags_of(str(row.get("rejected") or ""), reading, lexicon))
        if chosen and chosen != rejected:  # an empty kept side would teach the model to drop words people kept
            out.append({"prompt": intent, "chosen": chosen, "rejected": rejected})
    return out


def recall_scores(
    model: Any, tokenizer: Any, examples: Sequence[IntentExample], lexicon: Lexicon, *, trained: bool,
    max_new_tokens: int, seconds_per_answer: float = 10.0,
) -> tuple[list[float], list[str]]:
    """Per example: :func:`answer_score` of the model's answer (and the answers).

    ``trained``: the model answers with its active adapter in the served format; otherwise as the base model is
    served (the enrichment prefix with its examples)."""
    from imageloop.training.expander import prompt_text

    model.eval()
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    scores: list[float] = []
    answers: list[str] = []
    for example in examples:
        if trained or not getattr(tokenizer, "chat_template", None):
            text = prompt_text(example.intent, tokenizer)
        else:
            text = str(tokenizer.apply_chat_template([*enrich_prefix(), user_message(example.reading)],
                                                     tokenize=False, add_generation_prompt=True))
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        new, _ = greedy_continue(
            model, ids, max_new_tokens=max_new_tokens, penalty_from=len(ids),
            deadline=time.perf_counter() + seconds_per_answer,
            stop=lambda token: token in eos or "\n" in tokenizer.decode([token]),
        )
        answer = str(tokenizer.decode(new, skip_special_tokens=True)).strip()
        scores.append(answer_score(answer, example, lexicon))
        answers.append(answer)
    return scores, answers


def answer_score(answer: str, example: IntentExample, lexicon: Lexicon) -> float:
    """The agreed values ``answer`` states / (agreed values + the other scene values it adds): recall, with a
    price for every wrong value; an example with no agreed values scores 1 when nothing is added, else 0."""
    named = _all_values(answer, lexicon)
    target = set(example.values.items())
    wrong = named - target - _all_values(example.reading, lexicon)
    if not target:
        return 0.0 if wrong else 1.0
    return len(target & named) / (len(target) + len(wrong))
