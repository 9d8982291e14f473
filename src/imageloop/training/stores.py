"""What training reads and writes, built once per process and handed to whoever needs it (the server's routes, the
training worker, the CLI): the model registry, the training-run records and the locks of cycles and private-LoRA
jobs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from imageloop.config import Settings
from imageloop.storage import Storage
from imageloop.storage.locks import CYCLE_LOCK, USER_LORA_LOCK, TrainingLock
from imageloop.storage.records import utcnow
from imageloop.storage.runs import RunStore
from imageloop.training.registry import Registry

__all__ = ["TrainingStores"]


@dataclass(frozen=True)
class TrainingStores:
    """The registry, the run records and the ``cycle`` and ``user_lora`` locks over one storage."""

    registry: Registry
    runs: RunStore
    cycle_lock: TrainingLock
    lora_lock: TrainingLock

    @classmethod
    def open(
        cls, settings: Settings, storage: Storage, *, clock: Callable[[], datetime] = utcnow
    ) -> TrainingStores:
        """Wire them over ``storage``'s sessions; ``clock`` is for tests."""
        lease = settings.training.lease_seconds
        return cls(
            registry=Registry(storage.sessions, settings, clock=clock),
            runs=RunStore(storage.sessions, clock=clock),
            cycle_lock=TrainingLock(storage.sessions, CYCLE_LOCK, lease_seconds=lease, clock=clock),
            lora_lock=TrainingLock(storage.sessions, USER_LORA_LOCK, lease_seconds=lease, clock=clock),
        )
