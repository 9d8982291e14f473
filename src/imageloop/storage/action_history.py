"""Reads over the user actions that the prompt memory and the recipe statistics are built from.

- :meth:`ActionHistory.image_actions`: per image, its actions oldest first (optionally only images touched since a
  time), which :func:`imageloop.storage.kept.is_kept` turns into kept or not;
- :meth:`ActionHistory.recipe_keep_counts`: uses and keeps per recipe, overall and per user;
- :meth:`ActionHistory.edits`: a user's latest hand edits of a prompt;
- :meth:`ActionHistory.intent_edits`: everyone's hand edits with the intent they were made for (what a phrase means
  to the people who typed it: the words they added after it);
- :meth:`ActionHistory.intents`: every distinct intent people typed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from imageloop.storage.db import SessionFactory, read_session
from imageloop.storage.kept import KEPT_ACTIONS, is_kept
from imageloop.storage.models import Generation, Image, UserAction
from imageloop.storage.records import ActionType, JobStatus

__all__ = ["ActionHistory", "ImageActions", "IntentEdit", "KeepCounts", "RecipeStats"]


@dataclass(frozen=True, slots=True)
class ImageActions:
    """One image's actions, oldest first, and when it was last downloaded, shared or liked."""

    generation_id: str
    image_id: str
    actions: tuple[ActionType, ...]
    last_keep_at: datetime | None


@dataclass(frozen=True, slots=True)
class IntentEdit:
    """One hand edit of a prompt, with whose it is and the intent of the generation it edited."""

    user_id: str
    intent: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class KeepCounts:
    uses: int = 0
    kept: int = 0

    @property
    def keep_rate(self) -> float:
        return self.kept / self.uses if self.uses else 0.0


@dataclass(frozen=True)
class RecipeStats:
    """Keep counts per recipe, over everyone and per user."""

    overall: dict[str, KeepCounts] = field(default_factory=dict)
    by_user: dict[str, dict[str, KeepCounts]] = field(default_factory=dict)

    def user(self, user_id: str | None) -> dict[str, KeepCounts]:
        return self.by_user.get(user_id or "", {})


class ActionHistory:
    """Read-only queries over user actions (each reads one transaction)."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def newest_at(self) -> datetime | None:
        """When the newest action was recorded (None without actions)."""
        with read_session(self.sessions) as session:
            newest = session.scalar(sa.select(sa.func.max(UserAction.created_at)))
        return newest if isinstance(newest, datetime) else None

    def image_actions(self, since: datetime | None = None) -> list[ImageActions]:
        """Every image with actions (only those with an action at or after ``since`` when given), its actions
        oldest first, ordered by generation and image."""
        query = (
            sa.select(Image.generation_id, Image.id, UserAction.type, UserAction.created_at)
            .join(UserAction, UserAction.image_id == Image.id)
            .order_by(Image.generation_id, Image.id, UserAction.created_at, UserAction.id)
        )
        if since is not None:
            recent = sa.select(UserAction.image_id).where(
                UserAction.created_at >= since, UserAction.image_id.is_not(None)
            )
            query = query.where(Image.id.in_(recent))
        per_image: dict[tuple[str, str], tuple[list[ActionType], list[datetime]]] = defaultdict(lambda: ([], []))
        with read_session(self.sessions) as session:
            for generation_id, image_id, action, created_at in session.execute(query):
                types, keeps = per_image[(generation_id, image_id)]
                types.append(ActionType(action))
                if ActionType(action) in KEPT_ACTIONS:
                    keeps.append(created_at)
        return [
            ImageActions(generation_id, image_id, tuple(types), max(keeps) if keeps else None)
            for (generation_id, image_id), (types, keeps) in per_image.items()
        ]

    def recipe_keep_counts(self) -> RecipeStats:
        """Uses and keeps per recipe (overall and per user): a succeeded generation with a recipe is a use, and a
        keep when one of its images is kept."""
        generations = sa.select(Generation.id, Generation.user_id, Generation.recipe).where(
            Generation.recipe.is_not(None), Generation.status == JobStatus.SUCCEEDED
        )
        actions = (
            sa.select(Image.generation_id, Image.id, UserAction.type)
            .join(UserAction, UserAction.image_id == Image.id)
            .join(Generation, Generation.id == Image.generation_id)
            .where(Generation.recipe.is_not(None))
            .order_by(Image.id, UserAction.created_at, UserAction.id)
        )
        per_image: dict[tuple[str, str], list[ActionType]] = defaultdict(list)
        with read_session(self.sessions) as session:  # both reads in one transaction
            rows = session.execute(generations).all()
            for generation_id, image_id, action in session.execute(actions):
                per_image[(generation_id, image_id)].append(ActionType(action))
        kept_generations = {gid for (gid, _), types in per_image.items() if is_kept(types)}
        overall: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        by_user: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for generation_id, user_id, recipe in rows:
            kept = int(generation_id in kept_generations)
            for counts in (overall[str(recipe)], by_user[user_id][str(recipe)]):
                counts[0] += 1
                counts[1] += kept
        return RecipeStats(
            overall={r: KeepCounts(*c) for r, c in overall.items()},
            by_user={u: {r: KeepCounts(*c) for r, c in rs.items()} for u, rs in by_user.items()},
        )

    def edits(self, user_id: str, *, limit: int = 50) -> list[tuple[str, str]]:
        """The user's most recent hand edits of a prompt as ``(before, after)``, newest first."""
        query = (
            sa.select(UserAction.prompt_before, UserAction.prompt_after)
            .where(UserAction.user_id == user_id, UserAction.type == ActionType.EDIT,
                   UserAction.prompt_after.is_not(None))
            .order_by(UserAction.created_at.desc(), UserAction.id.desc()).limit(limit)
        )
        with read_session(self.sessions) as session:
            return [(before or "", after) for before, after in session.execute(query) if after]

    def intent_edits(self, *, until: datetime | None = None) -> list[IntentEdit]:
        """Every hand edit (before ``until``) of a generation that had an intent, oldest first."""
        query = (
            sa.select(UserAction.user_id, Generation.intent, UserAction.prompt_before, UserAction.prompt_after)
            .join(Generation, Generation.id == UserAction.generation_id)
            .where(UserAction.type == ActionType.EDIT, UserAction.prompt_after.is_not(None),
                   Generation.intent.is_not(None))
            .order_by(UserAction.created_at, UserAction.id)
        )
        if until is not None:
            query = query.where(UserAction.created_at < until)
        with read_session(self.sessions) as session:
            return [IntentEdit(str(user), str(intent), before or "", after)
                    for user, intent, before, after in session.execute(query) if after and intent]

    def intents(self, *, until: datetime | None = None) -> list[str]:
        """Every distinct intent of a first try (not a reroll) created before ``until``, oldest first."""
        query = (
            sa.select(Generation.intent, sa.func.min(Generation.created_at).label("first"))
            .where(Generation.intent.is_not(None), Generation.parent_id.is_(None))
            .group_by(Generation.intent).order_by("first")
        )
        if until is not None:
            query = query.where(Generation.created_at < until)
        with read_session(self.sessions) as session:
            return [str(intent) for intent, _ in session.execute(query) if str(intent).strip()]
