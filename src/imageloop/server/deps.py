"""Route dependencies as ``Annotated`` types: the wired services, the parts of them routes use, and the
authenticated user.

Repositories run their own transactions, so routes take the services (``ServicesDep``, or one of the services
built at start-up: ``RegistryDep``, ``RunsDep``, ``CycleLockDep``, ``TrainerDep``) rather than a raw database
session; ``CurrentUser`` is the owner of the ``Authorization: Bearer KEY`` API key.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from imageloop.errors import AuthError
from imageloop.server.services import Services
from imageloop.storage import UserAccount
from imageloop.storage.locks import TrainingLock
from imageloop.storage.runs import RunStore
from imageloop.training.registry import Registry
from imageloop.training.scheduler import TrainingWorker

_bearer = HTTPBearer(auto_error=False, description="An API key from `imageloop users create NAME`.")


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def get_registry(services: ServicesDep) -> Registry:
    return services.training.registry


def get_runs(services: ServicesDep) -> RunStore:
    return services.training.runs


def get_cycle_lock(services: ServicesDep) -> TrainingLock:
    return services.training.cycle_lock


def get_trainer(services: ServicesDep) -> TrainingWorker:
    return services.trainer


RegistryDep = Annotated[Registry, Depends(get_registry)]
RunsDep = Annotated[RunStore, Depends(get_runs)]
CycleLockDep = Annotated[TrainingLock, Depends(get_cycle_lock)]
TrainerDep = Annotated[TrainingWorker, Depends(get_trainer)]


def get_current_user(
    services: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> UserAccount:
    """The user owning the bearer API key; AuthError (401) when it is missing, unknown or revoked."""
    if credentials is None or not credentials.credentials:
        raise AuthError("missing API key: send the header 'Authorization: Bearer KEY'")
    return services.storage.users.authenticate(credentials.credentials)


CurrentUser = Annotated[UserAccount, Depends(get_current_user)]
