"""Which user actions mean an image was kept: re-exported from :mod:`imageloop.storage.kept`, the one definition.

Kept = downloaded, shared, or liked (and not un-liked or discarded since). These are the positive signals every
dataset is built from; ``discard`` and a reroll away from an image are the negative ones. The rule lives in storage
so the keep-rate metric and the dashboard (SQL) and the exports (Python) share it.
"""

from __future__ import annotations

from imageloop.storage.kept import KEPT_ACTIONS, is_kept
from imageloop.storage.records import ActionType

__all__ = ["KEPT_ACTIONS", "ActionType", "is_kept"]
