"""The sentence encoder's per-text cache."""

from __future__ import annotations

import numpy as np
import pytest

from imageloop.prompts import embeddings
from imageloop.prompts.embeddings import UniversalSentenceEncoder


class CountingModel:
    """Stands in for the encoder model: a distinct unit vector per text, counting the texts it encodes."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.encoded += len(texts)
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, hash(text) % 512] = 1.0
        return out


def test_a_batch_larger_than_the_cache_gives_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "_CACHE_SIZE", 4)
    encoder = UniversalSentenceEncoder()
    model = CountingModel()
    monkeypatch.setattr(encoder, "_load", lambda: model)
    texts = [f"text {i}" for i in range(10)] + ["text 0"]
    vectors = encoder.encode(texts)
    assert vectors.shape == (11, 512) and np.array_equal(vectors[0], vectors[10])
    assert model.encoded == 10
    encoder.encode(["text 9"])  # still cached: the newest texts stay
    assert model.encoded == 10
