"""parse_weights: A1111's documented examples, edge cases, and properties over random prompts."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageloop.prompts import parse_weights
from imageloop.prompts.weights import BREAK, BREAK_WEIGHT

# The examples from A1111's parse_prompt_attention docstring, plus the edges the issue names.
EXAMPLES: list[tuple[str, list[tuple[str, float]]]] = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    ("", [("", 1.0)]),
    ("((x))", [("x", 1.2100000000000002)]),
    ("[x]", [("x", 1 / 1.1)]),
    ("[[x]]", [("x", (1 / 1.1) * (1 / 1.1))]),
    ("(x:1.3)", [("x", 1.3)]),
    ("( x : 0.5 )", [(" x ", 0.5)]),
    ("(x: -1 )", [("x", -1.0)]),
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("a \\q b", [("a q b", 1.0)]),  # a backslash before an ordinary character is dropped
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("a) b]", [("a) b]", 1.0)]),  # closers without an opener stay literal
    ("x:1.2) y", [("x:1.2) y", 1.0)]),  # an explicit weight with no open bracket is text
    ("a: b", [("a: b", 1.0)]),
    ("(x:1.2.3)", [("x:1.2.3", 1.1)]),  # A1111 raises here; we read the weight as text
    ("a BREAK b", [("a", 1.0), (BREAK, BREAK_WEIGHT), ("b", 1.0)]),
    ("BREAK b", [("", 1.0), (BREAK, BREAK_WEIGHT), ("b", 1.0)]),
    ("a BREAKING b", [("a BREAKING b", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), (BREAK, BREAK_WEIGHT), ("", 1.0), (BREAK, BREAK_WEIGHT), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), (BREAK, -1.1), ("b", 1.1)]),  # A1111 scales the marker too
    ("(a)\\(b", [("a", 1.1), ("(b", 1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES)
def test_a1111_examples(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_weights(text) == expected


def test_float_products_match_a1111_rounding() -> None:
    # A1111 multiplies fragment by fragment as brackets close; the exact float result is part of its semantics.
    [(text, weight)] = parse_weights("((((x))))")
    assert text == "x"
    assert weight == 1.4641000000000006
    assert weight != 1.1**4  # a closed-form product differs in the last digit


SPECIALS = "()[]\\"


def _escape(text: str) -> str:
    return "".join("\\" + ch if ch in SPECIALS else ch for ch in text)


def _char_weights(text: str) -> list[tuple[str, float]]:
    """Reference for bracket-only prompts (letters, spaces, brackets): each kept character and its weight."""
    round_open: list[int] = []
    square_open: list[int] = []
    chars: list[list[str | float]] = []
    for ch in text:
        if ch == "(":
            round_open.append(len(chars))
        elif ch == "[":
            square_open.append(len(chars))
        elif ch == ")" and round_open:
            for item in chars[round_open.pop() :]:
                item[1] = float(item[1]) * 1.1
        elif ch == "]" and square_open:
            for item in chars[square_open.pop() :]:
                item[1] = float(item[1]) / 1.1
        else:
            chars.append([ch, 1.0])
    for start in round_open:
        for item in chars[start:]:
            item[1] = float(item[1]) * 1.1
    for start in square_open:
        for item in chars[start:]:
            item[1] = float(item[1]) / 1.1
    return [(str(ch), float(w)) for ch, w in chars]


PIECES = [*"ab :.,1-+\\()[]\n", "BREAK", " BREAK ", "é", "猫", "(x:1.5)", ":0)", ":-2)", ":1e5)"]
any_text = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
bracket_text = st.text(alphabet=st.sampled_from(list("ab ,()[]")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_never_raises_and_never_empty(text: str) -> None:
    result = parse_weights(text)
    assert result
    assert all(isinstance(t, str) and isinstance(w, float) and math.isfinite(w) for t, w in result)
    # Neighbours never share a weight (they would have been merged).
    assert all(a[1] != b[1] for a, b in itertools.pairwise(result))


@settings(max_examples=300, deadline=None)
@given(bracket_text)
def test_bracket_prompts_keep_text_and_positive_weights(text: str) -> None:
    result = parse_weights(text)
    expected = _char_weights(text)
    produced = [(ch, w) for fragment, w in result for ch in fragment]
    assert "".join(ch for ch, _ in produced) == "".join(ch for ch, _ in expected)
    for (ch, weight), (_, want) in zip(produced, expected, strict=True):
        assert weight > 0, ch
        assert weight == pytest.approx(want, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40).filter(lambda t: "BREAK" not in t))
def test_escaped_text_is_literal(text: str) -> None:
    assert parse_weights(_escape(text)) == [(text, 1.0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abc ,", min_size=1, max_size=8), min_size=1, max_size=5))
def test_break_markers_split_fragments(parts: list[str]) -> None:
    result = parse_weights(" BREAK ".join(parts))
    assert sum(1 for t, w in result if t == BREAK and w == BREAK_WEIGHT) == len(parts) - 1
    # The marker eats the whitespace around it.
    pieces = [p.rstrip() if i == 0 else p.lstrip() if i == len(parts) - 1 else p.strip() for i, p in enumerate(parts)]
    if len(parts) == 1:
        pieces = parts
    assert [t for t, _ in result if t != BREAK] == pieces
