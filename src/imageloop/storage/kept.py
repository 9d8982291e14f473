"""What "kept" means: the one definition behind the keep-rate metric, the dashboard, A/B arms and every dataset.

An image is kept once it is downloaded or shared (having the file is final), or while its latest like, unlike or
discard is a like (a like can be taken back). A generation is kept when one of its images is. The rule is given
twice, in the same place so they cannot drift: :func:`is_kept` over an image's actions in Python (the exports,
the prompt memory, the simulation) and :func:`kept_clause` in SQL (metrics, dashboard, A/B stats); the tests
check the two agree on arbitrary action sequences.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from imageloop.storage.models import UserAction
from imageloop.storage.records import ActionType

__all__ = ["KEPT_ACTIONS", "LASTING_KEEPS", "REACTIONS", "is_kept", "kept_clause", "liked_clause"]

# Actions that can make an image kept (a like only until it is taken back).
KEPT_ACTIONS = frozenset({ActionType.DOWNLOAD, ActionType.SHARE, ActionType.LIKE})
# Having the file is final.
LASTING_KEEPS = frozenset({ActionType.DOWNLOAD, ActionType.SHARE})
# The actions that set or clear a like; the latest one decides.
REACTIONS = frozenset({ActionType.LIKE, ActionType.UNLIKE, ActionType.DISCARD})


def is_kept(actions: Iterable[ActionType]) -> bool:
    """Whether an image with these actions (oldest first) counts as kept.

    A download or share keeps it for good; a like keeps it until a later unlike or discard.
    """
    liked = False
    for action in actions:
        if action in LASTING_KEEPS:
            return True
        if action is ActionType.LIKE:
            liked = True
        elif action in REACTIONS:
            liked = False
    return liked


def _latest_reaction(image_id: InstrumentedAttribute[str]) -> ColumnElement[ActionType]:
    """The image's most recent like, unlike or discard (NULL when it has none)."""
    return (
        sa.select(UserAction.type)
        .where(UserAction.image_id == image_id, UserAction.type.in_(sorted(REACTIONS)))
        .order_by(UserAction.created_at.desc(), UserAction.id.desc())
        .limit(1)
        .correlate_except(UserAction)
        .scalar_subquery()
    )


def liked_clause(image_id: InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """SQL: true for an image whose latest reaction is a like."""
    return sa.func.coalesce(_latest_reaction(image_id), "") == ActionType.LIKE.value


def kept_clause(image_id: InstrumentedAttribute[str]) -> ColumnElement[bool]:
    """SQL: true for a kept image (:func:`is_kept`): downloaded or shared at any time, or liked now."""
    lasting = sa.exists(
        sa.select(UserAction.id).where(UserAction.image_id == image_id, UserAction.type.in_(sorted(LASTING_KEEPS)))
        .correlate_except(UserAction)
    )
    return sa.or_(lasting, liked_clause(image_id))
