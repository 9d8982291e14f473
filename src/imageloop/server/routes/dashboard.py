"""The flywheel dashboard (admins): keep rate over time, the action funnel, dataset sizes, the model and expander
versions in the record, and the recipe leaderboard.

Besides the model registry (expander adapters, reward models, LoRAs with their eval metrics; promote and rollback
are the training routes') and the latest training runs, it shows the versions the record itself names (which base
model and expander produced each image) with their keep rates.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.engine import Engine

from imageloop.errors import PermissionDeniedError
from imageloop.flywheel.datasets import RecipeTally, dpo_examples, pair_specs, sft_examples, view
from imageloop.flywheel.export import iter_chains
from imageloop.server.deps import CurrentUser, RegistryDep, RunsDep, ServicesDep
from imageloop.server.schemas import ModelVersionOut, TrainingRunOut
from imageloop.server.ui_schemas import (
    DailyKeepRateOut,
    DashboardOut,
    DatasetSizesOut,
    FunnelOut,
    RecipeRankOut,
    ServedModelOut,
)
from imageloop.storage.dashboard import action_funnel, keep_rate_by_day, served_models, user_counts
from imageloop.storage.db import SessionFactory
from imageloop.storage.records import ModelStatus
from imageloop.storage.runs import RunStore
from imageloop.training.registry import Registry

router = APIRouter(prefix="/api/v1", tags=["dashboard"])

# Dataset sizes walk the whole record (like an export); a dashboard refreshed every few seconds reuses the count.
DATASET_CACHE_SECONDS = 30.0


def _rate(kept: int, total: int) -> float:
    return kept / total if total else 0.0


def daily_series(sessions: SessionFactory, first: date, days: int) -> list[DailyKeepRateOut]:
    """One row per UTC day from ``first``, days without images included (keep rate None), so a plot's x axis is
    time."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    found = {row.day: row for row in keep_rate_by_day(sessions, start)}
    out = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = found.get(day)
        images, kept = (row.images, row.kept) if row is not None else (0, 0)
        out.append(DailyKeepRateOut(day=day, images=images, kept=kept, keep_rate=kept / images if images else None))
    return out


def count_datasets(db_engine: Engine) -> tuple[DatasetSizesOut, list[RecipeRankOut]]:
    """Rows each export would write now, and the recipe table, in one pass over the record."""
    chains = sft = dpo = pairs = 0
    tally = RecipeTally()
    for chain in iter_chains(db_engine):
        info = view(chain)
        chains += 1
        sft += sum(1 for _ in sft_examples(info))
        dpo += sum(1 for _ in dpo_examples(info))
        pairs += sum(1 for _ in pair_specs(info))
        tally.add(info)
    stats = tally.stats()
    ranked = sorted(stats, key=lambda row: (-row.keep_rate_low, -row.uses, row.recipe, row.style))
    recipes = [RecipeRankOut(recipe=row.recipe, style=row.style, uses=row.uses, kept=row.kept, keep_rate=row.keep_rate,
                             keep_rate_low=row.keep_rate_low, keep_rate_high=row.keep_rate_high) for row in ranked]
    return DatasetSizesOut(chains=chains, sft=sft, dpo=dpo, pairs=pairs, recipes=len(stats)), recipes


def model_versions(registry: Registry) -> list[ModelVersionOut]:
    """Public registry versions, newest first; A/B candidates with both arms' keep rates."""
    out = []
    for version in registry.list():
        candidate = control = None
        if version.status is ModelStatus.AB_TEST:
            arms = registry.arm_stats(version)
            candidate, control = arms[0].keep_rate, arms[1].keep_rate
        out.append(ModelVersionOut.model_validate(
            {**version.to_dict(), "ab_keep_rate": candidate, "ab_control_keep_rate": control}))
    return out


def training_runs(runs: RunStore, limit: int = 10) -> list[TrainingRunOut]:
    return [TrainingRunOut.model_validate(run.to_dict()) for run in runs.list(limit=limit)]


class _DatasetCache:
    """The last dataset count per database, reused for DATASET_CACHE_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, tuple[DatasetSizesOut, list[RecipeRankOut]]]] = {}

    def get(self, db_engine: Engine) -> tuple[DatasetSizesOut, list[RecipeRankOut]]:
        key = str(db_engine.url)
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < DATASET_CACHE_SECONDS:
            return entry[1]
        value = count_datasets(db_engine)
        with self._lock:
            self._entries[key] = (time.monotonic(), value)
        return value


_datasets = _DatasetCache()


@router.get("/dashboard", summary="The flywheel dashboard (admins only)")
def dashboard(
    user: CurrentUser,
    services: ServicesDep,
    registry: RegistryDep,
    runs: RunsDep,
    days: Annotated[int, Query(ge=1, le=366, description="How many days the keep-rate plot covers.")] = 30,
    fresh: Annotated[bool, Query(description="Recount the datasets now instead of within 30 s.")] = False,
) -> DashboardOut:
    """Counts over the whole record (every user, opted-out ones included, except dataset sizes, which count
    what an export would write). 403 for users who are not admins (``imageloop users create NAME --admin``)."""
    if not user.is_admin:
        raise PermissionDeniedError("the flywheel dashboard is for administrators")
    sessions = services.storage.sessions
    first = datetime.now(UTC).date() - timedelta(days=days - 1)
    funnel = action_funnel(sessions)
    users, opted_out = user_counts(sessions)
    db_engine = services.storage.db_engine
    datasets, recipes = count_datasets(db_engine) if fresh else _datasets.get(db_engine)
    return DashboardOut(
        days=days, users=users, users_opted_out=opted_out,
        queue_depth=services.storage.generations.queue_depth(),
        keep_rate_by_day=daily_series(sessions, first, days),
        funnel=FunnelOut(generations=funnel.generations, images=funnel.images, kept=funnel.kept,
                         keep_rate=_rate(funnel.kept, funnel.images), by_action=funnel.by_action),
        datasets=datasets,
        served_models=[
            ServedModelOut(base_model_id=row.base_model_id, base_model_version=row.base_model_version,
                           expander_strategy=row.expander_strategy, expander_version=row.expander_version,
                           generations=row.generations, images=row.images, kept=row.kept,
                           keep_rate=_rate(row.kept, row.images))
            for row in served_models(sessions)
        ],
        recipes=recipes,
        model_versions=model_versions(registry),
        training_runs=training_runs(runs),
    )
