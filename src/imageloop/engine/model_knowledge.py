"""What a closed-vocabulary model knows, from the ``knows.json`` beside its ``model_index.json``.

The embedded model is trained on captions built from a fixed list of subjects and attribute values (see
:mod:`imageloop.training.base.scenes`); its export writes that list, with every English and Chinese phrasing, its
native size and the share of attributes its training captions left out. A user's own model (SD1.5, SDXL, FLUX.1)
has no such file: it is open-vocabulary, and nothing here applies to it.

A prompt is read the way the model's tokenizer reads it (lower case; words of letters and digits, one token per
Chinese character and one per punctuation mark), so ``rain-soaked`` contains the known phrase ``rain``, ``streets``
does not contain ``street``, and ``color, photo`` is not ``color photo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imageloop.errors import ModelLoadError

KNOWS_FILE = "knows.json"
KNOWS_FORMAT = 1
SUBJECT = "subject"
# Words of letters/digits, one CJK character, or one punctuation mark (as the BERT pre-tokeniser splits text).
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[0-9a-z]+|[{_CJK}]|[^\s0-9a-z{_CJK}]")


class KnownValue(BaseModel):
    """One subject or attribute value: its key and the phrasings the model was trained on (first = canonical)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1)
    en: tuple[str, ...] = Field(min_length=1)
    zh: tuple[str, ...] = ()


class NativeSize(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(gt=0)
    height: int = Field(gt=0)


class ModelKnowledge(BaseModel):
    """The contents of ``knows.json``: the subjects and attributes a closed-vocabulary model was trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = KNOWS_FORMAT
    native_size: NativeSize = Field(description="The only size the model was trained at.")
    languages: tuple[str, ...] = Field(min_length=1)
    subjects: tuple[KnownValue, ...] = Field(min_length=1)
    attributes: dict[str, tuple[KnownValue, ...]] = Field(description="Attribute name -> its values, in order.")
    caption_omit_probability: float = Field(
        ge=0.0, le=1.0, description="Share of attributes each training caption left out: an attribute a prompt does "
        "not name is drawn at random, as it was for those captions.")
    nudity_free_training: bool = Field(
        default=False, description="True only where every training image was rendered by code that draws no "
        "nudity (the embedded model's composited scenes: its people are clothed sprites, no photographs). Its plain "
        "text-to-image output then has nothing for the NSFW classifier to find, and prompts.nsfw_check 'auto' "
        "skips it (see imageloop.engine.plan.nsfw_possible).")

    def groups(self) -> dict[str, tuple[KnownValue, ...]]:
        """Subjects, then each attribute, by name."""
        return {SUBJECT: self.subjects, **self.attributes}


@dataclass(frozen=True)
class KnownPhrase:
    """A phrase of ``text`` the model knows: which attribute (or ``subject``) and value it names."""

    attribute: str
    key: str
    phrase: str


def words(text: str) -> tuple[str, ...]:
    """``text`` as the model's tokenizer splits it (see the module docstring)."""
    return tuple(_TOKEN.findall(text.casefold()))


def _phrase_table(knowledge: ModelKnowledge) -> tuple[tuple[tuple[str, ...], str, str, str], ...]:
    """(words, attribute, key, phrase) of every known phrasing, longest first."""
    rows = [(words(phrase), attribute, value.key, phrase)
            for attribute, values in knowledge.groups().items() for value in values
            for phrase in (*value.en, *value.zh)]
    return tuple(sorted((row for row in rows if row[0]), key=lambda row: -len(row[0])))


def find_known(text: str, knowledge: ModelKnowledge) -> tuple[KnownPhrase, ...]:
    """The known phrases in ``text``, left to right; where two overlap, the longer one (``snowy peaks`` is a place,
    not snow)."""
    tokens = words(text)
    table = _phrase_table(knowledge)
    found: list[KnownPhrase] = []
    start = 0
    while start < len(tokens):
        for phrase_words, attribute, key, phrase in table:
            if tokens[start : start + len(phrase_words)] == phrase_words:
                found.append(KnownPhrase(attribute, key, phrase))
                start += len(phrase_words)
                break
        else:
            start += 1
    return tuple(found)


def unnamed_attributes(text: str, knowledge: ModelKnowledge) -> tuple[str, ...]:
    """The attributes (not the subject) ``text`` names no value of, in ``knows.json`` order."""
    named = {phrase.attribute for phrase in find_known(text, knowledge)}
    return tuple(name for name in knowledge.attributes if name not in named)


def read_knowledge(folder: Path) -> ModelKnowledge | None:
    """The ``knows.json`` of model folder ``folder``; None when it has none (an open-vocabulary model, or a single
    file). ModelLoadError names the file and the broken field."""
    file = folder / KNOWS_FILE
    if not file.is_file():
        return None
    return _parse(file, file.stat().st_mtime_ns)


@cache
def _parse(file: Path, mtime_ns: int) -> ModelKnowledge:
    try:
        return ModelKnowledge.model_validate_json(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{file}: cannot be read: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors())
        raise ModelLoadError(f"{file}: invalid: {problems}") from None


def size_note(knowledge: ModelKnowledge, width: int | None, height: int | None) -> str | None:
    """A note when a requested size differs from the only size the model was trained at; None when it does not
    (a missing side is the model's default, its native one)."""
    native = knowledge.native_size
    w, h = width or native.width, height or native.height
    if (w, h) == (native.width, native.height):
        return None
    return (f"{w}×{h} is not this model's size: it was trained at {native.width}×{native.height} only, so other "
            f"sizes degrade (larger ones repeat the scene and its subject in a grid); ask for "
            f"{native.width}×{native.height} and upscale instead")


def unnamed_note(text: str, knowledge: ModelKnowledge) -> str | None:
    """A note listing the attributes ``text`` leaves to chance (weather first: rain nobody asked for is the surprise);
    None when it names them all."""
    unnamed = unnamed_attributes(text, knowledge)
    if not unnamed:
        return None
    first = "weather" if "weather" in unnamed else unnamed[0]
    values = knowledge.attributes[first]
    choices = " / ".join(value.en[0] for value in values)
    return (f"the prompt names no {', '.join(unnamed)}: this model picks each of those at random ({first}: "
            f"{choices}); name one to choose it, e.g. '{values[0].en[0]}'")
