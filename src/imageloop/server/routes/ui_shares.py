"""Share links: the owner makes (and revokes) a public link to an image; anyone with it sees the image.

Making a link records a ``share`` action (the flywheel counts the image as kept), idempotent on the client event
id like every action: a retried request returns the link made the first time, and never makes a new one when the
owner has revoked it since. Links are absolute from ``server.public_url`` (see
:func:`imageloop.server.links.public_base_url`).
"""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from imageloop.errors import NotFoundError
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.links import public_base_url
from imageloop.server.schemas import MAX_ID
from imageloop.server.services import Services
from imageloop.server.ui_schemas import ShareCreate, SharedImageOut, ShareLinkOut
from imageloop.storage import ActionType, ImageId
from imageloop.storage.shares import MAX_TOKEN, ShareLink, ShareLinkId, ShareLinkRepository

router = APIRouter(tags=["shares"])

TokenPath = Annotated[str, Path(min_length=1, max_length=MAX_TOKEN)]


def _shares(services: Services) -> ShareLinkRepository:
    return ShareLinkRepository(services.storage.sessions)


def _base_url(services: Services, request: Request) -> str:
    return public_base_url(services.settings, request)


def share_out(link: ShareLink, base_url: str) -> ShareLinkOut:
    return ShareLinkOut(
        id=link.id, image_id=link.image_id, generation_id=link.generation_id, url=f"{base_url}/s/{link.token}",
        image_url=f"{base_url}/api/v1/shared/{link.token}/image", created_at=link.created_at,
        revoked_at=link.revoked_at, active=link.active,
    )


@router.post("/api/v1/shares", status_code=201, summary="Share an image: a public, revocable link")
def create_share(
    body: ShareCreate, user: CurrentUser, services: ServicesDep, request: Request, response: Response
) -> ShareLinkOut:
    """Records a ``share`` action and returns a link that works for visitors who are not signed in. 201 with a new
    link; 200 with the link made the first time when this ``client_event_id`` was seen before (a revoked link stays
    revoked)."""
    image_id = ImageId(body.image_id)
    recorded = services.storage.actions.record(user.id, ActionType.SHARE, body.client_event_id, image_id=image_id)
    shares = _shares(services)
    link = None
    if not recorded.created:
        response.status_code = 200
        # The newest link of the image, revoked or not: a retry never brings back a link its owner revoked.
        link = next(iter(shares.list_for_user(user.id, image_id=image_id)), None)
    return share_out(link or shares.create(user.id, image_id), _base_url(services, request))


@router.get("/api/v1/shares", summary="The user's share links, newest first")
def list_shares(
    user: CurrentUser,
    services: ServicesDep,
    request: Request,
    image_id: Annotated[str | None, Query(min_length=1, max_length=MAX_ID, description="Only this image's.")] = None,
) -> list[ShareLinkOut]:
    links = _shares(services).list_for_user(user.id, image_id=ImageId(image_id) if image_id else None)
    base_url = _base_url(services, request)
    return [share_out(link, base_url) for link in links]


@router.delete("/api/v1/shares/{link_id}", summary="Revoke a share link")
def revoke_share(
    link_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)],
    user: CurrentUser,
    services: ServicesDep,
    request: Request,
) -> ShareLinkOut:
    """From now on the link answers 404. Revoking is permanent; share again for a new link."""
    return share_out(_shares(services).revoke(user.id, ShareLinkId(link_id)), _base_url(services, request))


@router.get("/api/v1/shared/{token}", summary="A shared image's details (no sign-in)")
def shared(token: TokenPath, services: ServicesDep) -> SharedImageOut:
    found = _shares(services).resolve(token)
    return SharedImageOut(prompt=found.prompt, width=found.width, height=found.height,
                          image_url=f"/api/v1/shared/{token}/image", created_at=found.created_at)


@router.get("/api/v1/shared/{token}/image", response_class=Response, summary="A shared image (PNG, no sign-in)",
            responses={200: {"content": {"image/png": {}}}})
def shared_image(token: TokenPath, services: ServicesDep) -> Response:
    found = _shares(services).resolve(token)
    # no-store: a revoked link must stop working, including in caches.
    return Response(content=services.storage.blobs.get(found.blob_key), media_type=found.content_type,
                    headers={"Cache-Control": "no-store"})


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{title} · Imageloop</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body class="shared-page"><main>{body}<p class="muted"><a href="/">Imageloop</a></p></main></body></html>
"""


# The page shows an image and text from this server only; no-store so a revoked link stops working at once.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/s/{token}", response_class=HTMLResponse, include_in_schema=False)
def shared_page(token: TokenPath, services: ServicesDep) -> HTMLResponse:
    """The page a share link opens: the image and its prompt, or a plain 404 once revoked."""
    try:
        found = _shares(services).resolve(token)
    except NotFoundError:
        body = "<h1>Link not found</h1><p>This share link was revoked or never existed.</p>"
        return HTMLResponse(_PAGE.format(title="Not found", body=body), status_code=404, headers=_PAGE_HEADERS)
    prompt = html.escape(found.prompt or "")
    body = (
        f'<figure class="shared"><img src="/api/v1/shared/{html.escape(token)}/image" alt="{prompt}" '
        f'width="{found.width}" height="{found.height}"><figcaption>{prompt}</figcaption></figure>'
    )
    return HTMLResponse(_PAGE.format(title="Shared image", body=body), headers=_PAGE_HEADERS)
