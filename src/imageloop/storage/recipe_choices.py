"""Logged recipe choices: which recipe a generation got, among which candidates, and with what probability.

When several recipes fit a request, :mod:`imageloop.prompts.recipes` picks one by Thompson sampling; the
probability of that pick (the propensity) is stored here, append-only, one row per generation, so datasets built
later can re-weight by inverse propensity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.storage.db import SessionFactory, read_session, write_session
from imageloop.storage.models import RecipeChoiceRow
from imageloop.storage.records import new_id, utcnow

__all__ = ["LoggedRecipeChoice", "RecipeChoiceLog"]


@dataclass(frozen=True, slots=True)
class LoggedRecipeChoice:
    generation_id: str
    user_id: str
    recipe: str
    propensity: float
    policy: str
    candidates: list[dict[str, Any]]
    created_at: datetime


class RecipeChoiceLog:
    """Append and read recipe choices."""

    def __init__(self, sessions: SessionFactory) -> None:
        self.sessions = sessions

    def record(
        self, generation_id: str, user_id: str, *, recipe: str, propensity: float, policy: str,
        candidates: list[dict[str, Any]],
    ) -> bool:
        """Log the choice made for ``generation_id``; False when one is already logged (a retried request)."""
        if not 0.0 < propensity <= 1.0:
            raise InvalidRequestError("propensity", f"must be in (0, 1], got {propensity}", value=propensity)
        with write_session(self.sessions) as session:
            exists = session.scalar(
                sa.select(RecipeChoiceRow.id).where(RecipeChoiceRow.generation_id == generation_id)
            )
            if exists is not None:
                return False
            session.add(RecipeChoiceRow(
                id=new_id(), generation_id=generation_id, user_id=user_id, recipe=recipe, propensity=propensity,
                policy=policy, candidates=candidates, created_at=utcnow(),
            ))
        return True

    def get(self, generation_id: str) -> LoggedRecipeChoice:
        """The choice logged for ``generation_id``; NotFoundError when none was."""
        with read_session(self.sessions) as session:
            row = session.scalar(sa.select(RecipeChoiceRow).where(RecipeChoiceRow.generation_id == generation_id))
            if row is None:
                raise NotFoundError(f"no recipe choice logged for generation {generation_id}")
            return LoggedRecipeChoice(
                row.generation_id, row.user_id, row.recipe, row.propensity, row.policy, list(row.candidates),
                row.created_at,
            )
