"""The caller's own account: who am I, opt out of training use, delete all my data."""

from __future__ import annotations

from fastapi import APIRouter

from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.schemas import DeletedDataOut, OptOutIn, UserOut, user_out
from imageloop.training.user_lora import delete_user_loras

router = APIRouter(prefix="/api/v1/users/me", tags=["users"])


@router.get("", summary="The authenticated user")
def me(user: CurrentUser) -> UserOut:
    return user_out(user)


@router.put("/training-opt-out", summary="Opt out of (or back into) training use")
def set_training_opt_out(body: OptOutIn, user: CurrentUser, services: ServicesDep) -> UserOut:
    """Opted-out users' records never appear in exported datasets."""
    return user_out(services.storage.users.set_training_opt_out(user.id, body.opt_out))


@router.delete("/data", summary="Delete all my generations, images and actions")
def delete_my_data(user: CurrentUser, services: ServicesDep) -> DeletedDataOut:
    """Removes the records (so no later export sees them) and the image files; the account and keys stay."""
    deleted = services.storage.users.delete_user_data(user.id, services.storage.blobs)
    # private LoRAs, their jobs and uploads
    delete_user_loras(services.settings, services.storage, user.id, stores=services.training)
    return DeletedDataOut(
        generations=deleted.generations, images=deleted.images, actions=deleted.actions, blobs=deleted.blobs
    )
