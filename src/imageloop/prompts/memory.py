"""Personal and shared memory of kept generations, on top of the vector index (:mod:`imageloop.storage.vectors`).

A generation is remembered once one of its images is kept (:func:`imageloop.flywheel.actions.is_kept`): its intent
and final prompt are embedded and stored with its params, recipe and style. :meth:`PromptMemory.sync` brings the
memory in line with the record (new keeps added, un-liked or discarded ones removed) and is cheap to call often:
it only looks at images with actions newer than its last run. The memory serves retrieval (similar kept intents,
anyone's who did not opt out of training, plus the user's own), "the usual" and personal re-ranking.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from imageloop.errors import NotFoundError
from imageloop.flywheel.actions import is_kept
from imageloop.prompts.embeddings import TextEmbedder, Vector
from imageloop.prompts.expander._common import KeptExample
from imageloop.storage import GenerationId, GenerationRecord, JobStatus, Storage
from imageloop.storage.action_history import ActionHistory
from imageloop.storage.records import ActionType, utcnow
from imageloop.storage.vectors import MemoryEntry, NewMemory, VectorIndex, open_vector_index

__all__ = ["PromptMemory", "SyncResult"]

log = logging.getLogger(__name__)
SYNC_OVERLAP = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one :meth:`PromptMemory.sync` changed."""

    added: int
    removed: int


class PromptMemory:
    """Remember kept generations and search them. Thread-safe; one per process is enough."""

    def __init__(self, storage: Storage, embedder: TextEmbedder, index: VectorIndex | None = None) -> None:
        self.storage = storage
        self.embedder = embedder
        self.index = index or open_vector_index(storage.db_engine, storage.sessions)
        self.history = ActionHistory(storage.sessions)
        self._lock = threading.Lock()
        self._synced_until: datetime | None = None

    # Writing --------------------------------------------------------------------------------------------------

    def remember(self, record: GenerationRecord, *, kept_at: datetime | None = None) -> bool:
        """Remember a succeeded generation with a final prompt; False when it is not one or is already there."""
        if record.status is not JobStatus.SUCCEEDED or not record.final_prompt:
            return False
        texts = [record.final_prompt] + ([record.intent] if record.intent and record.intent.strip() else [])
        vectors = self.embedder.encode(texts)
        return self.index.add(NewMemory(
            user_id=record.user_id, generation_id=record.id, final_prompt=record.final_prompt,
            embedder=self.embedder.name, prompt_embedding=vectors[0], kept_at=kept_at or utcnow(),
            intent=record.intent, intent_language=record.intent_language,
            intent_embedding=vectors[1] if len(texts) > 1 else None, negative_prompt=record.negative_prompt,
            params=dict(record.params), recipe=record.recipe, style=record.style,
        ))

    def sync(self) -> SyncResult:
        """Add generations kept since the last sync, remove those no longer kept. Safe to call concurrently."""
        with self._lock:
            # The high-water mark comes from the record's own clock, read before the scan.
            newest = self.history.newest_at()
            touched = self._touched_images(self._synced_until)
            kept: dict[str, datetime] = {}
            not_kept: set[str] = set()
            for generation_id, actions in touched.items():
                for types, last_keep in actions:
                    if is_kept(types) and last_keep is not None:
                        kept[generation_id] = max(kept.get(generation_id, last_keep), last_keep)
                if generation_id not in kept:
                    not_kept.add(generation_id)
            remembered = self.index.remembered()
            added = sum(self._remember_id(gid, at) for gid, at in kept.items() if gid not in remembered)
            removed = self.index.remove(sorted(not_kept & remembered))
            # Overlap the next window: an action committed late with an earlier timestamp is still seen.
            if newest is not None:
                self._synced_until = newest - SYNC_OVERLAP
            return SyncResult(added, removed)

    def _remember_id(self, generation_id: str, kept_at: datetime) -> bool:
        try:
            record = self.storage.generations.get_for_worker(GenerationId(generation_id))
        except NotFoundError:
            return False
        return self.remember(record, kept_at=kept_at)

    def _touched_images(
        self, since: datetime | None
    ) -> dict[str, list[tuple[tuple[ActionType, ...], datetime | None]]]:
        """Per generation, per image with an action since ``since``: its actions (oldest first), last keep time."""
        out: dict[str, list[tuple[tuple[ActionType, ...], datetime | None]]] = defaultdict(list)
        for image in self.history.image_actions(since):
            out[image.generation_id].append((image.actions, image.last_keep_at))
        return out

    # Reading --------------------------------------------------------------------------------------------------

    def similar_kept(self, intent: str, *, k: int = 5, user_id: str | None = None) -> list[KeptExample]:
        """Kept intent → prompt pairs most similar to ``intent`` (everyone's shared ones plus the user's own),
        one per distinct final prompt, best first."""
        query = self.embedder.encode([intent])[0]
        hits = self.index.search(query, embedder=self.embedder.name, vector_field="intent", k=k * 2)
        if user_id is not None:
            hits += self.index.search(query, embedder=self.embedder.name, vector_field="intent", user_id=user_id, k=k)
        best: dict[str, KeptExample] = {}
        for hit in sorted(hits, key=lambda h: -h.similarity):
            entry = hit.entry
            if entry.intent and entry.final_prompt not in best:
                best[entry.final_prompt] = KeptExample(
                    intent=entry.intent, prompt=entry.final_prompt, similarity=hit.similarity,
                    generation_id=entry.generation_id, language=entry.intent_language, user_id=entry.user_id,
                )
        return list(best.values())[:k]

    def entries(self, user_id: str, *, limit: int = 100) -> list[MemoryEntry]:
        """The user's remembered generations, most recently kept first."""
        return self.index.entries(user_id, limit=limit)

    def edits(self, user_id: str, *, limit: int = 50) -> list[tuple[str, str]]:
        """The user's most recent hand edits of a prompt as ``(before, after)``, newest first."""
        return self.history.edits(user_id, limit=limit)

    def prompt_vectors(self, user_id: str, *, limit: int = 200) -> Vector:
        """The user's kept final-prompt embeddings, (n, d); n = 0 without history."""
        return self.index.vectors(user_id, embedder=self.embedder.name, vector_field="prompt", limit=limit)

    def embed(self, texts: list[str]) -> Vector:
        """Embeddings from this memory's embedder."""
        return self.embedder.encode(texts) if texts else np.zeros((0, 0), dtype=np.float32)
