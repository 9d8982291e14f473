"""Operations: liveness/readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

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
def metrics(services: ServicesDep) -> Response:
    return Response(content=services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
