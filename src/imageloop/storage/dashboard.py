"""Read-only queries behind the web page: the filtered gallery, image reactions, and the flywheel dashboard.

"Kept" and "liked" are the SQL half of the one definition in :mod:`imageloop.storage.kept`.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa

from imageloop.errors import InvalidRequestError
from imageloop.storage._convert import load_generations
from imageloop.storage.db import SessionFactory, read_session
from imageloop.storage.generations import MAX_HISTORY_PAGE, decode_cursor, encode_cursor
from imageloop.storage.kept import kept_clause, liked_clause
from imageloop.storage.models import Generation, Image, User, UserAction
from imageloop.storage.records import ActionType, HistoryPage, ImageId, JobStatus, UserId


class GalleryFilter(enum.StrEnum):
    """Which of the user's generations the gallery shows."""

    ALL = "all"
    KEPT = "kept"
    LIKED = "liked"


def gallery_page(
    sessions: SessionFactory,
    user_id: UserId,
    *,
    cursor: str | None = None,
    limit: int = 20,
    show: GalleryFilter = GalleryFilter.ALL,
    style: str | None = None,
) -> HistoryPage:
    """One page of the user's generations, newest first, keeping only those with a kept (or liked) image and
    of ``style`` when asked. Pass ``next_cursor`` back for the next page."""
    if not 1 <= limit <= MAX_HISTORY_PAGE:
        raise InvalidRequestError("limit", f"must be between 1 and {MAX_HISTORY_PAGE}", value=limit)
    query = sa.select(Generation).where(Generation.user_id == user_id)
    if style:
        query = query.where(Generation.style == style)
    if show is not GalleryFilter.ALL:
        clause = kept_clause if show is GalleryFilter.KEPT else liked_clause
        query = query.where(sa.exists(
            sa.select(Image.id).where(Image.generation_id == Generation.id, clause(Image.id))
        ))
    if cursor:
        created_at, last_id = decode_cursor(cursor)
        query = query.where(sa.or_(
            Generation.created_at < created_at,
            sa.and_(Generation.created_at == created_at, Generation.id < last_id),
        ))
    query = query.order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit + 1)
    with read_session(sessions) as session:
        rows = list(session.scalars(query))
        records = load_generations(session, rows[:limit])
    next_cursor = encode_cursor(records[-1].created_at, records[-1].id) if len(rows) > limit else None
    return HistoryPage(items=tuple(records), next_cursor=next_cursor)


def image_actions(
    sessions: SessionFactory, user_id: UserId, image_ids: Iterable[str]
) -> dict[ImageId, list[ActionType]]:
    """The user's actions on each of ``image_ids``, oldest first (images without actions map to [])."""
    wanted = sorted(set(image_ids))
    out: dict[ImageId, list[ActionType]] = {ImageId(image_id): [] for image_id in wanted}
    if not wanted:
        return out
    query = (
        sa.select(UserAction.image_id, UserAction.type)
        .where(UserAction.user_id == user_id, UserAction.image_id.in_(wanted))
        .order_by(UserAction.created_at, UserAction.id)
    )
    with read_session(sessions) as session:
        for image_id, action in session.execute(query):
            out[ImageId(image_id or "")].append(action)
    return out


# --- the flywheel dashboard ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DailyKeepRate:
    """Images made on ``day`` (UTC) and how many of them are kept now."""

    day: date
    images: int
    kept: int


@dataclass(frozen=True, slots=True)
class ActionFunnel:
    """Images generated, how many are kept, and how many distinct targets got each action type."""

    generations: dict[JobStatus, int]
    images: int
    kept: int
    by_action: dict[ActionType, int]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A (base model, expander) combination found in the record, with what users kept of its images."""

    base_model_id: str | None
    base_model_version: str | None
    expander_strategy: str | None
    expander_version: str | None
    generations: int
    images: int
    kept: int


def _day(value: object) -> date:
    # SQLite's date() gives 'YYYY-MM-DD' text, PostgreSQL a date.
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def keep_rate_by_day(sessions: SessionFactory, since: datetime) -> list[DailyKeepRate]:
    """Per UTC day from ``since``: images created and images kept, oldest day first (days without images left out)."""
    day = sa.func.date(Image.created_at)
    kept = sa.func.sum(sa.case((kept_clause(Image.id), 1), else_=0))
    query = (
        sa.select(day, sa.func.count(Image.id), kept).where(Image.created_at >= since).group_by(day).order_by(day)
    )
    with read_session(sessions) as session:
        return [DailyKeepRate(day=_day(d), images=int(n), kept=int(k or 0)) for d, n, k in session.execute(query)]


def action_funnel(sessions: SessionFactory) -> ActionFunnel:
    """The whole record's funnel: generations by status, images, kept images, distinct targets per action."""
    target = sa.func.coalesce(UserAction.image_id, UserAction.generation_id)
    with read_session(sessions) as session:
        statuses = dict.fromkeys(JobStatus, 0)
        for status, count in session.execute(sa.select(Generation.status, sa.func.count()).group_by(Generation.status)):
            statuses[status] = int(count)
        images = int(session.scalar(sa.select(sa.func.count(Image.id))) or 0)
        kept_query = sa.select(sa.func.count(Image.id)).where(kept_clause(Image.id))
        kept = int(session.scalar(kept_query) or 0)
        by_action = dict.fromkeys(ActionType, 0)
        query = sa.select(UserAction.type, sa.func.count(sa.distinct(target))).group_by(UserAction.type)
        for action, count in session.execute(query):
            by_action[action] = int(count)
    return ActionFunnel(generations=statuses, images=images, kept=kept, by_action=by_action)


def served_models(sessions: SessionFactory) -> list[ServedModel]:
    """Every base model and expander version that produced images, with its image and kept counts (most used
    first). Until the model registry exists, this is what the record says about versions."""
    keys = (Generation.base_model_id, Generation.base_model_version, Generation.expander_strategy,
            Generation.expander_version)
    generations: dict[tuple[str | None, ...], int] = defaultdict(int)
    query = sa.select(*keys, sa.func.count()).where(Generation.status == JobStatus.SUCCEEDED).group_by(*keys)
    images_query = (
        sa.select(*keys, sa.func.count(Image.id), sa.func.sum(sa.case((kept_clause(Image.id), 1), else_=0)))
        .join(Generation, Generation.id == Image.generation_id).group_by(*keys)
    )
    with read_session(sessions) as session:
        for *key, count in session.execute(query):
            generations[tuple(key)] = int(count)
        rows = [
            ServedModel(base_model_id=model_id, base_model_version=model_version, expander_strategy=strategy,
                        expander_version=version, generations=generations.get((model_id, model_version, strategy,
                                                                               version), 0),
                        images=int(n), kept=int(k or 0))
            for model_id, model_version, strategy, version, n, k in session.execute(images_query)
        ]
    return sorted(rows, key=lambda row: (-row.images, str(row.base_model_version)))


def user_counts(sessions: SessionFactory) -> tuple[int, int]:
    """(active users, of which opted out of training use)."""
    with read_session(sessions) as session:
        live = sa.select(sa.func.count(User.id)).where(User.deleted_at.is_(None))
        users = int(session.scalar(live) or 0)
        opted_out = int(session.scalar(live.where(User.training_opt_out.is_(True))) or 0)
    return users, opted_out

