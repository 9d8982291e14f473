"""Expansion details as stored and served: plain JSON, bounded, provenance kept first."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from imageloop.prompts.expand import (
    MAX_DETAILS_CHARS,
    ResolvedPrompt,
    expansion_record,
    json_details,
    resolved_from_record,
)
from imageloop.prompts.expander import Recall

PROVENANCE = [{"tag": "fox", "source": "intent", "added": False}, {"tag": "rim light", "source": "rules",
                                                                    "added": True}]


class Opaque:
    def __str__(self) -> str:
        return "opaque"


def test_details_become_plain_json() -> None:
    details = {"provenance": PROVENANCE, "pair": ("a", 1), "tags": {"x"}, "nan": math.nan, 3: Opaque()}
    out = json_details(details)
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out == {"provenance": PROVENANCE, "pair": ["a", 1], "tags": ["x"], "nan": None, "3": "opaque"}


def test_too_big_details_keep_provenance_and_personal_values() -> None:
    details = {"provenance": PROVENANCE, "personal_values": {"applied": {"time": "night"}},
               "raw": ["word " * 150] * 150}
    out = json_details(details)
    assert out == {"provenance": PROVENANCE, "personal_values": {"applied": {"time": "night"}}, "truncated": True}


@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=2000) | st.integers(),
                    lambda inner: st.lists(inner, max_size=300) | st.dictionaries(st.text(max_size=50), inner),
                    max_leaves=400))
def test_any_details_fit_the_bound(value: object) -> None:
    out = json_details({"value": value})
    assert len(json.dumps(out, ensure_ascii=False, allow_nan=False)) <= MAX_DETAILS_CHARS


def test_a_stored_expansion_reads_back_as_it_was_resolved() -> None:
    resolved = ResolvedPrompt("fox, rain", "sunny", "memory", "memory-1", "en", {"provenance": PROVENANCE},
                              Recall(params={"steps": 20}, recipe="r", style="ink", source_generation_ids=("g1",)))
    assert resolved_from_record(expansion_record(resolved)) == resolved
