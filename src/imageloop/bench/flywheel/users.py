"""Simulated users: a hidden taste over the embedded model's attributes, a language, a patience, vague intents.

A user never states their taste. They ask for a subject in a vague phrasing, look at what the judge sees in the
image, keep it (download or share) when it shows the subject and every attribute they care about, and otherwise
reroll (regenerate, or sometimes edit the prompt toward the words of their taste) until their patience runs out,
when they discard it. Every choice draws from the user's own random stream, so a seed fixes the behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from imageloop.bench.flywheel.cohort import Cohort
from imageloop.training.base.captions import Language, canonical_phrase
from imageloop.training.base.scenes import ATTRIBUTE_KEYS, ATTRIBUTE_NAMES

__all__ = ["Decision", "Intent", "SimulatedUser", "edited_prompt", "sample_users"]


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


@dataclass(frozen=True)
class SimulatedUser:
    """A user of the cohort; ``taste`` maps attribute name -> the value they want (hidden from the service)."""

    name: str
    language: Language
    patience: int
    taste: dict[str, str]
    seed: int

    def intent(self, cohort: Cohort, rng: np.random.Generator) -> Intent:
        """A vague request for a random subject of the cohort, in the user's language."""
        subject = str(rng.choice(cohort.subjects))
        phrasing = str(rng.choice(cohort.intents[self.language]))
        return Intent(subject, phrasing.format(subject=canonical_phrase("subject", subject, self.language)),
                      self.language)

    def fits(self, seen: dict[str, str], intent: Intent) -> bool:
        """True when the image shows the asked subject and every attribute of the taste."""
        return seen.get("subject") == intent.subject and all(seen.get(a) == v for a, v in self.taste.items())

    def decide(self, seen: dict[str, str], intent: Intent, rerolls: int, cohort: Cohort,
               rng: np.random.Generator) -> Decision:
        """Keep a fitting image, else reroll while ``rerolls`` < patience, else discard."""
        if self.fits(seen, intent):
            return Decision.SHARE if rng.random() < cohort.share_probability else Decision.DOWNLOAD
        if rerolls >= self.patience:
            return Decision.DISCARD
        return Decision.EDIT if rng.random() < cohort.edit_probability else Decision.REGENERATE


def edited_prompt(prompt: str, user: SimulatedUser, seen: dict[str, str]) -> str:
    """The prompt with the user's words for each taste attribute the image missed appended (what a user types)."""
    missing = [canonical_phrase(a, v, user.language) for a, v in user.taste.items() if seen.get(a) != v]
    words = [w for w in missing if w not in prompt]
    if not words:
        return prompt
    separator = "，" if user.language == "zh" else ", "
    return prompt.rstrip(" ,，") + separator + separator.join(words)


def sample_users(cohort: Cohort, count: int, seed: int) -> list[SimulatedUser]:
    """``count`` users drawn from the cohort; the same (cohort, count, seed) always gives the same users."""
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
        users.append(SimulatedUser(f"sim-{index:04d}", language, patience, taste, int(rng.integers(2**31))))
    return users
