"""The one exception tree of Imageloop.

Every error a user can cause or meet derives from :class:`ImageloopError` and carries a message that names
what is wrong. The server maps each class to an HTTP status through ``http_status``.

    ImageloopError
    ├── ConfigError                 settings or a config file are invalid                       (500)
    ├── InvalidRequestError         a request field is invalid; ``field`` names it               (422)
    │   └── UnknownNameError        a name (scheduler, recipe, style, model) is not known        (422)
    ├── NotFoundError               a stored thing does not exist (or is not the caller's)       (404)
    ├── AuthError                   missing or wrong credentials                                 (401)
    ├── PermissionDeniedError       authenticated but not allowed                                (403)
    ├── ConflictError               the request conflicts with stored state                      (409)
    ├── QuotaError                  over a rate, concurrency or queue limit                      (429)
    │   └── OutOfCreditsError       the balance does not cover the request's cost                (402)
    ├── ModerationError             the request was blocked; ``category`` says why               (400)
    ├── ModelLoadError              a model file or folder cannot be loaded                      (422)
    │   └── UnsupportedModelError   the file is readable but not a model we can run              (422)
    ├── RecipeError                 a recipe or LoRA file is invalid                             (422)
    ├── GenerationCancelled         a run was cancelled through its callback                     (409)
    ├── GenerationFailed            a waited-for generation ended without images (no retry helps) (422)
    ├── StorageError                the database or blob store failed                            (503)
    ├── TrainingError               a training run failed or cannot start                        (500)
    └── SimulationError             a benchmark simulation met a service answer it cannot go on from (500)

Messages name files by their full path for the log and the CLI; what a client sees goes through
:func:`redact_paths`, which keeps only each file's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# An absolute file path ("/home/ada/.imageloop/loras/x.safetensors", "C:\\data\\x.png"),
# but not a route of this API ("/api/v1/generations", "/v1/images/generations", "/static/app.css", "/s/TOKEN").
_FILE_PATH = re.compile(
    r"(?<![\w.:/])(?!/(?:api|v1|static|s|docs)/)(?:/|[A-Za-z]:\\)(?:[\w.\-]+[/\\])+([\w.\-]+)"
)


def redact_paths(message: str) -> str:
    """``message`` with every absolute file path replaced by the file's own name: responses never show where the
    server keeps its files."""
    return _FILE_PATH.sub(lambda match: match.group(1), message)


class ImageloopError(Exception):
    """Base of every Imageloop error."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description for API responses."""
        return {"error": type(self).__name__, "message": self.message}


class ConfigError(ImageloopError):
    """Settings or a configuration file are invalid."""


class InvalidRequestError(ImageloopError):
    """A request field is invalid. ``field`` names it; ``allowed`` says what would be accepted."""

    http_status = 422

    def __init__(self, field: str, message: str, *, value: Any = None, allowed: str | None = None) -> None:
        text = f"{field}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)
        self.field = field
        self.value = value
        self.allowed = allowed

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["field"] = self.field
        if self.allowed:
            out["allowed"] = self.allowed
        return out


class UnknownNameError(InvalidRequestError):
    """A name (scheduler, recipe, style preset, model) is not one we know."""

    def __init__(self, field: str, name: str, known: Iterable[str]) -> None:
        known_list = sorted(known)
        super().__init__(field, f"unknown {field} {name!r}", value=name, allowed=", ".join(known_list))
        self.known = known_list


class NotFoundError(ImageloopError):
    """A stored thing does not exist, or belongs to someone else."""

    http_status = 404


class AuthError(ImageloopError):
    """Missing or wrong credentials."""

    http_status = 401


class PermissionDeniedError(ImageloopError):
    """Authenticated, but not allowed to do this."""

    http_status = 403


class ConflictError(ImageloopError):
    """The request conflicts with stored state."""

    http_status = 409


class QuotaError(ImageloopError):
    """Over a rate, concurrency or queue limit (or, as OutOfCreditsError, out of credits); ``retry_after`` (seconds,
    optional) becomes the Retry-After header."""

    http_status = 429

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class OutOfCreditsError(QuotaError):
    """The user's credit balance does not cover what the request costs; ``retry_after`` is the time to the next
    refill when that refill would cover it."""

    http_status = 402


class ModerationError(ImageloopError):
    """The request was blocked by moderation; ``category`` names the reason."""

    http_status = 400

    def __init__(self, category: str, message: str) -> None:
        super().__init__(f"blocked ({category}): {message}")
        self.category = category

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["category"] = self.category
        return out


class ModelLoadError(ImageloopError):
    """A model file or folder cannot be loaded; the message names the path and the reason."""

    http_status = 422


class UnsupportedModelError(ModelLoadError):
    """The file is readable but holds no model architecture we can run."""


class RecipeError(ImageloopError):
    """A recipe, or a LoRA file it names, is invalid."""

    http_status = 422


class GenerationCancelled(ImageloopError):
    """A generation was stopped through its cancel callback; it returns no image."""

    http_status = 409


class GenerationFailed(ImageloopError):
    """A generation the caller waited for ended without its images: it failed, every image was withheld, or it was
    cancelled (also when the wait ran out). Not a retryable status: a client that retries would queue it again."""

    http_status = 422


class StorageError(ImageloopError):
    """The database or the blob store failed."""

    http_status = 503


class TrainingError(ImageloopError):
    """A training run failed or cannot start."""


class SimulationError(ImageloopError):
    """A benchmark simulation (``imageloop bench flywheel``) got an answer from the service it cannot go on from."""
