"""How errors become HTTP responses: every ImageloopError with its ``http_status`` and a JSON body naming the
field; request validation errors as 422 naming the field; nothing a client sends produces a 500.

Routes under ``/v1/`` (the OpenAI-compatible API) answer in OpenAI's error shape so its clients understand them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from imageloop.errors import AuthError, ImageloopError, QuotaError, redact_paths

log = logging.getLogger(__name__)

_HTTP_ERROR_NAMES = {
    400: "BadRequest", 401: "AuthError", 403: "PermissionDeniedError", 404: "NotFoundError",
    405: "MethodNotAllowed", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 422: "InvalidRequestError",
}


def _respond(
    request: Request, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    if request.url.path.startswith("/v1/"):
        body = {"error": {"message": body.get("message", ""), "type": body.get("error", "error"),
                          "param": body.get("field"), "code": None}}
    return JSONResponse(status_code=status, content=body, headers=headers)


def _field_of(location: tuple[Any, ...] | list[Any]) -> tuple[str, str]:
    """('body', 'params', 'steps') -> ('body', 'params.steps'); the location alone when it names no field."""
    parts = [str(part) for part in location]
    where = parts[0] if parts else "body"
    rest = parts[1:] if where in {"body", "query", "path", "header", "cookie"} else parts
    return where, ".".join(rest) or where


async def imageloop_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageloopError)
    if exc.http_status >= 500:
        log.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    if isinstance(exc, QuotaError) and exc.retry_after is not None:
        headers = {"Retry-After": str(exc.retry_after)}
    body = exc.to_dict()
    body["message"] = redact_paths(str(body.get("message", "")))  # the log keeps the paths, the client gets names
    return _respond(request, exc.http_status, body, headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where, field = _field_of(error.get("loc", ()))
        if error.get("type") == "json_invalid":  # the location is a character offset, not a field
            field = where
        # The offending input is left out: it may be huge, or not JSON at all.
        problems.append({"field": field, "in": where, "message": str(error.get("msg", "")), "type": error.get("type")})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    body = {
        "error": "InvalidRequestError", "message": f"{first['field']}: {first['message']}", "field": first["field"],
        "problems": problems[:20],
    }
    return _respond(request, 422, body)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    name = _HTTP_ERROR_NAMES.get(exc.status_code, "HTTPError")
    body: dict[str, Any] = {"error": name, "message": str(exc.detail)}
    if exc.status_code == 413:
        body["field"] = "body"
    return _respond(request, exc.status_code, body, dict(exc.headers or {}) or None)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, {"error": "InternalError", "message": "internal error; see the server log"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(ImageloopError, imageloop_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
