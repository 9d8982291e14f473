"""AUTOMATIC1111's prompt attention syntax, parsed into ``(text, weight)`` fragments.

The grammar, exactly as A1111's ``parse_prompt_attention`` reads it:

* ``(text)`` multiplies the weight of ``text`` by 1.1, ``((text))`` by 1.1 twice, and so on;
* ``(text:1.3)`` multiplies it by 1.3 (any ``[+-]?[.0-9]+`` number, spaces allowed around it);
* ``[text]`` divides it by 1.1;
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the literal characters; a backslash before anything else is dropped;
* a closing bracket with no open partner is kept as a literal character; brackets still open at the end apply to
  the rest of the text;
* the word ``BREAK`` (whole word, outside brackets) becomes the fragment ``("BREAK", -1.0)`` and eats the spaces
  around it; the conditioning code starts a new 75-token chunk there;
* adjacent fragments with equal weights are merged, and an empty prompt gives ``[("", 1.0)]``.

One deliberate difference: A1111 raises ``ValueError`` on a weight such as ``(x:1.2.3)``; here a weight that is not
a finite number is read as plain text, so parsing never fails.
"""

from __future__ import annotations

import math
import re

__all__ = ["BREAK", "BREAK_WEIGHT", "ROUND_MULTIPLIER", "SQUARE_MULTIPLIER", "parse_weights"]

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One alternative per kind of token, tried in this order; exactly one named group matches.
_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\]?)                  # \( \) \[ \] \\ , or a lone backslash
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)          # ':1.3)' closes a round bracket with an explicit weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


def _scale(fragments: list[list[str | float]], start: int, factor: float) -> None:
    """Multiply the weight of every fragment from ``start`` on, one by one (keeps A1111's float rounding)."""
    for fragment in fragments[start:]:
        fragment[1] = float(fragment[1]) * factor


def _explicit_weight(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _add_text(fragments: list[list[str | float]], text: str) -> None:
    for index, part in enumerate(_BREAK_SPLIT.split(text)):
        if index:
            fragments.append([BREAK, BREAK_WEIGHT])
        fragments.append([part, 1.0])


def _merge_equal_neighbours(fragments: list[list[str | float]]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, weight in fragments:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + str(text), merged[-1][1])
        else:
            merged.append((str(text), float(weight)))
    return merged


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(fragment, weight)`` pairs with A1111's attention semantics.

    Never raises. Weights are products of the bracket multipliers and explicit weights enclosing each fragment
    (so negative or zero only where an explicit weight says so); ``BREAK`` markers carry weight -1.0.
    Adjacent fragments with equal weights are merged; the result is never empty.
    """
    fragments: list[list[str | float]] = []
    round_open: list[int] = []
    square_open: list[int] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:  # pragma: no cover - the alternatives cover every character
            raise AssertionError(f"unreachable: no token at {position}")
        kind = match.lastgroup
        token = match.group(0)
        position = match.end()
        if kind == "escape":
            fragments.append([token[1:], 1.0])
        elif kind == "open":
            (round_open if token == "(" else square_open).append(len(fragments))
        elif kind == "weight" and not round_open:
            _add_text(fragments, token)
        elif kind == "weight":
            weight = _explicit_weight(match.group("weight"))
            if weight is None:
                # Not a number (A1111 would raise): read the ':' as text and scan on after it.
                _add_text(fragments, ":")
                position = match.start() + 1
            else:
                _scale(fragments, round_open.pop(), weight)
        elif kind == "close" and token == ")" and round_open:
            _scale(fragments, round_open.pop(), ROUND_MULTIPLIER)
        elif kind == "close" and token == "]" and square_open:
            _scale(fragments, square_open.pop(), SQUARE_MULTIPLIER)
        else:
            _add_text(fragments, token)

    for start in round_open:
        _scale(fragments, start, ROUND_MULTIPLIER)
    for start in square_open:
        _scale(fragments, start, SQUARE_MULTIPLIER)
    if not fragments:
        return [("", 1.0)]
    return _merge_equal_neighbours(fragments)
