"""``imageloop bench events``: how fast the flywheel record is written and exported at scale.

1. Synthesise N user actions (default 1,000,000) with the generations, images and users they belong to — reroll and
   edit chains, likes and unlikes, downloads, discards, some opted-out users — and bulk-insert them (SQLite, or
   PostgreSQL through ``COPY``).
2. Export the four datasets ``sft``, ``dpo``, ``pairs`` and ``recipes``: each alone, then all four in one pass,
   every export in a fresh child process so its peak memory (max RSS) is its own; report seconds, rows and memory.
   The ``pairs`` images come from :class:`~imageloop.bench.event_images.SyntheticImageStore`: a real 64×64 PNG
   for every image key, decoded and re-encoded as JPEG like any stored image.
3. Optionally measure actions ingested per second through :class:`~imageloop.storage.ActionRepository` (the
   storage part of ``POST /api/v1/actions``); :func:`measure_ingest` takes any ``send`` callable, so the server
   benchmark can pass an HTTP client call instead.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from imageloop.bench.event_images import IMAGE_SIZE, SyntheticImageStore
from imageloop.storage.db import create_db_engine, upgrade_schema
from imageloop.storage.records import ActionType, JobStatus
from imageloop.storage.simulation import any_generation, bulk_insert, tune_for_bulk_load

EXPORTED_KINDS = ("sft", "dpo", "pairs", "recipes")
ALL_KINDS = "all"  # the kind named by the timing of the one pass that exports every kind
INSERT_BATCH = 20_000
TARGET_EXPORT_SECONDS = 20.0  # every kind, one pass, 1,000,000 events
TARGET_PEAK_RSS_MB = 2048.0
_START = datetime(2026, 1, 1, tzinfo=UTC)
_INTENTS = ["a cozy cabin", "un chat roux", "一只猫", "a red car", "portrait of an old sailor", "foggy forest"]
_STYLES = [None, "cinematic", "anime", "watercolor"]
_RECIPES = [None, "film", "product"]


@dataclass
class SyntheticCounts:
    users: int = 0
    generations: int = 0
    images: int = 0
    actions: int = 0


@dataclass
class ExportTiming:
    kind: str  # a dataset, or ALL_KINDS for the one pass that writes every dataset
    seconds: float
    rows: int
    chains: int
    peak_rss_mb: float
    baseline_rss_mb: float
    cpu_seconds: float  # user + system time of the export and its reader (wall time also counts waiting for CPU)
    skipped: int = 0  # pairs whose images were missing (none: every synthetic image key has bytes)
    transcoded: int = 0  # images re-encoded for want of a stored JPEG copy (none unless run without copies)
    rows_by_kind: dict[str, int] = field(default_factory=dict)
    # The process that reads a large record for the export (imageloop.storage.chains); 0 when read in-process.
    reader_peak_rss_mb: float = 0.0

    @property
    def total_peak_rss_mb(self) -> float:
        """Both processes' peaks added: an upper bound of their memory together."""
        return self.peak_rss_mb + self.reader_peak_rss_mb


@dataclass
class EventsBenchResult:
    events: int
    database: str  # the SQLAlchemy dialect: "sqlite" or "postgresql"
    database_version: str
    counts: SyntheticCounts
    insert_seconds: float
    exports: list[ExportTiming] = field(default_factory=list)  # each dataset exported alone
    export_all: ExportTiming | None = None  # every dataset in one pass: what the targets are about
    ingest_actions_per_second: float | None = None
    # Through POST /api/v1/actions on a real server, by number of concurrent clients (imageloop.bench.api_ingest).
    api_ingest_actions_per_second: dict[str, float] | None = None
    # Context for reading the wall times: other work on the machine stretches them (cpu_seconds does not).
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    load_average: tuple[float, float, float] = field(default_factory=os.getloadavg)

    @property
    def export_seconds(self) -> float:
        """Wall seconds of the one pass that exports every dataset."""
        return self.export_all.seconds if self.export_all is not None else 0.0

    @property
    def export_peak_rss_mb(self) -> float:
        return self.export_all.total_peak_rss_mb if self.export_all is not None else 0.0

    @property
    def meets_targets(self) -> bool:
        return self.export_seconds <= TARGET_EXPORT_SECONDS and self.export_peak_rss_mb <= TARGET_PEAK_RSS_MB

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["export_seconds"] = self.export_seconds
        data["export_peak_rss_mb"] = self.export_peak_rss_mb
        data["target_export_seconds"] = TARGET_EXPORT_SECONDS
        data["target_peak_rss_mb"] = TARGET_PEAK_RSS_MB
        return data


class _Synthesiser:
    """Deterministic fake record: chains of 1-4 generations with 2 images each and the actions on them."""

    def __init__(self, seed: int, users: int) -> None:
        self.rng = random.Random(seed)
        self.user_ids = [self._id() for _ in range(users)]
        self.counts = SyntheticCounts(users=users)
        self.clock = _START

    def _id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def users(self) -> list[dict[str, Any]]:
        return [
            {"id": uid, "name": f"user{i}", "is_admin": False, "training_opt_out": i % 20 == 0, "credits": 0,
             "tier": "free", "created_at": _START}
            for i, uid in enumerate(self.user_ids)
        ]

    def chain(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        rng = self.rng
        user = rng.choice(self.user_ids)
        intent = rng.choice(_INTENTS)
        recipe, style = rng.choice(_RECIPES), rng.choice(_STYLES)
        generations: list[dict[str, Any]] = []
        images: list[dict[str, Any]] = []
        actions: list[dict[str, Any]] = []
        chain_id = parent = None
        for step in range(rng.choice((1, 1, 2, 2, 3, 4))):
            self.clock += timedelta(seconds=1)
            gid = self._id()
            chain_id = chain_id or gid
            generations.append({
                "id": gid, "user_id": user, "intent": intent, "intent_language": "en",
                "final_prompt": f"{intent}, variation {step} {rng.getrandbits(20)}", "params": {"steps": 20},
                "recipe": recipe, "style": style, "parent_id": parent, "chain_id": chain_id,
                "status": JobStatus.SUCCEEDED, "cancel_requested": False, "enqueued_at": self.clock, "attempts": 1,
                "progress_step": 20, "progress_total": 20, "timings": {}, "created_at": self.clock,
            })
            image_ids = [self._id(), self._id()]
            images += [{"id": iid, "generation_id": gid, "user_id": user, "index": index, "seed": index,
                        "blob_key": f"images/{gid}/{index}.png", "width": IMAGE_SIZE, "height": IMAGE_SIZE,
                        "sha256": "0" * 64,
                        "content_type": "image/png", "created_at": self.clock}
                       for index, iid in enumerate(image_ids)]
            for kind in self._reactions():
                actions.append({"id": self._id(), "user_id": user, "type": kind, "client_event_id": self._id(),
                                "image_id": rng.choice(image_ids), "generation_id": gid,
                                "created_at": self.clock})
            if parent is not None:
                # The action that rerolled the parent into this generation.
                actions.append({"id": self._id(), "user_id": user, "type": ActionType.REGENERATE,
                                "client_event_id": self._id(), "image_id": None, "generation_id": parent,
                                "child_generation_id": gid, "created_at": self.clock})
            parent = gid
        self.counts.generations += len(generations)
        self.counts.images += len(images)
        self.counts.actions += len(actions)
        return generations, images, actions

    def _reactions(self) -> list[ActionType]:
        roll = self.rng.random()
        if roll < 0.35:
            return [ActionType.LIKE, ActionType.DOWNLOAD]
        if roll < 0.5:
            return [ActionType.LIKE, ActionType.UNLIKE]
        if roll < 0.65:
            return [ActionType.SHARE]
        if roll < 0.8:
            return [ActionType.DISCARD]
        return []


def synthesise(
    db_engine: Engine, events: int, *, seed: int = 0, users: int = 500, progress: Callable[[int], None] | None = None
) -> SyntheticCounts:
    """Bulk-insert a synthetic record holding about ``events`` user actions (stops at the first chain past it)."""
    maker = _Synthesiser(seed, users)
    tune_for_bulk_load(db_engine)
    bulk_insert(db_engine, users=maker.users())
    batches: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]] = ([], [], [])
    reported = 0
    while maker.counts.actions < events:
        for batch, rows in zip(batches, maker.chain(), strict=True):
            batch.extend(rows)
        if len(batches[2]) >= INSERT_BATCH or maker.counts.actions >= events:
            _insert(db_engine, *batches)
            batches = ([], [], [])
            if progress is not None:
                progress(maker.counts.actions - reported)
                reported = maker.counts.actions
    return maker.counts


def _insert(
    db_engine: Engine, generations: list[dict[str, Any]], images: list[dict[str, Any]], actions: list[dict[str, Any]]
) -> None:
    for row in actions:
        row.setdefault("child_generation_id", None)
    bulk_insert(db_engine, generations=generations, images=images, actions=actions)


def _export_in_child(kinds: tuple[str, ...], database_url: str, out_dir: str, jpeg_copies: bool) -> ExportTiming:
    # Runs in a fresh process: its max RSS is the export's own (plus the interpreter and imports, reported apart).
    from imageloop.flywheel.export import IMAGE_KINDS, export_datasets

    db_engine = create_db_engine(database_url)
    blobs = SyntheticImageStore(jpeg_copies=jpeg_copies) if IMAGE_KINDS & set(kinds) else None
    _reset_peak_rss()
    baseline = _peak_rss_mb()
    before = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    results = export_datasets(kinds, db_engine, Path(out_dir), blobs=blobs)
    cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - before
    db_engine.dispose()
    # The only child of this fresh process is the export's reader, if it started one (Linux reports KiB).
    reader_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    kind = results[0].kind if len(results) == 1 else ALL_KINDS
    return ExportTiming(kind, results[0].seconds, sum(r.rows for r in results), results[0].chains, _peak_rss_mb(),
                        baseline, cpu, sum(r.skipped for r in results), sum(r.transcoded for r in results),
                        {r.kind: r.rows for r in results}, reader_peak)


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _reset_peak_rss() -> None:
    # A child starts with its parent's peak RSS (Linux copies the high-water mark on fork and keeps it across
    # exec), so the set-up's memory would show as the export's; "5" resets it where the kernel allows.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_export(database_url: str, out_dir: Path, kinds: tuple[str, ...], *, jpeg_copies: bool = True) -> ExportTiming:
    """Export ``kinds`` in one pass, in a fresh child process: wall and CPU seconds, rows of all kinds together,
    and the peak memory of the process. ``jpeg_copies=False``: the images have no stored JPEG copies."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_export_in_child, kinds, database_url, str(out_dir), jpeg_copies).result()


def time_exports(
    database_url: str, out_dir: Path, kinds: tuple[str, ...] = EXPORTED_KINDS, *, jpeg_copies: bool = True
) -> tuple[list[ExportTiming], ExportTiming]:
    """Each of ``kinds`` exported alone, then all of them in one pass (each in its own fresh child process)."""
    alone = [time_export(database_url, out_dir / "alone", (kind,), jpeg_copies=jpeg_copies) for kind in kinds]
    return alone, time_export(database_url, out_dir / ALL_KINDS, kinds, jpeg_copies=jpeg_copies)


def database_version(db_engine: Engine) -> str:
    """The database server's version, e.g. ``"3.45.1"`` or ``"16.4"``."""
    info = db_engine.dialect.server_version_info
    if info is None:
        with db_engine.connect():  # the dialect learns the version on the first connection
            info = db_engine.dialect.server_version_info
    return ".".join(str(part) for part in info or ())


def measure_ingest(send: Callable[[int], object], count: int) -> float:
    """Call ``send(i)`` for i in 0..count-1 and return calls per second (``send`` records one action)."""
    start = time.perf_counter()
    for i in range(count):
        send(i)
    return count / (time.perf_counter() - start)


def repository_ingest_rate(database_url: str, count: int = 2_000) -> float:
    """Actions per second through ActionRepository.record on the bench database (no HTTP)."""
    from imageloop.storage.actions import ActionRepository
    from imageloop.storage.db import session_factory
    from imageloop.storage.records import GenerationId, UserId

    db_engine = create_db_engine(database_url)
    try:
        user_id, generation_id = any_generation(db_engine)
        actions = ActionRepository(session_factory(db_engine))
        run = f"{time.time_ns():x}"

        def send(i: int) -> object:
            return actions.record(UserId(user_id), ActionType.LIKE, f"ingest-{run}-{i}",
                                  generation_id=GenerationId(generation_id))

        return measure_ingest(send, count)
    finally:
        db_engine.dispose()


def prepare_database(database_url: str) -> Engine:
    """Create the schema on an empty database for the benchmark."""
    db_engine = create_db_engine(database_url)
    upgrade_schema(db_engine)
    return db_engine
