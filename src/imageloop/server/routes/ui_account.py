"""Signing in from the web page (password → an API key for this browser) and managing one's API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from imageloop.errors import AuthError
from imageloop.server.deps import CurrentUser, ServicesDep
from imageloop.server.schemas import MAX_ID, CreditsOut, LedgerEntryOut, TierLimitsOut, ledger_entry_out
from imageloop.server.services import Services
from imageloop.server.ui_schemas import (
    AccountCreditsOut,
    ApiKeyOut,
    NewApiKeyOut,
    PasswordSignIn,
    SignedInOut,
    account_out,
    api_key_out,
)
from imageloop.storage import ApiKeyId, UserAccount

router = APIRouter(prefix="/api/v1", tags=["account"])


@router.post("/session", summary="Sign in with a user name and password", status_code=201)
async def sign_in(body: PasswordSignIn, request: Request, services: ServicesDep) -> SignedInOut:
    """Check the password set with ``imageloop users set-password`` and issue a new API key for this client
    (listed with the user's other keys; it expires after ``auth.session_key_ttl_hours``; signing out revokes it).
    401 with the same message, after the same work, for an unknown user and a wrong password. Repeated failures
    for a user name or from a client address answer 429 with Retry-After, doubling the wait each time."""
    throttle = services.sign_in_throttle
    address = request.client.host if request.client is not None else None
    throttle.check(body.name, address)
    try:
        # scrypt is deliberately slow: keep it off the event loop, and only a few at a time.
        async with throttle.hashing():
            user = await run_in_threadpool(services.storage.users.verify_password, body.name, body.password)
    except AuthError:
        throttle.failed(body.name, address)
        raise
    throttle.succeeded(body.name)
    info, key = await run_in_threadpool(services.storage.users.create_sign_in_key, user.id)
    return SignedInOut(api_key=key, key=api_key_out(info), account=account_out(user))


def credits_out(services: Services, user: UserAccount, *, history: int = 20) -> CreditsOut:
    """The user's balance (refilled first when due), tier, limits and newest ledger rows."""
    fair_use = services.fair_use
    tier_name, tier = fair_use.tier(user)
    balance = fair_use.balance(user)
    entries = services.storage.credits.history(user.id, limit=history)
    return CreditsOut(
        enabled=fair_use.credits.enabled, charged=fair_use.charged(user), tier=tier_name, balance=balance.credits,
        next_refill_at=balance.next_refill_at, limits=TierLimitsOut(**tier.model_dump()),
        history=[ledger_entry_out(entry) for entry in entries],
    )


@router.get("/account", summary="The signed-in account: role, credits, tier and recent credit history")
def account(user: CurrentUser, services: ServicesDep) -> AccountCreditsOut:
    """With ``credits``: the balance (a due refill is applied first), the tier and its limits, when the next refill
    comes, and the 20 newest ledger rows (debits, refunds, refills, grants)."""
    return AccountCreditsOut(**account_out(user).model_dump(), credits=credits_out(services, user))


@router.get("/account/ledger", summary="The account's credit history, newest first")
def ledger(
    user: CurrentUser, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[LedgerEntryOut]:
    return [ledger_entry_out(entry) for entry in services.storage.credits.history(user.id, limit=limit)]


@router.get("/users/me/api-keys", summary="The user's API keys (revoked ones too)")
def list_keys(user: CurrentUser, services: ServicesDep) -> list[ApiKeyOut]:
    """Newest first. Only a prefix of each key is shown: keys are stored hashed."""
    keys = services.storage.users.list_api_keys(user.id)
    return [api_key_out(info) for info in reversed(keys)]


@router.post("/users/me/api-keys", summary="Create an API key", status_code=201)
def create_key(user: CurrentUser, services: ServicesDep) -> NewApiKeyOut:
    """The new key is in the response once; it cannot be shown again. 409 naming the limit when the user already
    holds ``auth.max_api_keys_per_user`` live keys."""
    info, key = services.storage.users.create_api_key(user.id)
    return NewApiKeyOut(api_key=key, key=api_key_out(info))


@router.delete("/users/me/api-keys/{key_id}", summary="Revoke an API key")
def revoke_key(
    key_id: Annotated[str, Path(min_length=1, max_length=MAX_ID)], user: CurrentUser, services: ServicesDep
) -> ApiKeyOut:
    """Requests with a revoked key get 401 from then on (revoking the key in use signs this client out)."""
    return api_key_out(services.storage.users.revoke_api_key(user.id, ApiKeyId(key_id)))
