"""One cycle at a time: the ``cycle`` lease (:class:`imageloop.storage.locks.TrainingLock`) and the run records a
cycle resumes from (:class:`imageloop.storage.runs.RunStore`), with the owner ids their holders go by.
"""

from __future__ import annotations

import os
import socket
import uuid

from imageloop.storage.locks import CYCLE_LOCK, TrainingLock
from imageloop.storage.runs import RunKind, RunStatus, RunStore, TrainingRun

__all__ = ["CYCLE_LOCK", "RunKind", "RunStatus", "RunStore", "TrainingLock", "TrainingRun", "new_owner_id"]


def new_owner_id(kind: str = "trainer") -> str:
    """An owner id unique across hosts, processes and restarts."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
