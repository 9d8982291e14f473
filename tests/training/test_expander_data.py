"""What the expander stage trains on, from a real record: a phrase's meaning comes from every hand edit after it,
held-out intents' included, while the held-out intents themselves never reach the training rows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from imageloop.config import Settings
from imageloop.flywheel.editdiff import edit_details
from imageloop.storage import ActionType, NewGeneration, Storage
from imageloop.training.data import heldout
from imageloop.training.expander_stage import expander_data
from tests.records import act, finish
from tests.storage.conftest import FakeClock
from tests.training.records import BLUE, RED, keep, png, served

FRACTION = 0.35


def _intents(held: bool, count: int) -> list[str]:
    """``count`` goblin-mode intents about different subjects that the stable split holds out (or trains on)."""
    subjects = ["fox", "frog", "house", "cat", "dog", "bird", "tree", "river", "city", "beach", "forest", "sky",
                "boat", "car", "horse", "owl", "moon", "rose", "tiger", "whale"]
    chosen = [f"a {s}, goblin mode" for s in subjects if heldout(f"a {s}, goblin mode", FRACTION) == held]
    assert len(chosen) >= count
    return chosen[:count]


def test_a_held_out_intents_edit_counts_toward_the_phrase_but_the_intent_is_not_trained_on(
    storage: Storage, tmp_path: Path, clock: FakeClock
) -> None:
    trained, held = _intents(False, 2), _intents(True, 1)
    # Three people add fog and bleak by hand after "goblin mode": two on intents the cycle trains on, the third on
    # a held-out one. Without the third edit only two people agree: below the three an agreement needs.
    for name, intent in zip(["ada", "bob", "cy"], [*trained, *held], strict=True):
        user, _ = storage.users.create_user(name)
        subject = intent.removeprefix("a ").split(",")[0]
        first = served(storage, user.id, intent, f"{subject}, goblin mode", [BLUE, BLUE])
        after = f"{subject}, goblin mode, fog, bleak"
        child = act(storage, user.id, ActionType.EDIT, first.images[0].id, child=NewGeneration(intent=intent),
                    edit=edit_details(first.final_prompt or "", after))
        assert child is not None
        record = finish(storage, child, after, [png(RED, 1), png(BLUE, 2)], expander_strategy="local_llm",
                        expander_version="base")
        keep(storage, user.id, record)
    settings = Settings(data_dir=tmp_path / "data", database_url=str(storage.db_engine.url),
                        training={"heldout_fraction": FRACTION, "meaning_min_users": 3})

    data = expander_data(storage, tmp_path / "expander-data", until=clock() + timedelta(seconds=1),
                         settings=settings)

    rows = {row["prompt"]: set(str(row["completion"]).split(", ")) for row in data.sft}
    assert set(rows) >= set(trained) and not set(rows) & set(held)
    assert all(rows[intent] == {"fog", "bleak"} for intent in trained)
    assert [e.intent for e in data.gated] == held and data.gated[0].values == {"weather": "fog", "mood": "bleak"}
