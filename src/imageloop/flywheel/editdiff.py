"""How far an edited prompt is from the original: character and token edit distances and the token changes.

Pure functions. Tokens are the prompt split on commas and whitespace (``"a blue car, 35mm"`` → ``a``, ``blue``,
``car``, ``35mm``). Distances are Levenshtein distances (insert, delete and replace each cost 1), computed with
Hyyrö's bit-parallel algorithm so long prompts stay fast.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Literal, TypedDict

from imageloop.storage.records import EditDetails

_SEPARATORS = re.compile(r"[\s,]+")
# Past this many DP cells the token alignment falls back to one coarse change (the distance stays exact).
MAX_ALIGNMENT_CELLS = 1_000_000


class TokenChange(TypedDict):
    op: Literal["replace", "insert", "delete"]
    before: str
    after: str


def tokenize(prompt: str) -> list[str]:
    """The prompt's tokens: split on commas and whitespace, empty pieces dropped."""
    return [token for token in _SEPARATORS.split(prompt) if token]


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The edit distance between two sequences (strings or token lists): 0 iff equal, symmetric, metric."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    # Bit-parallel DP over the shorter sequence ``b`` (Hyyrö 2001, global variant): one column per item of ``a``.
    masks: dict[Hashable, int] = {}
    for i, item in enumerate(b):
        masks[item] = masks.get(item, 0) | (1 << i)
    full = (1 << len(b)) - 1
    top = 1 << (len(b) - 1)
    positive, negative, score = full, 0, len(b)
    for item in a:
        eq = masks.get(item, 0)
        xv = eq | negative
        xh = (((eq & positive) + positive) ^ positive) | eq
        horizontal_pos = (negative | ~(xh | positive)) & full
        horizontal_neg = positive & xh
        if horizontal_pos & top:
            score += 1
        elif horizontal_neg & top:
            score -= 1
        horizontal_pos = ((horizontal_pos << 1) | 1) & full
        horizontal_neg = (horizontal_neg << 1) & full
        positive = (horizontal_neg | ~(xv | horizontal_pos)) & full
        negative = horizontal_pos & xv
    return score


def char_distance(before: str, after: str) -> int:
    """Character-level Levenshtein distance."""
    return levenshtein(before, after)


def token_distance(before: str, after: str) -> int:
    """Token-level Levenshtein distance (see :func:`tokenize`)."""
    return levenshtein(tokenize(before), tokenize(after))


def token_changes(before: str, after: str) -> list[TokenChange]:
    """A shortest list of token edits turning ``before`` into ``after``, in prompt order, e.g.
    ``[{"op": "replace", "before": "blue", "after": "red"}]``. Its length is the token distance (for very
    long, very different prompts the middle is reported as one coarse replace)."""
    old, new = tokenize(before), tokenize(after)
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old, end_new = end_old - 1, end_new - 1
    old, new = old[start:end_old], new[start:end_new]
    if (len(old) + 1) * (len(new) + 1) > MAX_ALIGNMENT_CELLS:
        return [TokenChange(op="replace", before=" ".join(old), after=" ".join(new))]
    return _align(old, new)


def _align(old: list[str], new: list[str]) -> list[TokenChange]:
    rows, cols = len(old) + 1, len(new) + 1
    table = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        table[i][0] = i
    for j in range(cols):
        table[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            cost = 0 if old[i - 1] == new[j - 1] else 1
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
    changes: list[TokenChange] = []
    i, j = len(old), len(new)
    while i or j:
        if i and j and old[i - 1] == new[j - 1] and table[i][j] == table[i - 1][j - 1]:
            i, j = i - 1, j - 1
        elif i and j and table[i][j] == table[i - 1][j - 1] + 1:
            changes.append(TokenChange(op="replace", before=old[i - 1], after=new[j - 1]))
            i, j = i - 1, j - 1
        elif i and table[i][j] == table[i - 1][j] + 1:
            changes.append(TokenChange(op="delete", before=old[i - 1], after=""))
            i -= 1
        else:
            changes.append(TokenChange(op="insert", before="", after=new[j - 1]))
            j -= 1
    changes.reverse()
    return changes


def edit_details(before: str, after: str) -> EditDetails:
    """Everything an ``edit`` action stores about a prompt edit (pass it to ``ActionRepository.record``)."""
    return EditDetails(
        prompt_before=before,
        prompt_after=after,
        char_distance=char_distance(before, after),
        token_distance=token_distance(before, after),
        token_changes=[
            {"op": change["op"], "before": change["before"], "after": change["after"]}
            for change in token_changes(before, after)
        ],
    )
