from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from imageloop.flywheel.editdiff import (
    MAX_ALIGNMENT_CELLS,
    char_distance,
    edit_details,
    levenshtein,
    token_changes,
    token_distance,
    tokenize,
)

texts = st.text(alphabet="abcé ,\n", max_size=30)
prompts = st.lists(st.sampled_from(["a", "blue", "red", "car", "35mm", "film", ",", " "]), max_size=12).map(" ".join)


def reference(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@given(texts, texts)
def test_matches_textbook_dynamic_programming(a: str, b: str) -> None:
    assert levenshtein(a, b) == reference(a, b)


@given(texts, texts)
def test_zero_iff_equal_and_symmetric(a: str, b: str) -> None:
    assert (char_distance(a, b) == 0) == (a == b)
    assert char_distance(a, b) == char_distance(b, a)
    assert (token_distance(a, b) == 0) == (tokenize(a) == tokenize(b))
    assert token_distance(a, b) == token_distance(b, a)


@given(texts, texts, texts)
def test_triangle_inequality(a: str, b: str, c: str) -> None:
    assert char_distance(a, c) <= char_distance(a, b) + char_distance(b, c)
    assert token_distance(a, c) <= token_distance(a, b) + token_distance(b, c)


@settings(max_examples=200)
@given(prompts, prompts)
def test_token_changes_are_a_shortest_edit_script(before: str, after: str) -> None:
    changes = token_changes(before, after)
    assert len(changes) == token_distance(before, after)
    # Taking out what was deleted/replaced and adding what was inserted/replaced gives the new tokens.
    tokens = Counter(tokenize(before))
    tokens.subtract(c["before"] for c in changes if c["op"] != "insert")
    tokens.update(c["after"] for c in changes if c["op"] != "delete")
    assert +tokens == Counter(tokenize(after))


def test_long_sequences_are_fast_and_exact() -> None:
    a = "x" * 3000 + "abc" * 500
    b = "y" + "x" * 2999 + "abd" * 500
    assert levenshtein(a, b) == 1 + 500


def test_example_from_the_issue() -> None:
    details = edit_details("a blue car, 35mm", "a red car, 35mm, film grain")
    assert details.token_changes == [
        {"op": "replace", "before": "blue", "after": "red"},
        {"op": "insert", "before": "", "after": "film"},
        {"op": "insert", "before": "", "after": "grain"},
    ]
    assert details.token_distance == 3 and details.char_distance == char_distance(details.prompt_before,
                                                                                  details.prompt_after)


def test_huge_rewrites_fall_back_to_one_coarse_change() -> None:
    size = int(MAX_ALIGNMENT_CELLS**0.5) + 10
    before = " ".join(f"a{i}" for i in range(size))
    after = " ".join(f"b{i}" for i in range(size))
    assert token_changes(before, after) == [{"op": "replace", "before": before, "after": after}]
    assert token_distance(before, after) == size
