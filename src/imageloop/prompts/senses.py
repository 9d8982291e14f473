"""Which CC-CEDICT sense a Chinese word means in a picture request, chosen once by a multilingual encoder.

CC-CEDICT lists senses in dictionary order, not by how often a word means each ("妈妈": "mama; mommy; mother";
"门口": "doorway; gate"). For the most frequent content words (nouns, adjectives, verbs, place and time words of
jieba's dictionary) the sense whose English is closest to the Chinese word under the multilingual Universal
Sentence Encoder (:mod:`imageloop.prompts.embeddings`) is chosen here and shipped as ``data/zh_senses.json``
(word → English; derived from CC-CEDICT, so CC BY-SA 4.0 like it). :class:`~imageloop.prompts.dictionary.
ChineseDictionary` reads the table before its own rules; requests never run the encoder for this.

Rebuild: ``python -m imageloop.prompts.senses --words 15000`` (about 10 ms a sense on 2 cores).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["build_sense_table", "candidate_senses", "frequent_words"]

_CONTENT_FLAGS = ("n", "a", "v", "t", "s", "nz", "vn", "an", "ns")
_MAX_SENSES = 5


def candidate_senses(senses: Sequence[str]) -> list[str]:
    """The distinct cleaned senses a gloss may be (as :func:`~imageloop.prompts.dictionary.pick_gloss` cleans them),
    dictionary order, at most :data:`_MAX_SENSES`."""
    from imageloop.prompts.dictionary import usable_senses

    return usable_senses(senses)[:_MAX_SENSES]


def frequent_words(limit: int) -> list[str]:
    """jieba's most frequent multi-character content words, most frequent first."""
    import jieba

    path = Path(jieba.__file__).parent / "dict.txt"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in _CONTENT_FLAGS and len(parts[0]) > 1:
            rows.append((int(parts[1]), parts[0]))
    rows.sort(reverse=True)
    return [word for _, word in rows[:limit]]


def build_sense_table(
    words: Sequence[str],
    senses_of: Callable[[str], list[str] | None],
    encode: Callable[[Sequence[str]], NDArray[np.float32]],
    *,
    batch: int = 256,
) -> dict[str, str]:
    """For each of ``words`` with two or more candidate senses, the candidate closest to the word under ``encode``
    (unit vectors; cosine = dot product)."""
    table: dict[str, str] = {}
    pending: list[tuple[str, list[str]]] = []
    for word in words:
        senses = senses_of(word)
        options = candidate_senses(senses) if senses else []
        if len(options) >= 2:
            pending.append((word, options))
    for start in range(0, len(pending), batch):
        chunk = pending[start : start + batch]
        texts = [text for word, options in chunk for text in (word, *options)]
        vectors = encode(texts)
        row = 0
        for word, options in chunk:
            query, choices = vectors[row], vectors[row + 1 : row + 1 + len(options)]
            table[word] = options[int(np.argmax(choices @ query))]
            row += 1 + len(options)
    return table


def main(argv: Sequence[str] | None = None) -> None:
    from imageloop.prompts.dictionary import SENSES_RESOURCE, cedict_senses
    from imageloop.prompts.embeddings import default_embedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=15000, help="How many of jieba's most frequent words.")
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / SENSES_RESOURCE)
    args = parser.parse_args(argv)
    senses = cedict_senses()
    table = build_sense_table(frequent_words(args.words), senses.get, default_embedder().encode)
    args.out.write_text(json.dumps(dict(sorted(table.items())), ensure_ascii=False, indent=0) + "\n",
                        encoding="utf-8")
    print(f"wrote {len(table)} senses to {args.out}")


if __name__ == "__main__":
    main()
