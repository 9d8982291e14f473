"""Credits: each user's balance on ``users.credits`` and every change of it as a ``credit_ledger`` row.

A change of the balance and its ledger row are written in one transaction, and the balance is only ever changed
by one conditional UPDATE (``credits = credits - cost WHERE credits >= cost``) under the user's row lock, so two
parallel requests cannot spend the same credits, on SQLite or PostgreSQL. A generation is debited in the
transaction that stores it (:func:`charge_generation`); when it fails, is cancelled or has images withheld, it is
refunded in the transaction that records that end (:func:`refund_generation`). A generation has at most one debit
and one refund row (unique on ``(generation_id, kind)``), so a refund can never be paid twice, whatever retries or
restarts happen.

Refills are lazy: the tier's allowance is topped up when the balance is read or spent and the period has passed
since the last refill, recorded as a ``refill`` row. What a request costs and what each tier allows is policy
(``imageloop.server.credits``); this module is the mechanism.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from imageloop.errors import InvalidRequestError, NotFoundError, OutOfCreditsError, QuotaError
from imageloop.storage.db import SessionFactory, read_session, write_session
from imageloop.storage.models import CreditLedgerRow, Generation, User
from imageloop.storage.records import (
    Allowance,
    Charge,
    CreditBalance,
    GenerationId,
    JobStatus,
    LedgerEntry,
    LedgerKind,
    UserId,
    new_id,
    utcnow,
)

MAX_HISTORY = 200
MAX_REASON = 256
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


def _entry(row: CreditLedgerRow) -> LedgerEntry:
    return LedgerEntry(
        id=row.id, user_id=UserId(row.user_id), kind=row.kind, amount=row.amount, balance_after=row.balance_after,
        generation_id=GenerationId(row.generation_id) if row.generation_id else None, reason=row.reason,
        created_at=row.created_at,
    )


def _add_entry(
    session: Session, user_id: str, kind: LedgerKind, amount: int, balance_after: int, *, now: datetime,
    reason: str, generation_id: str | None = None,
) -> None:
    session.add(CreditLedgerRow(
        id=new_id(), user_id=user_id, kind=kind, amount=amount, balance_after=balance_after,
        generation_id=generation_id, reason=reason[:MAX_REASON], created_at=now,
    ))
    session.flush()


def _lock_user(session: Session, user_id: str) -> tuple[int, datetime | None]:
    """The user's balance and last refill, the row locked until the transaction ends (PostgreSQL; a SQLite write
    transaction holds the database's write lock already). NotFoundError for an unknown or deleted user."""
    row = session.execute(
        sa.select(User.credits, User.credits_refilled_at, User.deleted_at).where(User.id == user_id).with_for_update()
    ).first()
    if row is None or row.deleted_at is not None:
        raise NotFoundError(f"user {user_id!r} not found")
    return int(row.credits), row.credits_refilled_at


def _next_refill(refilled_at: datetime | None, allowance: Allowance | None) -> datetime | None:
    if allowance is None or allowance.credits <= 0 or refilled_at is None:
        return None
    return refilled_at + allowance.period


def _refill(session: Session, user_id: str, allowance: Allowance | None, *, now: datetime) -> CreditBalance:
    """Top the (locked) user's balance up to the allowance when a refill is due; the balance after."""
    balance, refilled_at = _lock_user(session, user_id)
    if allowance is None or allowance.credits <= 0:
        return CreditBalance(credits=balance, next_refill_at=None)
    due = refilled_at is None or refilled_at + allowance.period <= now
    if not due:
        return CreditBalance(credits=balance, next_refill_at=_next_refill(refilled_at, allowance))
    added = max(allowance.credits - balance, 0)
    new_balance = session.execute(
        sa.update(User).where(User.id == user_id)
        .values(credits=User.credits + added, credits_refilled_at=now)
        .returning(User.credits).execution_options(synchronize_session=False)
    ).scalar_one()
    if added:
        _add_entry(session, user_id, LedgerKind.REFILL, added, new_balance, now=now,
                   reason=f"{allowance.tier} tier refill to {allowance.credits}")
    return CreditBalance(credits=new_balance, next_refill_at=now + allowance.period)


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(math.ceil((when - now).total_seconds()), 1)


def admit_generation(session: Session, user_id: str, charge: Charge, *, now: datetime) -> None:
    """Before a generation is added: refill the user when due, and refuse (QuotaError, 429) when they already have
    ``charge.max_active_jobs`` jobs queued or running."""
    _refill(session, user_id, charge.allowance, now=now)
    if charge.max_active_jobs <= 0:
        return
    active = session.scalar(
        sa.select(sa.func.count()).select_from(Generation)
        .where(Generation.user_id == user_id, Generation.status.in_(_ACTIVE))
    ) or 0
    if active >= charge.max_active_jobs:
        tier = charge.allowance.tier if charge.allowance is not None else "this"
        raise QuotaError(
            f"queued_jobs: {active} of your jobs are queued or running, the most the {tier} tier allows is "
            f"{charge.max_active_jobs}; submit again when one finishes (or cancel one)", retry_after=5,
        )


def charge_generation(session: Session, user_id: str, generation_id: str, charge: Charge, *, now: datetime) -> None:
    """Debit ``charge.cost`` for the generation just added, in the caller's transaction (after
    :func:`admit_generation`); OutOfCreditsError (402) when the balance does not cover it, which rolls the whole
    transaction back (the generation is not stored)."""
    if charge.cost < 0:
        raise InvalidRequestError("cost", "must not be negative", value=charge.cost)
    balance = session.execute(
        sa.update(User).where(User.id == user_id, User.credits >= charge.cost)
        .values(credits=User.credits - charge.cost)
        .returning(User.credits).execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    if balance is None:
        have, refilled_at = _lock_user(session, user_id)
        raise _out_of_credits(charge, have, _next_refill(refilled_at, charge.allowance), now)
    _add_entry(session, user_id, LedgerKind.DEBIT, -charge.cost, balance, now=now, generation_id=generation_id,
               reason="generation")


def _out_of_credits(charge: Charge, have: int, next_refill: datetime | None, now: datetime) -> OutOfCreditsError:
    message = f"credits: this request costs {charge.cost} credits and the balance is {have}"
    allowance = charge.allowance
    if allowance is None or allowance.credits <= 0 or next_refill is None:
        return OutOfCreditsError(message + "; the tier has no refill")
    if allowance.credits < charge.cost:
        return OutOfCreditsError(
            message + f"; the {allowance.tier} tier refills to {allowance.credits} only, less than this request "
            "costs (ask for fewer or smaller images, fewer steps, or a higher tier)"
        )
    wait = _seconds_until(next_refill, now)
    return OutOfCreditsError(
        message + f"; the {allowance.tier} tier refills to {allowance.credits} at {next_refill:%Y-%m-%dT%H:%M:%SZ} "
        f"(in {wait} s)", retry_after=wait,
    )


def refund_generation(
    session: Session, generation_id: str, *, reason: str, now: datetime, missing: int | None = None,
    of: int | None = None,
) -> int:
    """Give back the generation's debit (or ``missing`` / ``of`` of it, rounded down, for images withheld) in the
    caller's transaction, which holds the generation's row lock. Once per generation: a second call, or a retry
    after a crash, finds the refund row and pays nothing. Returns the credits refunded."""
    debit = session.execute(
        sa.select(CreditLedgerRow.user_id, CreditLedgerRow.amount)
        .where(CreditLedgerRow.generation_id == generation_id, CreditLedgerRow.kind == LedgerKind.DEBIT)
    ).first()
    if debit is None or debit.amount >= 0:
        return 0  # never charged (credits off, an unlimited tier, or free)
    refunded = session.scalar(
        sa.select(CreditLedgerRow.id)
        .where(CreditLedgerRow.generation_id == generation_id, CreditLedgerRow.kind == LedgerKind.REFUND)
    )
    if refunded is not None:
        return 0
    charged = -int(debit.amount)
    amount = charged if missing is None or not of else (charged * missing) // of
    if amount <= 0:
        return 0
    balance = session.execute(
        sa.update(User).where(User.id == debit.user_id).values(credits=User.credits + amount)
        .returning(User.credits).execution_options(synchronize_session=False)
    ).scalar_one()
    # The unique (generation_id, kind) constraint makes a racing second refund fail its whole transaction.
    _add_entry(session, debit.user_id, LedgerKind.REFUND, amount, balance, now=now, generation_id=generation_id,
               reason=reason)
    return amount


class CreditRepository:
    """Balances, grants, tiers and the ledger's history. Every method runs in its own transaction."""

    def __init__(self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._sessions = sessions
        self._clock = clock

    def balance(self, user_id: UserId, allowance: Allowance | None) -> CreditBalance:
        """The user's balance, after the refill ``allowance`` makes due now (recorded as a ledger row)."""
        with write_session(self._sessions) as session:
            return _refill(session, user_id, allowance, now=self._clock())

    def grant(self, user_id: UserId, amount: int, *, reason: str = "granted by an operator") -> LedgerEntry:
        """Add ``amount`` credits (take them when negative) as one ledger row; InvalidRequestError when a taking
        would make the balance negative, or ``amount`` is 0."""
        if amount == 0:
            raise InvalidRequestError("amount", "must not be 0", value=amount)
        with write_session(self._sessions) as session:
            have, _ = _lock_user(session, user_id)
            balance = session.execute(
                sa.update(User).where(User.id == user_id, User.credits + amount >= 0)
                .values(credits=User.credits + amount)
                .returning(User.credits).execution_options(synchronize_session=False)
            ).scalar_one_or_none()
            if balance is None:
                raise InvalidRequestError("amount", f"would make the balance negative (it is {have})", value=amount)
            _add_entry(session, user_id, LedgerKind.GRANT, amount, balance, now=self._clock(), reason=reason)
            row = session.scalars(
                sa.select(CreditLedgerRow).where(CreditLedgerRow.user_id == user_id)
                .order_by(CreditLedgerRow.created_at.desc(), CreditLedgerRow.id.desc()).limit(1)
            ).one()
            return _entry(row)

    def set_tier(self, user_id: UserId, tier: str) -> None:
        """Put the user in ``tier`` (the caller checks it is one of the settings' tiers); the next refill is due at
        once, so a user moved up gets the new allowance now."""
        with write_session(self._sessions) as session:
            _lock_user(session, user_id)
            session.execute(
                sa.update(User).where(User.id == user_id).values(tier=tier, credits_refilled_at=None)
                .execution_options(synchronize_session=False)
            )

    def history(self, user_id: UserId, *, limit: int = 20) -> list[LedgerEntry]:
        """The user's newest ledger rows, newest first (``limit`` 1-200)."""
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidRequestError("limit", f"must be between 1 and {MAX_HISTORY}", value=limit)
        with read_session(self._sessions) as session:
            rows = session.scalars(
                sa.select(CreditLedgerRow).where(CreditLedgerRow.user_id == user_id)
                .order_by(CreditLedgerRow.created_at.desc(), CreditLedgerRow.id.desc()).limit(limit)
            )
            return [_entry(row) for row in rows]

    def generation_entries(self, generation_id: GenerationId) -> list[LedgerEntry]:
        """The ledger rows of one generation (its debit, and its refund if any), oldest first."""
        with read_session(self._sessions) as session:
            rows = session.scalars(
                sa.select(CreditLedgerRow).where(CreditLedgerRow.generation_id == generation_id)
                .order_by(CreditLedgerRow.created_at, CreditLedgerRow.id)
            )
            return [_entry(row) for row in rows]
