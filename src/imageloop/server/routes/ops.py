"""Operations: liveness/readiness and Prometheus metrics (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from imageloop.server.deps import ServicesDep
from imageloop.server.schemas import HealthOut

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="Health: database reachable, workers running")
def healthz(services: ServicesDep) -> HealthOut:
    """503 (StorageError) when the database cannot be read; ``degraded`` when the job queue cannot take jobs."""
    depth = services.storage.generations.queue_depth()
    worker = services.queue.healthy()
    return HealthOut(status="ok" if worker else "degraded", mode=services.settings.jobs.mode, queue_depth=depth,
                     worker=worker)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(services: ServicesDep) -> Response:
    return Response(content=services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
