"""Which user actions mean an image was kept, and the reaction state of one image.

Kept = downloaded, shared, or liked (and not un-liked or discarded since). These are the positive signals every
dataset is built from; ``discard`` and a reroll away from an image are the negative ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from imageloop.storage.records import ActionType

__all__ = ["KEPT_ACTIONS", "ActionType", "is_kept"]

KEPT_ACTIONS = frozenset({ActionType.DOWNLOAD, ActionType.SHARE, ActionType.LIKE})
# Having the file is final; a like can be taken back.
_LASTING_KEEPS = frozenset({ActionType.DOWNLOAD, ActionType.SHARE})


def is_kept(actions: Iterable[ActionType]) -> bool:
    """Whether an image with these actions (oldest first) counts as kept.

    A download or share keeps it for good; a like keeps it until a later unlike or discard.
    """
    liked = False
    for action in actions:
        if action in _LASTING_KEEPS:
            return True
        if action is ActionType.LIKE:
            liked = True
        elif action in (ActionType.UNLIKE, ActionType.DISCARD):
            liked = False
    return liked
