"""Credits on SQLite and PostgreSQL: debits with the generation, refunds exactly once, lazy refills, the queue limit,
grants, and no double spend under parallel requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from imageloop.config import CreditsSettings, Settings
from imageloop.errors import InvalidRequestError, OutOfCreditsError, QuotaError, StorageError
from imageloop.storage import (
    Allowance,
    Charge,
    FinishedGeneration,
    JobStatus,
    LedgerKind,
    LocalBlobStore,
    NewGeneration,
    NewImage,
    Storage,
    UserId,
    WorkerId,
    image_blob_key,
)
from imageloop.storage.credits import refund_generation
from imageloop.storage.db import write_session
from tests.storage.conftest import FakeClock

W1 = WorkerId("w1")
DAY = Allowance(tier="free", credits=100, period=timedelta(days=1))


def _user(storage: Storage, name: str = "ada", credits: int = 0) -> UserId:
    user, _ = storage.users.create_user(name)
    if credits:
        storage.credits.grant(user.id, credits)
    return user.id


def _charged(cost: int, *, n: int = 1, allowance: Allowance | None = None, max_active: int = 0) -> NewGeneration:
    return NewGeneration(intent="a fox", params={"num_images": n},
                         charge=Charge(cost=cost, allowance=allowance, max_active_jobs=max_active))


def _balance(storage: Storage, user_id: UserId) -> int:
    return storage.users.get(user_id).credits


def test_a_generation_is_debited_with_its_insert_and_the_ledger_says_so(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(4))
    assert _balance(storage, ada) == 6
    entries = storage.credits.generation_entries(record.id)
    assert [(e.kind, e.amount, e.balance_after) for e in entries] == [(LedgerKind.DEBIT, -4, 6)]
    history = storage.credits.history(ada)
    assert [e.kind for e in history] == [LedgerKind.DEBIT, LedgerKind.GRANT]  # newest first


def test_out_of_credits_stores_nothing_and_says_when_the_refill_comes(storage: Storage, clock: FakeClock) -> None:
    ada = _user(storage)
    storage.generations.create(ada, _charged(60, allowance=DAY))  # the first use refills to 100
    assert _balance(storage, ada) == 40
    with pytest.raises(OutOfCreditsError) as info:
        storage.generations.create(ada, _charged(60, allowance=DAY))
    assert info.value.http_status == 402
    assert "costs 60 credits and the balance is 40" in info.value.message
    assert info.value.retry_after is not None and 86_000 < info.value.retry_after <= 86_400
    assert storage.generations.queue_depth() == 1 and _balance(storage, ada) == 40
    # A refill smaller than the cost will never cover it: no Retry-After then.
    with pytest.raises(OutOfCreditsError) as info:
        storage.generations.create(ada, _charged(500, allowance=DAY))
    assert info.value.retry_after is None and "refills to 100 only" in info.value.message
    clock.advance(86_400)
    storage.generations.create(ada, _charged(60, allowance=DAY))
    assert _balance(storage, ada) == 40  # topped up to 100, then 60 spent


def test_refill_tops_up_once_a_period_and_keeps_granted_credits(storage: Storage, clock: FakeClock) -> None:
    ada = _user(storage)
    assert storage.credits.balance(ada, DAY).credits == 100
    assert storage.credits.balance(ada, DAY).credits == 100  # not due again
    storage.credits.grant(ada, 50)
    clock.advance(86_401)
    balance = storage.credits.balance(ada, DAY)
    assert balance.credits == 150  # above the allowance: nothing to top up
    assert balance.next_refill_at is not None and balance.next_refill_at - clock.now < timedelta(days=1, seconds=1)
    kinds = [e.kind for e in storage.credits.history(ada)]
    assert kinds == [LedgerKind.GRANT, LedgerKind.REFILL]


def test_failed_cancelled_and_withheld_work_is_refunded_exactly_once(storage: Storage, clock: FakeClock) -> None:
    ada = _user(storage, credits=100)
    failed = storage.generations.create(ada, _charged(10))
    cancelled = storage.generations.create(ada, _charged(10))
    withheld = storage.generations.create(ada, _charged(12, n=4))
    assert _balance(storage, ada) == 68
    storage.generations.request_cancel(ada, cancelled.id)  # queued: cancelled at once
    storage.generations.request_cancel(ada, cancelled.id)
    claimed = storage.generations.claim(W1, limit=1)
    assert [r.id for r in claimed] == [failed.id]
    storage.generations.mark_failed(failed.id, "boom")
    storage.generations.mark_failed(failed.id, "boom again")  # a retried finish changes nothing
    assert storage.generations.claim(W1, limit=1)[0].id == withheld.id
    images = [NewImage(0, 1, image_blob_key(withheld.id, 0), 64, 64, "a" * 64)]  # 1 of 4 delivered
    storage.generations.mark_succeeded(withheld.id, FinishedGeneration(images=images))
    storage.generations.mark_succeeded(withheld.id, FinishedGeneration(images=images))
    assert _balance(storage, ada) == 68 + 10 + 10 + 9
    for record, refund in ((failed, 10), (cancelled, 10), (withheld, 9)):
        kinds = [(e.kind, e.amount) for e in storage.credits.generation_entries(record.id)]
        assert kinds == [(LedgerKind.DEBIT, -(12 if record is withheld else 10)), (LedgerKind.REFUND, refund)]
    # A second refund, however it comes, pays nothing: found by the check, or refused by the unique constraint.
    with write_session(storage.sessions) as session:
        assert refund_generation(session, failed.id, reason="again", now=clock()) == 0
    assert _balance(storage, ada) == 97


def test_the_ledger_refuses_a_second_refund_row(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(5))
    storage.generations.mark_failed(record.id, "boom")
    with pytest.raises(StorageError), write_session(storage.sessions) as session:
        session.execute(sa.text(
            "INSERT INTO credit_ledger (id, user_id, kind, amount, balance_after, generation_id, reason, created_at) "
            "SELECT 'x', user_id, 'refund', 5, 15, generation_id, 'again', created_at FROM credit_ledger "
            "WHERE kind = 'refund'"
        ))
    assert _balance(storage, ada) == 10


def test_work_of_a_lost_worker_is_refunded_once_after_the_restart(storage: Storage, clock: FakeClock) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(10))
    for _ in range(3):  # the worker is killed three times; each restart finds the job stale and re-queues it
        assert [r.id for r in storage.generations.claim(W1)] == [record.id]
        clock.advance(31)
        storage.generations.requeue_stale(max_attempts=3)
    assert storage.generations.get(ada, record.id).status is JobStatus.FAILED
    assert _balance(storage, ada) == 10
    storage.generations.requeue_stale(max_attempts=3)
    storage.generations.mark_failed(record.id, "the killed worker's late answer")
    assert _balance(storage, ada) == 10
    assert [e.kind for e in storage.credits.generation_entries(record.id)] == [LedgerKind.DEBIT, LedgerKind.REFUND]


def test_a_succeeded_generation_is_not_refunded(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(3, n=1))
    storage.generations.claim(W1)
    storage.generations.mark_succeeded(record.id, FinishedGeneration(
        images=[NewImage(0, 1, image_blob_key(record.id, 0), 64, 64, "a" * 64)]))
    storage.generations.request_cancel(ada, record.id)
    storage.generations.mark_failed(record.id, "late")
    assert _balance(storage, ada) == 7


def test_the_queue_limit_counts_queued_and_running_jobs(storage: Storage) -> None:
    ada = _user(storage, credits=100)
    first = storage.generations.create(ada, _charged(1, max_active=2))
    storage.generations.create(ada, _charged(1, max_active=2))
    with pytest.raises(QuotaError) as info:
        storage.generations.create(ada, _charged(1, max_active=2))
    assert info.value.http_status == 429 and "queued_jobs" in info.value.message and info.value.retry_after
    assert _balance(storage, ada) == 98
    storage.generations.request_cancel(ada, first.id)
    storage.generations.create(ada, _charged(1, max_active=2))


def test_a_batch_is_all_or_nothing(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    with pytest.raises(OutOfCreditsError):
        storage.generations.create_many(ada, [_charged(6), _charged(6)])
    assert _balance(storage, ada) == 10 and storage.generations.queue_depth() == 0
    assert [e.kind for e in storage.credits.history(ada)] == [LedgerKind.GRANT]


def test_grants_and_takings(storage: Storage) -> None:
    ada = _user(storage, credits=5)
    entry = storage.credits.grant(ada, -5, reason="refund by card issuer")
    assert (entry.kind, entry.amount, entry.balance_after, entry.reason) == (LedgerKind.GRANT, -5, 0,
                                                                             "refund by card issuer")
    with pytest.raises(InvalidRequestError):
        storage.credits.grant(ada, -1)
    with pytest.raises(InvalidRequestError):
        storage.credits.grant(ada, 0)
    storage.credits.set_tier(ada, "pro")
    assert storage.users.get(ada).tier == "pro"


def test_parallel_requests_never_spend_the_same_credits(storage: Storage) -> None:
    ada = _user(storage, credits=50)
    threads, start = 12, threading.Barrier(12)
    outcomes: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        start.wait()
        try:
            storage.generations.create(ada, _charged(10))
            outcome = "ok"
        except OutOfCreditsError:
            outcome = "402"
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(outcomes) == ["402"] * 7 + ["ok"] * 5
    assert _balance(storage, ada) == 0
    debits = [e for e in storage.credits.history(ada, limit=50) if e.kind is LedgerKind.DEBIT]
    assert len(debits) == 5 and sorted(e.balance_after for e in debits) == [0, 10, 20, 30, 40]
    assert storage.generations.queue_depth() == 5


def test_parallel_refunds_pay_once(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(10))
    storage.generations.claim(W1)
    start = threading.Barrier(6)

    def fail() -> None:
        start.wait()
        storage.generations.mark_failed(record.id, "boom")

    workers = [threading.Thread(target=fail) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert _balance(storage, ada) == 10


@pytest.fixture
def tiered(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Storage]:
    """Storage with credits on: the default tiers (free: 1 job running at once, priority 0; pro: 2, priority 10)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, credits=CreditsSettings(enabled=True))
    store = Storage.open(settings, blobs=LocalBlobStore(tmp_path / "blobs"), clock=clock)
    yield store
    store.close()


def test_a_higher_tier_is_claimed_first_and_told_its_place(tiered: Storage) -> None:
    ada, bob = _user(tiered, "ada"), _user(tiered, "bob")
    tiered.credits.set_tier(bob, "pro")
    older = [tiered.generations.create(ada, NewGeneration(intent=f"a {i}")) for i in range(2)]
    pro = tiered.generations.create(bob, NewGeneration(intent="b"))
    assert tiered.generations.queue_position(pro.id) == 1
    assert tiered.generations.queue_position(older[0].id) == 2
    assert [r.id for r in tiered.generations.claim(W1)] == [pro.id]
    assert [r.id for r in tiered.generations.claim(WorkerId("w2"))] == [older[0].id]


def test_a_user_runs_no_more_jobs_at_once_than_the_tier_allows(tiered: Storage) -> None:
    ada, bob = _user(tiered, "ada"), _user(tiered, "bob")
    first, second = (tiered.generations.create(ada, NewGeneration(intent=f"a {i}", batch_key="k")) for i in range(2))
    assert [r.id for r in tiered.generations.claim(W1, limit=4)] == [first.id]  # not batched past the limit
    assert tiered.generations.claim(WorkerId("w2")) == []  # ada's next waits while one runs
    other = tiered.generations.create(bob, NewGeneration(intent="b", batch_key="k"))
    assert [r.id for r in tiered.generations.claim(WorkerId("w2"))] == [other.id]  # others are not held up
    tiered.generations.mark_failed(first.id, "done")
    assert [r.id for r in tiered.generations.claim(W1)] == [second.id]


def test_the_ledger_outlives_the_users_deleted_data(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    record = storage.generations.create(ada, _charged(4))
    storage.generations.mark_failed(record.id, "boom")
    storage.users.delete_user_data(ada, storage.blobs)
    history = storage.credits.history(ada)
    assert [(e.kind, e.generation_id) for e in history] == [
        (LedgerKind.REFUND, None), (LedgerKind.DEBIT, None), (LedgerKind.GRANT, None)]
    assert _balance(storage, ada) == 10


def test_a_running_job_cancelled_or_released_after_a_cancel_is_refunded_once(storage: Storage) -> None:
    ada = _user(storage, credits=10)
    stopped = storage.generations.create(ada, _charged(3))
    released = storage.generations.create(ada, _charged(4))
    assert [r.id for r in storage.generations.claim(W1)] == [stopped.id]
    assert [r.id for r in storage.generations.claim(WorkerId("w2"))] == [released.id]
    for record in (stopped, released):
        storage.generations.request_cancel(ada, record.id)  # running: the worker sees it at its next heartbeat
    assert _balance(storage, ada) == 3
    storage.generations.mark_cancelled(stopped.id)
    storage.generations.release(WorkerId("w2"))  # a graceful stop gives back a job whose cancel was asked
    storage.generations.mark_cancelled(released.id)
    assert _balance(storage, ada) == 10
    assert storage.generations.get(ada, released.id).status is JobStatus.CANCELLED


def test_parallel_claims_never_run_more_of_a_users_jobs_than_the_tier_allows(tiered: Storage) -> None:
    ada = _user(tiered, "ada")
    for i in range(8):
        tiered.generations.create(ada, NewGeneration(intent=f"a {i}"))
    start, claimed, lock = threading.Barrier(8), [], threading.Lock()

    def claim(worker: int) -> None:
        start.wait()
        records = tiered.generations.claim(WorkerId(f"w{worker}"))
        with lock:
            claimed.extend(records)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == 1  # the free tier runs one job at a time
