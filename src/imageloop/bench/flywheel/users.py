"""Simulated users: a hidden taste over the embedded model's attributes, a language, a patience, vague intents.

A user never states their taste. They ask for a subject in a vague phrasing, look at what the judge sees in the
image, keep it (download or share) when it shows the subject and every attribute they care about, and otherwise
reroll (regenerate, or sometimes edit the prompt toward the words of their taste) until their patience runs out,
when they discard it. Every choice draws from the user's own random stream, so a seed fixes the behaviour.

With the cohort's ``slang_probability`` an intent uses a community phrase instead ("a fox, goblin mode"): the user
then wants what the phrase means on top of their taste (the meaning wins where both name an attribute), keeps only
an image that shows it, and an edit spells out the missing part of it in their own words ("fog, bleak"). Users who
join later (``newcomers_per_week``) come from :func:`sample_users` with a prefix and seed of their own week.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from imageloop.bench.flywheel.cohort import Cohort
from imageloop.training.base.captions import Language, canonical_phrase
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES

__all__ = ["Decision", "Intent", "SimulatedUser", "edited_prompt", "newcomers", "sample_users"]


class Decision(StrEnum):
    """What a user does with an image they looked at (the API action types they send)."""

    DOWNLOAD = "download"
    SHARE = "share"
    REGENERATE = "regenerate"
    EDIT = "edit"
    DISCARD = "discard"


@dataclass(frozen=True)
class Intent:
    """One request: the subject the user wants and the words they send."""

    subject: str
    text: str
    language: Language
    slang: str | None = None  # the community phrase used (its English form), None for a plain intent
    means: dict[str, str] = field(default_factory=dict)  # what that phrase means: attribute -> value key


@dataclass(frozen=True)
class SimulatedUser:
    """A user of the cohort; ``taste`` maps attribute name -> the value they want (hidden from the service)."""

    name: str
    language: Language
    patience: int
    taste: dict[str, str]
    seed: int

    def intent(self, cohort: Cohort, rng: np.random.Generator) -> Intent:
        """A vague request for a random subject of the cohort, in the user's language; with the cohort's
        ``slang_probability`` it uses one of the cohort's community phrases."""
        subject = str(rng.choice(cohort.subjects))
        words = canonical_phrase("subject", subject, self.language)
        # No draw at all without slang: a cohort without it keeps the random streams it always had.
        if cohort.slang and cohort.slang_probability > 0 and rng.random() < cohort.slang_probability:
            phrase = cohort.slang[int(rng.integers(len(cohort.slang)))]
            phrasing = str(rng.choice(cohort.slang_intents[self.language]))
            text = phrasing.format(subject=words, slang=phrase.text(self.language))
            return Intent(subject, text, self.language, slang=phrase.en, means=dict(phrase.means))
        phrasing = str(rng.choice(cohort.intents[self.language]))
        return Intent(subject, phrasing.format(subject=words), self.language)

    def wants(self, intent: Intent) -> dict[str, str]:
        """The attribute values an image must show for ``intent``: the taste, overridden by the slang's meaning."""
        return {**self.taste, **intent.means}

    def fits(self, seen: dict[str, str], intent: Intent) -> bool:
        """True when the image shows the asked subject and every attribute the user wants for ``intent``."""
        return seen.get("subject") == intent.subject and all(seen.get(a) == v for a, v in self.wants(intent).items())

    def decide(self, seen: dict[str, str], intent: Intent, rerolls: int, cohort: Cohort,
               rng: np.random.Generator) -> Decision:
        """Keep a fitting image, else reroll while ``rerolls`` < patience, else discard."""
        if self.fits(seen, intent):
            return Decision.SHARE if rng.random() < cohort.share_probability else Decision.DOWNLOAD
        if rerolls >= self.patience:
            return Decision.DISCARD
        return Decision.EDIT if rng.random() < cohort.edit_probability else Decision.REGENERATE


def edited_prompt(prompt: str, user: SimulatedUser, seen: dict[str, str], intent: Intent | None = None) -> str:
    """The prompt with the user's words for each wanted attribute (taste, and the meaning of the intent's slang)
    the image missed appended (what a user types)."""
    wanted = user.wants(intent) if intent is not None else user.taste
    missing = [canonical_phrase(a, v, user.language) for a, v in wanted.items() if seen.get(a) != v]
    words = [w for w in missing if w not in prompt]
    if not words:
        return prompt
    separator = "，" if user.language == "zh" else ", "
    return prompt.rstrip(" ,，") + separator + separator.join(words)


def sample_users(cohort: Cohort, count: int, seed: int, prefix: str = "sim") -> list[SimulatedUser]:
    """``count`` users drawn from the cohort, named ``{prefix}-0000`` on; the same (cohort, count, seed) always
    gives the same users."""
    rng = np.random.default_rng(seed)
    languages = list(cohort.languages)
    shares = np.array([cohort.languages[lang] for lang in languages])
    users = []
    for index in range(count):
        language: Language = "zh" if str(rng.choice(languages, p=shares)) == "zh" else "en"
        size = int(rng.integers(cohort.taste_size[0], cohort.taste_size[1] + 1))
        attributes = rng.choice(list(cohort.taste_attributes), size=size, replace=False)
        taste = {str(a): str(rng.choice(ATTRIBUTE_KEYS[str(a)])) for a in sorted(attributes, key=ATTRIBUTE_NAMES.index)}
        patience = int(rng.integers(cohort.patience[0], cohort.patience[1] + 1))
        users.append(SimulatedUser(f"{prefix}-{index:04d}", language, patience, taste, int(rng.integers(2**31))))
    return users


def newcomers(cohort: Cohort, week: int, seed: int) -> list[SimulatedUser]:
    """The ``newcomers_per_week`` users who join in ``week``, named ``sim-w{week}-0000`` on; the same in every arm."""
    week_seed = int(np.random.default_rng([seed, week]).integers(2**31))
    return sample_users(cohort, cohort.newcomers_per_week, week_seed, prefix=f"sim-w{week}")
