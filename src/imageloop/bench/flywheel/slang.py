"""Did the served expander learn the community's slang? Its answers on slang intents it never trained on.

After a run, the adapter the ``full`` arm serves (promoted, else in its A/B test) answers intents built from the
cohort's slang phrases (which it saw in its users' intents) with subjects and phrasings none of its users used:
subjects of the embedded model that are not in the cohort's list, and the phrasings of :data:`HELDOUT_PHRASINGS`.
Each intent scores the share of its phrase's meaning that the answer states (attribute recall), for the served
adapter and for the base model as it is served without one; the table reports both per language.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imageloop.bench.flywheel.cohort import Cohort
from imageloop.config import Settings
from imageloop.prompts.expander.rules import english_reading
from imageloop.prompts.lexicon import load_lexicon
from imageloop.storage import Storage
from imageloop.training.base.captions import Language, canonical_phrase
from imageloop.training.base.sprites import SUBJECTS_BY_KEY
from imageloop.training.expander_eval import IntentExample, recall_scores
from imageloop.training.registry import ModelKind, Registry

__all__ = ["HELDOUT_PHRASINGS", "SlangRecall", "heldout_slang_intents", "slang_recall"]

# Phrasings no simulated user says (the cohort's own are checked against these).
HELDOUT_PHRASINGS: dict[Language, tuple[str, ...]] = {
    "en": ("{slang} style {subject}", "draw me a {subject} with {slang}"),
    "zh": ("画个{slang}{subject}", "要{slang}风格的{subject}"),
}
SUBJECTS_PER_PHRASE = 3


@dataclass(frozen=True)
class SlangRecall:
    """Attribute recall on held-out slang intents of one language: the served adapter vs the base model."""

    language: str
    intents: int
    adapter: float
    base: float

    def to_dict(self) -> dict[str, Any]:
        return {"language": self.language, "intents": self.intents, "adapter": self.adapter, "base": self.base,
                "gain": self.adapter - self.base}


def heldout_slang_intents(cohort: Cohort) -> list[tuple[str, IntentExample]]:
    """(language, example) for every slang phrase × held-out phrasing × a few subjects outside the cohort's."""
    lexicon = load_lexicon()
    unseen = [key for key in SUBJECTS_BY_KEY if key not in cohort.subjects]
    out: list[tuple[str, IntentExample]] = []
    for language, phrasings in HELDOUT_PHRASINGS.items():
        used = set(cohort.slang_intents.get(language, ()))
        for p_index, phrase in enumerate(cohort.slang):
            for f_index, phrasing in enumerate(phrasings):
                if phrasing in used:
                    continue
                for s_index in range(SUBJECTS_PER_PHRASE):
                    subject = unseen[(p_index * 7 + f_index * 3 + s_index) % len(unseen)]
                    text = phrasing.format(subject=canonical_phrase("subject", subject, language),
                                           slang=phrase.text(language))
                    out.append((language, IntentExample(text, english_reading(text, lexicon), (),
                                                        dict(phrase.means))))
    return out


def slang_recall(settings: Settings, cohort: Cohort, model: Any, tokenizer: Any) -> list[SlangRecall] | None:
    """The table for the adapter ``settings``' registry serves now (the promoted one, else the A/B candidate; None
    when there is neither); ``model`` and
    ``tokenizer`` are the base LLM (loaded once by the caller)."""
    from peft import PeftModel

    storage = Storage.open(settings)
    try:
        registry = Registry(storage.sessions, settings)
        # The promoted adapter, else the A/B candidate serving part of the users.
        current = registry.current(ModelKind.EXPANDER) or registry.ab_test(ModelKind.EXPANDER)
        path = registry.path(current) if current is not None else None
    finally:
        storage.close()
    if path is None:
        return None
    lexicon = load_lexicon()
    tokens = settings.prompts.llm_max_new_tokens
    served = PeftModel.from_pretrained(model, str(path))
    rows: list[SlangRecall] = []
    try:
        intents = heldout_slang_intents(cohort)
        for language in HELDOUT_PHRASINGS:
            examples = [e for lang, e in intents if lang == language]
            if not examples:
                continue
            adapter, _ = recall_scores(served, tokenizer, examples, lexicon, trained=True, max_new_tokens=tokens)
            with served.disable_adapter():
                base, _ = recall_scores(served, tokenizer, examples, lexicon, trained=False,
                                        max_new_tokens=settings.prompts.llm_base_max_new_tokens)
            rows.append(SlangRecall(language, len(adapter), _mean(adapter), _mean(base)))
    finally:
        served.unload()
    return rows


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
