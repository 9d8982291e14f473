"""The History page: the user's gallery (filtered by kept, liked, style) and the full record of one generation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated

from fastapi import APIRouter, Path, Query

from imageloop.flywheel.actions import is_kept
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.routes.generations import view
from imageloop.server.schemas import MAX_ID, MAX_NAME, action_out
from imageloop.server.services import Services
from imageloop.server.ui_schemas import GalleryItem, GalleryOut, ImageReactionOut, RecordOut
from imageloop.storage import ActionType, GenerationId, GenerationRecord, UserId
from imageloop.storage.dashboard import GalleryFilter, gallery_page, image_actions

router = APIRouter(prefix="/api/v1", tags=["history"])

_REACTIONS = {ActionType.LIKE, ActionType.UNLIKE, ActionType.DISCARD}


def reaction(actions: Sequence[ActionType]) -> ImageReactionOut:
    """Where a user stands with an image, from their actions on it (oldest first)."""
    latest = next((action for action in reversed(actions) if action in _REACTIONS), None)
    return ImageReactionOut(
        liked=latest is ActionType.LIKE, kept=is_kept(actions), downloaded=ActionType.DOWNLOAD in actions,
        shared=ActionType.SHARE in actions, discarded=latest is ActionType.DISCARD,
    )


def gallery_items(services: Services, user_id: UserId, records: Iterable[GenerationRecord]) -> list[GalleryItem]:
    """Records as the page shows them: the API view plus the user's reaction to each image."""
    records = list(records)
    actions = image_actions(services.storage.sessions, user_id, (i.id for r in records for i in r.images))
    items = []
    for record in records:
        reactions = {str(image.id): reaction(actions[image.id]) for image in record.images}
        items.append(GalleryItem(**view(services, record).model_dump(), reactions=reactions))
    return items


@router.get("/gallery", summary="The user's generations, newest first, with filters")
def gallery(
    user: CurrentUser,
    services: ServicesDep,
    show: Annotated[GalleryFilter, Query(alias="filter", description="all, kept or liked.")] = GalleryFilter.ALL,
    style: Annotated[str | None, Query(max_length=MAX_NAME, description="Only this style preset.")] = None,
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 24,
) -> GalleryOut:
    """Like ``/history``, plus each image's reactions (liked, kept, ...) and filters for infinite scrolling."""
    page = gallery_page(services.storage.sessions, user.id, cursor=cursor or None, limit=limit, show=show,
                        style=style or None)
    return GalleryOut(items=gallery_items(services, user.id, page.items), next_cursor=page.next_cursor)


@router.get("/generations/{generation_id}/record", summary="A generation with the user's actions on it")
def record(
    generation_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)], user: CurrentUser, services: ServicesDep
) -> RecordOut:
    """Everything the full record view shows: request, final prompt, versions, images, reactions, and every action
    (oldest first) with the generations it started."""
    found = services.storage.generations.get(user.id, GenerationId(generation_id))
    actions = services.storage.actions.list_for_generation(user.id, found.id)
    return RecordOut(
        generation=gallery_items(services, user.id, [found])[0],
        actions=[action_out(action, created=True) for action in actions],
        children=[a.child_generation_id for a in actions if a.child_generation_id is not None],
    )
