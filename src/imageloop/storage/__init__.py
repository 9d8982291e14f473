"""Storage: SQLAlchemy models and Alembic migrations, repositories, and the blob store (local dir or S3).

Start here: ``Storage.open(settings)`` gives the database engine, the blob store and the three repositories
(``users``, ``generations`` with the job queue, ``actions``). They take and return the frozen records of
:mod:`imageloop.storage.records`, never ORM objects.
"""

# Every table is declared in imageloop.storage.models: importing it is what makes Base.metadata complete.
from imageloop.storage import models  # noqa: F401
from imageloop.storage.actions import ActionRepository
from imageloop.storage.blobs import (
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    blob_store_from_settings,
    image_blob_key,
    jpeg_copy_key,
)
from imageloop.storage.credits import CreditRepository
from imageloop.storage.db import create_db_engine, session_factory, upgrade_schema
from imageloop.storage.generations import GenerationRepository
from imageloop.storage.records import (
    ActionId,
    ActionRecord,
    ActionType,
    Allowance,
    ApiKeyId,
    ApiKeyInfo,
    Charge,
    CreditBalance,
    EditDetails,
    Expansion,
    FinishedGeneration,
    GenerationId,
    GenerationRecord,
    HeartbeatResult,
    HistoryPage,
    ImageId,
    ImageRecord,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    NewGeneration,
    NewImage,
    RecordedAction,
    SessionId,
    UserAccount,
    UserId,
    WorkerId,
)
from imageloop.storage.store import Storage
from imageloop.storage.users import DeletedData, UserRepository

__all__ = [
    "ActionId",
    "ActionRecord",
    "ActionRepository",
    "ActionType",
    "Allowance",
    "ApiKeyId",
    "ApiKeyInfo",
    "BlobStore",
    "Charge",
    "CreditBalance",
    "CreditRepository",
    "DeletedData",
    "EditDetails",
    "Expansion",
    "FinishedGeneration",
    "GenerationId",
    "GenerationRecord",
    "GenerationRepository",
    "HeartbeatResult",
    "HistoryPage",
    "ImageId",
    "ImageRecord",
    "JobStatus",
    "LedgerEntry",
    "LedgerKind",
    "LocalBlobStore",
    "NewGeneration",
    "NewImage",
    "RecordedAction",
    "S3BlobStore",
    "SessionId",
    "Storage",
    "UserAccount",
    "UserId",
    "UserRepository",
    "WorkerId",
    "blob_store_from_settings",
    "create_db_engine",
    "image_blob_key",
    "jpeg_copy_key",
    "session_factory",
    "upgrade_schema",
]
