"""Builds flywheel records for the training tests through the real repositories.

``served`` plays the worker for one generation (expanded prompt tagged with an expander version, images of given
colours in the blob store); ``preference_world`` fills a record where people keep warm, red images and reroll
cold, blue ones — a rule both the expander (prompt words) and the reward model (image colour) can learn.
"""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image as PILImage

from imageloop.flywheel.editdiff import edit_details
from imageloop.storage import ActionType, GenerationRecord, NewGeneration, Storage, UserId
from tests.records import act, finish

SUBJECTS = ["cat", "dog", "bird", "house", "tree", "river", "city", "beach", "forest", "sky"]


def png(color: tuple[int, int, int], noise_seed: int = 0) -> bytes:
    """An 16x16 PNG of ``color`` with a little noise (so no two images are identical)."""
    rng = random.Random(noise_seed)
    image = PILImage.new("RGB", (16, 16), color)
    pixels = image.load()
    assert pixels is not None
    for _ in range(20):
        x, y = rng.randrange(16), rng.randrange(16)
        pixels[x, y] = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def served(
    storage: Storage, user: UserId, intent: str, final: str, colors: list[tuple[int, int, int]], *,
    tag: str | None = None, parent: GenerationRecord | None = None, strategy: str = "local_llm",
) -> GenerationRecord:
    """Create (or reroll from ``parent``) and finish one generation with one image per colour."""
    if parent is None:
        job_id = storage.generations.create(user, NewGeneration(intent=intent)).id
    else:
        child = act(storage, user, ActionType.REGENERATE, parent.images[0].id, child=NewGeneration(intent=intent))
        assert child is not None
        job_id = child
    pngs = [png(color, noise_seed=int(hashlib.sha256(f"{intent}|{final}|{index}".encode()).hexdigest()[:6], 16))
            for index, color in enumerate(colors)]
    return finish(storage, job_id, final, pngs, expander_strategy=strategy, expander_version=tag or "base")


def keep(storage: Storage, user: UserId, record: GenerationRecord, index: int = 0) -> None:
    act(storage, user, ActionType.DOWNLOAD, record.images[index].id)


RED, BLUE = (200, 40, 30), (30, 40, 200)


def preference_world(storage: Storage, user: UserId, *, chains: int, seed: int = 0, edits: bool = True) -> None:
    """``chains`` reroll chains: the first try is cold and blue, the reroll warm and red, and the person keeps the
    red image of the reroll (not its blue sibling). ``seed`` shifts which subject and time of day each chain asks
    for (another week, other intents). With ``edits`` the reroll is a hand edit that adds the warm words to the
    first prompt (what the intent means to this person: several such people make it the community's meaning)."""
    for i in range(seed, seed + chains):
        subject = SUBJECTS[i % len(SUBJECTS)]
        intent = f"a {subject} {['at night', 'in rain', 'by day', 'in snow', 'in fog'][i // len(SUBJECTS) % 5]}"
        cold, warm = f"{subject}, cold lighting, blue", f"{subject}, warm lighting, golden hour"
        first = served(storage, user, intent, cold, [BLUE, BLUE])
        if edits:
            child = act(storage, user, ActionType.EDIT, first.images[0].id, child=NewGeneration(intent=intent),
                        edit=edit_details(first.final_prompt or cold, warm))
            assert child is not None
            pngs = [png(color, noise_seed=i * 7 + k) for k, color in enumerate([RED, BLUE])]
            second = finish(storage, child, warm, pngs, expander_strategy="local_llm", expander_version="base")
        else:
            second = served(storage, user, intent, warm, [RED, BLUE], parent=first)
        keep(storage, user, second, 0)
