from __future__ import annotations

import threading

import pytest

from imageloop.config import JobsSettings
from imageloop.errors import InvalidRequestError, NotFoundError
from imageloop.storage import (
    Expansion,
    FinishedGeneration,
    GenerationId,
    HeartbeatResult,
    JobStatus,
    NewGeneration,
    NewImage,
    Storage,
    WorkerId,
    image_blob_key,
)
from tests.storage.conftest import FakeClock

W1, W2 = WorkerId("w1"), WorkerId("w2")


def _images(generation_id: str, n: int = 2) -> FinishedGeneration:
    return FinishedGeneration(
        images=[NewImage(i, 100 + i, image_blob_key(generation_id, i), 64, 64, "a" * 64) for i in range(n)],
        base_model_id="embedded", base_model_version="v1", timings={"total_s": 1.5},
    )


def test_create_and_get_is_scoped_to_the_user(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    record = storage.generations.create(
        ada.id, NewGeneration(intent="un chat roux", intent_language="fr", params={"steps": 4, "seed": 7})
    )
    assert record.status is JobStatus.QUEUED and record.chain_id == record.id and record.parent_id is None
    assert storage.generations.get(ada.id, record.id).params == {"steps": 4, "seed": 7}
    with pytest.raises(NotFoundError):
        storage.generations.get(bob.id, record.id)
    with pytest.raises(NotFoundError):
        storage.generations.create(bob.id, NewGeneration(intent="x", parent_id=record.id))


def test_invalid_requests_name_the_field(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    with pytest.raises(InvalidRequestError) as info:
        storage.generations.create(ada.id, NewGeneration())
    assert info.value.field == "intent"
    with pytest.raises(InvalidRequestError) as info:
        storage.generations.create(ada.id, NewGeneration(intent="x", negative_prompt="n" * 20_000))
    assert info.value.field == "negative_prompt"


def test_claim_runs_jobs_in_order_and_batches_by_key(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    a = storage.generations.create(ada.id, NewGeneration(intent="a", batch_key="512x512"))
    b = storage.generations.create(ada.id, NewGeneration(intent="b", batch_key="768x768"))
    c = storage.generations.create(ada.id, NewGeneration(intent="c", batch_key="512x512"))
    assert [storage.generations.queue_position(g.id) for g in (a, b, c)] == [1, 2, 3]
    claimed = storage.generations.claim(W1, limit=4)
    assert [g.id for g in claimed] == [a.id, c.id]
    assert all(g.status is JobStatus.RUNNING and g.worker_id == W1 and g.attempts == 1 for g in claimed)
    assert storage.generations.queue_position(b.id) == 1 and storage.generations.queue_depth() == 1
    assert [g.id for g in storage.generations.claim(W2, limit=4)] == [b.id]
    assert storage.generations.claim(W2) == []


def test_a_batch_is_claimed_in_the_order_it_was_submitted(storage: Storage) -> None:
    # The whole batch is stored in one transaction with one clock reading; the ids are random.
    ada, _ = storage.users.create_user("ada")
    created = storage.generations.create_many(ada.id, [NewGeneration(intent=f"job {i}") for i in range(12)])
    claimed = [job.id for _ in created for job in storage.generations.claim(W1)]
    assert claimed == [job.id for job in created]


def test_users_take_turns_so_one_users_batch_starves_nobody(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    flood = storage.generations.create_many(ada.id, [NewGeneration(intent=f"ada {i}") for i in range(6)])
    first = storage.generations.claim(W1)
    assert [job.id for job in first] == [flood[0].id]
    later = storage.generations.create_many(bob.id, [NewGeneration(intent=f"bob {i}") for i in range(2)])
    storage.generations.mark_succeeded(first[0].id, _images(first[0].id))
    claimed = [job.id for _ in range(7) for job in storage.generations.claim(W1)]
    # Bob's first job runs next, not after Ada's five others; then they alternate until Bob has no more.
    assert claimed == [later[0].id, flood[1].id, later[1].id, *(job.id for job in flood[2:])]


def test_concurrent_workers_never_claim_the_same_job(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    created = storage.generations.create_many(ada.id, [NewGeneration(intent=f"job {i}") for i in range(40)])
    claimed: list[GenerationId] = []
    lock = threading.Lock()

    def work(worker: str) -> None:
        while jobs := storage.generations.claim(WorkerId(worker)):
            with lock:
                claimed.extend(job.id for job in jobs)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(g.id for g in created)


def test_stale_running_job_is_requeued_and_finishes_exactly_once(storage: Storage, clock: FakeClock) -> None:
    ada, _ = storage.users.create_user("ada")
    job = storage.generations.create(ada.id, NewGeneration(intent="a fox"))
    storage.generations.claim(W1)
    first = storage.generations.record_expansion(job.id, Expansion("a red fox, 35mm", expander_version="e1"))
    assert storage.generations.heartbeat(job.id, W1, step=3, total=10) is HeartbeatResult.CONTINUE
    assert storage.generations.requeue_stale() == []  # lease still valid

    clock.advance(31)  # worker 1 died: no heartbeat within the 30 s lease
    assert storage.generations.requeue_stale() == [job.id]
    assert storage.generations.heartbeat(job.id, W1) is HeartbeatResult.LOST
    [again] = storage.generations.claim(W2)
    assert again.attempts == 2 and again.final_prompt == "a red fox, 35mm"
    # A re-run keeps the first expansion.
    assert storage.generations.record_expansion(job.id, Expansion("something else")).final_prompt == (
        first.final_prompt
    )

    done = storage.generations.mark_succeeded(job.id, _images(job.id))
    retried = storage.generations.mark_succeeded(job.id, _images(job.id, n=3))  # a late or retried finish
    assert done.status is JobStatus.SUCCEEDED and [i.index for i in done.images] == [0, 1]
    assert [i.id for i in retried.images] == [i.id for i in done.images]
    assert done.base_model_version == "v1" and done.timings == {"total_s": 1.5}


def test_partial_image_insert_is_completed_by_the_retry(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    job = storage.generations.create(ada.id, NewGeneration(intent="a fox"))
    storage.generations.claim(W1)
    # Simulate a crash after the first image row was written but before the job was marked finished.
    from imageloop.storage._convert import insert_ignoring_conflicts
    from imageloop.storage.db import write_session
    from imageloop.storage.models import Image

    with write_session(storage.sessions) as session:
        insert_ignoring_conflicts(session, Image.__table__, [  # type: ignore[arg-type]
            {"id": "pre", "generation_id": job.id, "user_id": ada.id, "index": 0, "seed": 1, "blob_key": "k",
             "width": 8, "height": 8, "sha256": "0", "content_type": "image/png", "created_at": job.created_at}
        ], ["generation_id", "index"])
    done = storage.generations.mark_succeeded(job.id, _images(job.id))
    assert [(i.index, i.id == "pre") for i in done.images] == [(0, True), (1, False)]


def test_job_failing_repeatedly_gives_up(storage: Storage, clock: FakeClock) -> None:
    ada, _ = storage.users.create_user("ada")
    job = storage.generations.create(ada.id, NewGeneration(intent="a fox"))
    for _ in range(3):
        assert storage.generations.claim(W1)
        clock.advance(31)
        storage.generations.requeue_stale(max_attempts=3)
    final = storage.generations.get(ada.id, job.id)
    assert final.status is JobStatus.FAILED and "3 times" in (final.error or "")


def test_release_requeues_the_workers_running_jobs_at_once(storage: Storage, clock: FakeClock) -> None:
    ada, _ = storage.users.create_user("ada")
    jobs = []
    for word in ("fox", "owl", "cat"):
        jobs.append(storage.generations.create(ada.id, NewGeneration(intent=f"a {word}")))
        clock.advance(1)  # a clear queue order
    mine, cancelled, other = jobs
    storage.generations.claim(W1, limit=1)
    storage.generations.claim(W1, limit=1)
    storage.generations.request_cancel(ada.id, cancelled.id)
    storage.generations.claim(W2, limit=1)
    storage.generations.heartbeat(mine.id, W1, step=4, total=10)

    assert storage.generations.release(W1) == [mine.id]  # the leases are still valid
    released = storage.generations.get_for_worker(mine.id)
    assert released.status is JobStatus.QUEUED and released.attempts == 0 and released.progress_step == 0
    assert storage.generations.get_for_worker(cancelled.id).status is JobStatus.CANCELLED
    assert storage.generations.get_for_worker(other.id).status is JobStatus.RUNNING  # another worker's
    assert storage.generations.heartbeat(mine.id, W1) is HeartbeatResult.LOST
    assert storage.generations.release(W1) == []
    for _ in range(5):  # restarts never use up the attempts
        [again] = storage.generations.claim(W2)
        assert again.id == mine.id and again.attempts == 1
        storage.generations.release(W2)


def test_cancel_queued_and_running(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    queued = storage.generations.create(ada.id, NewGeneration(intent="a"))
    assert storage.generations.request_cancel(ada.id, queued.id).status is JobStatus.CANCELLED
    running = storage.generations.create(ada.id, NewGeneration(intent="b"))
    storage.generations.claim(W1)
    with pytest.raises(NotFoundError):
        storage.generations.request_cancel(bob.id, running.id)
    assert storage.generations.request_cancel(ada.id, running.id).cancel_requested
    assert storage.generations.heartbeat(running.id, W1) is HeartbeatResult.CANCEL
    assert storage.generations.mark_cancelled(running.id).status is JobStatus.CANCELLED
    # Finishing a cancelled job changes nothing.
    assert storage.generations.mark_succeeded(running.id, _images(running.id)).images == ()
    assert storage.generations.mark_failed(running.id, "boom").status is JobStatus.CANCELLED


def test_a_run_past_the_time_limit_is_told_to_stop(storage: Storage, clock: FakeClock) -> None:
    ada, _ = storage.users.create_user("ada")
    job = storage.generations.create(ada.id, NewGeneration(intent="a"))
    storage.generations.claim(W1)
    limit = JobsSettings().max_job_seconds  # the storage fixture's settings keep the default
    clock.advance(limit - 1)
    assert storage.generations.heartbeat(job.id, W1) is HeartbeatResult.CONTINUE
    clock.advance(2)
    assert storage.generations.heartbeat(job.id, W1) is HeartbeatResult.TIMED_OUT
    failed = storage.generations.mark_failed(job.id, "stopped: the time limit")
    assert failed.status is JobStatus.FAILED


def test_an_administrator_cancels_any_users_job(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    queued = storage.generations.create(ada.id, NewGeneration(intent="a"))
    assert storage.generations.request_cancel(None, queued.id).status is JobStatus.CANCELLED
    running = storage.generations.create(ada.id, NewGeneration(intent="b"))
    storage.generations.claim(W1)
    assert storage.generations.request_cancel(None, running.id).cancel_requested


def test_history_pages_newest_first_with_cursor(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    mine = [storage.generations.create(ada.id, NewGeneration(intent=f"p{i}")).id for i in range(5)]
    storage.generations.create(bob.id, NewGeneration(intent="not yours"))
    seen: list[str] = []
    cursor = None
    while True:
        page = storage.generations.history(ada.id, cursor=cursor, limit=2)
        seen += [g.id for g in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == mine[::-1]
    with pytest.raises(InvalidRequestError) as info:
        storage.generations.history(ada.id, cursor="garbage!")
    assert info.value.field == "cursor"
    with pytest.raises(InvalidRequestError):
        storage.generations.history(ada.id, limit=0)


def test_get_image_is_scoped_to_the_user(storage: Storage) -> None:
    ada, _ = storage.users.create_user("ada")
    bob, _ = storage.users.create_user("bob")
    job = storage.generations.create(ada.id, NewGeneration(intent="a"))
    storage.generations.claim(W1)
    image = storage.generations.mark_succeeded(job.id, _images(job.id, 1)).images[0]
    assert storage.generations.get_image(ada.id, image.id) == image
    with pytest.raises(NotFoundError):
        storage.generations.get_image(bob.id, image.id)
