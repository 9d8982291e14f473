"""Image files: by id for the owner, and through signed links for clients without an Authorization header."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.schemas import MAX_ID
from imageloop.storage import ImageId

router = APIRouter(prefix="/api/v1", tags=["images"])

_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The PNG, with its A1111 'parameters' text chunk."}
}


@router.get("/images/{image_id}", response_class=Response, responses=_PNG, summary="An image (PNG)")
def get_image(
    image_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)], user: CurrentUser, services: ServicesDep
) -> Response:
    """The user's image as stored: a PNG whose ``parameters`` chunk says how to make it again."""
    image = services.storage.generations.get_image(user.id, ImageId(image_id))
    data = services.storage.blobs.get(image.blob_key)
    return Response(
        content=data, media_type=image.content_type,
        headers={"Cache-Control": "private, max-age=31536000, immutable",
                 "Content-Disposition": f'inline; filename="{image.id}.png"'},
    )


@router.get("/files/{key:path}", response_class=Response, responses=_PNG, summary="An image through a signed link")
def get_file(
    key: Annotated[str, Path(min_length=1, max_length=512)],
    services: ServicesDep,
    expires: Annotated[int, Query(ge=0, le=2**62)],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """The image behind a link from ``response_format="url"``; 403 when the link is forged or expired."""
    services.links.check(key, expires, signature)
    return Response(content=services.storage.blobs.get(key), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})
