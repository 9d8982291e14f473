"""The sentence encoder's per-text cache."""

from __future__ import annotations

import threading

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


class HeldModel(CountingModel):
    """Holds every call that includes a long text until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.lengths: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.lengths += [len(t) for t in texts]
        if any(len(t) > 100 for t in texts):
            self.holding.set()
            assert self.release.wait(30)
        return super().encode(texts)


def test_a_long_text_neither_queues_other_requests_nor_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = UniversalSentenceEncoder()
    model = HeldModel()
    monkeypatch.setattr(encoder, "_load", lambda: model)
    long_request = threading.Thread(target=encoder.encode, args=(["x" * 10_000] * 10,))
    long_request.start()
    try:
        assert model.holding.wait(30)
        # While the long request is inside the model, a short one is answered (the lock only guards the cache).
        answers: list[np.ndarray] = []
        short = threading.Thread(target=lambda: answers.append(encoder.encode(["a fox in the rain"])))
        short.start()
        short.join(20)
        assert [a.shape for a in answers] == [(1, 512)] and not model.release.is_set()
    finally:
        model.release.set()
        long_request.join(30)
    assert max(model.lengths) == embeddings.MAX_ENCODED_CHARS
