"""User actions on images: the flywheel's signal. Idempotent on the client event id."""

from __future__ import annotations

from fastapi import APIRouter, Response

from imageloop.errors import InvalidRequestError
from imageloop.flywheel.editdiff import edit_details
from imageloop.server.credits import CHARGED_RESPONSES
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.schemas import ActionCreate, ActionOut, action_out
from imageloop.server.services import Services
from imageloop.server.submit import child_generation, child_seed
from imageloop.storage import ActionType, EditDetails, GenerationId, GenerationRecord, ImageId, NewGeneration, UserId

router = APIRouter(prefix="/api/v1", tags=["actions"])


def _acted_on(services: Services, user_id: UserId, body: ActionCreate) -> GenerationRecord:
    """The generation the action is about (through its image when one is given)."""
    if body.image_id is not None:
        generation_id = services.storage.generations.get_image(user_id, ImageId(body.image_id)).generation_id
    elif body.generation_id is not None:
        generation_id = GenerationId(body.generation_id)
    else:
        raise InvalidRequestError("image_id", "give the image (or generation) the action is about")
    return services.storage.generations.get(user_id, generation_id)


def _child_and_edit(
    services: Services, user_id: UserId, body: ActionCreate
) -> tuple[NewGeneration | None, EditDetails | None]:
    """For ``regenerate``: the same request with a new seed. For ``edit``: the edited prompt, and the diff."""
    if body.type is ActionType.EDIT:
        if body.prompt is None:
            raise InvalidRequestError("prompt", "an edit action needs the edited prompt")
        services.prompts.check_prompt(body.prompt)  # the edited prompt is moderated like any explicit prompt
        parent = _acted_on(services, user_id, body)
        before = parent.final_prompt if parent.final_prompt is not None else parent.prompt or parent.intent or ""
        seed = child_seed(parent, services.settings, services.storage)
        child = child_generation(parent, services.settings, prompt=body.prompt, seed=seed)
        return child, edit_details(before, body.prompt)
    if body.prompt is not None:
        raise InvalidRequestError("prompt", f"only edit actions carry a prompt, not {body.type.value}")
    if body.type is ActionType.REGENERATE:
        parent = _acted_on(services, user_id, body)
        return child_generation(parent, services.settings,
                                seed=child_seed(parent, services.settings, services.storage)), None
    return None, None


@router.post(
    "/actions",
    status_code=201,
    responses={200: {"model": ActionOut, "description": "This client_event_id was recorded before; the first action."},
               **CHARGED_RESPONSES},
    summary="Record a user action",
)
def record_action(body: ActionCreate, user: CurrentUser, services: ServicesDep, response: Response) -> ActionOut:
    """``download | share | discard | like | unlike | regenerate | edit`` on an image. ``regenerate`` queues a
    child generation (same request, new seed); ``edit`` carries the edited ``prompt`` and queues a generation from
    it. 201 when recorded; 200 with the first action when this ``client_event_id`` was seen before."""
    child, edit = _child_and_edit(services, user.id, body)
    if child is not None:  # a reroll or an edit queues a generation: it counts and costs like any other
        services.fair_use.count_request(user)
        [child] = services.fair_use.admit(user, [child])
    recorded = services.storage.actions.record(
        user.id, body.type, body.client_event_id,
        image_id=ImageId(body.image_id) if body.image_id else None,
        generation_id=GenerationId(body.generation_id) if body.generation_id else None,
        edit=edit, child=child,
    )
    if recorded.created and recorded.action.child_generation_id is not None:
        services.queue.submitted([recorded.action.child_generation_id])
    if not recorded.created:
        response.status_code = 200
    return action_out(recorded.action, created=recorded.created)
