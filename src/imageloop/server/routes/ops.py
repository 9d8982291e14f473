"""Operations: liveness/readiness (no authentication) and Prometheus metrics (open, or behind
``server.metrics_token``)."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from imageloop.errors import AuthError
from imageloop.server.deps import ServicesDep
from imageloop.server.schemas import HealthOut

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Health: database reachable, models loaded, workers running",
            responses={503: {"model": HealthOut, "description": "starting: models still loading (see loading)"}})
def healthz(services: ServicesDep, response: Response) -> HealthOut:
    """``ok`` when ready. While the expander's models or the engine load after start-up: HTTP 503 with status
    ``starting`` and ``loading`` naming what is still loading (generations submitted meanwhile wait in the queue).
    ``degraded`` when the job queue cannot take jobs; 503 (StorageError) when the database cannot be read."""
    depth = services.storage.generations.queue_depth()
    worker = services.queue.healthy()
    loading = services.loading()
    status: Literal["ok", "starting", "degraded"] = "degraded" if not worker else "starting" if loading else "ok"
    if status == "starting":
        response.status_code = 503
    return HealthOut(status=status, mode=services.settings.jobs.mode, queue_depth=depth, worker=worker,
                     loading=loading)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(services: ServicesDep, authorization: Annotated[str | None, Header(max_length=512)] = None) -> Response:
    """Open unless ``server.metrics_token`` is set; then ``Authorization: Bearer <token>`` is required (401)."""
    token = services.settings.server.metrics_token
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            raise AuthError("metrics: a valid bearer token (server.metrics_token) is required")
    return Response(content=services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
