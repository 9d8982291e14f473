from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imageloop.flywheel.datasets import (
    ActionRow,
    Chain,
    GenerationRow,
    ImageRow,
    dpo_examples,
    label_specs,
    pair_specs,
    recipe_stats,
    sft_examples,
    wilson_interval,
)
from imageloop.storage.records import ActionType, JobStatus


def gen(gid: str, final: str | None, *, parent: str | None = None, intent: str | None = "a cat",
        status: JobStatus = JobStatus.SUCCEEDED) -> GenerationRow:
    return GenerationRow(gid, "c", parent, status, intent, "en", final, None, None, "e1")


def chain(generations: list[GenerationRow], actions: list[tuple[str, ActionType]]) -> Chain:
    images = [ImageRow(f"{g.id}-{i}", g.id, i, f"k/{g.id}/{i}") for g in generations for i in range(2)]
    rows = [ActionRow(image.split("-")[0], image, kind) for image, kind in actions]
    return Chain("c", generations, images, rows)


def test_discarded_generation_is_rejected_even_without_a_child() -> None:
    c = chain([gen("g1", "cat, photo"), gen("g2", "cat, painting")],
              [("g1-0", ActionType.DISCARD), ("g2-1", ActionType.LIKE)])
    assert [(e.chosen, e.rejected) for e in dpo_examples(c)] == [("cat, painting", "cat, photo")]


def test_unreacted_generation_without_child_is_not_rejected() -> None:
    c = chain([gen("g1", "cat, photo"), gen("g2", "cat, painting")], [("g2-0", ActionType.SHARE)])
    assert list(dpo_examples(c)) == []
    assert [e.completion for e in sft_examples(c)] == ["cat, painting"]


def test_rerolled_parent_with_a_failed_child_is_still_rejected_and_failed_ones_are_ignored() -> None:
    c = chain([gen("g1", "cat, photo"), gen("g2", None, parent="g1", status=JobStatus.FAILED),
               gen("g3", "cat, ink", parent="g1")], [("g3-0", ActionType.DOWNLOAD)])
    assert [(e.chosen, e.rejected) for e in dpo_examples(c)] == [("cat, ink", "cat, photo")]


def test_identical_prompts_make_no_dpo_pair_and_chains_without_intent_make_no_text_examples() -> None:
    same = chain([gen("g1", "cat"), gen("g2", "cat", parent="g1")], [("g2-0", ActionType.LIKE)])
    assert list(dpo_examples(same)) == []
    no_intent = chain([gen("g1", "cat", intent=None), gen("g2", "dog", parent="g1", intent=None)],
                      [("g2-0", ActionType.LIKE)])
    assert list(sft_examples(no_intent)) == [] and list(dpo_examples(no_intent)) == []
    # Sibling image pairs need no intent: their caption is the shared prompt.
    assert {p.source for p in pair_specs(no_intent)} == {"siblings"}


def test_an_empty_final_prompt_is_no_text_example_and_no_caption() -> None:
    """An intent that only excluded ("no people") ran an empty prompt: there is no prompt to learn or to caption."""
    c = chain([gen("g1", "", intent="no people"), gen("g2", "cat, ink", parent="g1", intent="no people")],
              [("g1-0", ActionType.DOWNLOAD), ("g1-1", ActionType.DISCARD), ("g2-0", ActionType.DISCARD)])
    assert [e.completion for e in sft_examples(c)] == []
    assert all(e.chosen and e.rejected for e in dpo_examples(c))
    assert all(p.caption for p in pair_specs(c))


def test_pair_orientation_varies_but_labels_follow_the_kept_image() -> None:
    generations = [gen(f"g{i}", f"p{i}") for i in range(20)]
    c = chain(generations, [(f"g{i}-0", ActionType.LIKE) for i in range(20)])
    pairs = list(pair_specs(c))
    assert {p.label_0 for p in pairs} == {0.0, 1.0}
    for p in pairs:
        kept = p.image_0 if p.label_0 == 1.0 else p.image_1
        assert kept.index == 0 and p.label_0 + p.label_1 == 1.0


def test_every_judged_image_is_a_label_with_its_verdict() -> None:
    # g1 rerolled away, g2 kept (image 0; image 1 is its not-kept sibling), g3 discarded; g4 never judged.
    c = chain([gen("g1", "cat, photo"), gen("g2", "cat, ink", parent="g1"), gen("g3", "cat, oil", parent="g2"),
               gen("g4", "cat, clay", parent="g2")],
              [("g2-0", ActionType.DOWNLOAD), ("g3-0", ActionType.DISCARD)])
    labels = {(spec.image.id, spec.label, spec.source) for spec in label_specs(c)}
    assert labels == {("g1-0", 0.0, "rerolled"), ("g1-1", 0.0, "rerolled"), ("g2-0", 1.0, "kept"),
                      ("g2-1", 0.0, "sibling"), ("g3-0", 0.0, "discarded"), ("g3-1", 0.0, "discarded")}
    assert {spec.caption for spec in label_specs(c)} == {"a cat"}  # the intent: what every try answered
    # A session nobody kept still labels its images, where it gives no preference pair at all.
    lost = chain([gen("g1", "cat"), gen("g2", "cat, ink", parent="g1")], [("g2-0", ActionType.DISCARD)])
    assert list(pair_specs(lost)) == [] and {s.label for s in label_specs(lost)} == {0.0}
    assert len(list(label_specs(lost))) == 4


def test_recipe_stats_counts_succeeded_generations() -> None:
    c = chain([gen("g1", "a"), gen("g2", "b", parent="g1"), gen("g3", None, status=JobStatus.FAILED)],
              [("g2-0", ActionType.LIKE)])
    [row] = recipe_stats([c])
    assert (row.recipe, row.style, row.uses, row.kept, row.keep_rate) == ("(none)", "(none)", 2, 1, 0.5)


@given(st.integers(min_value=1, max_value=5_000), st.data())
def test_wilson_interval_contains_the_rate_and_narrows_with_data(uses: int, data: st.DataObject) -> None:
    kept = data.draw(st.integers(min_value=0, max_value=uses))
    low, high = wilson_interval(kept, uses)
    assert 0.0 <= low <= kept / uses <= high <= 1.0
    more_low, more_high = wilson_interval(2 * kept, 2 * uses)  # same rate, twice the evidence
    assert more_high - more_low < high - low


def test_wilson_reference_value() -> None:
    low, high = wilson_interval(8, 10)  # textbook: 0.490 .. 0.943
    assert round(low, 3) == 0.49 and round(high, 3) == 0.943
