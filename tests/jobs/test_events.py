"""Job events: typed, round-trip through JSON (Redis), and cross from worker threads to the asyncio loop."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageloop.jobs import (
    EventHub,
    JobCancelled,
    JobEvent,
    JobFailed,
    JobProgress,
    JobRequeued,
    JobStarted,
    JobSucceeded,
    event_from_dict,
)
from imageloop.storage import GenerationId, JobStatus
from tests.server.kit import HANG_GUARD_SECONDS

ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32).map(GenerationId)
events = st.one_of(
    st.builds(JobStarted, ids, batch_size=st.integers(1, 64), attempt=st.integers(1, 5)),
    st.builds(JobProgress, ids, step=st.integers(0, 1000), total=st.integers(0, 1000)),
    st.builds(JobSucceeded, ids, image_ids=st.lists(st.text(max_size=8), max_size=4),
              latency_seconds=st.floats(0, 1e6)),
    st.builds(JobFailed, ids, error=st.text(max_size=50)),
    st.builds(JobCancelled, ids),
    st.builds(JobRequeued, ids, reason=st.sampled_from(["released", "lease expired"])),
)


@given(events)
def test_events_round_trip_through_json(event: JobEvent) -> None:
    assert event_from_dict(json.loads(event.to_json())) == event


def test_terminal_events_carry_their_status() -> None:
    gid = GenerationId("g")
    assert [e.status for e in (JobSucceeded(gid), JobFailed(gid), JobCancelled(gid))] == [
        JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED]
    assert not JobProgress(gid).is_terminal and JobStarted(gid).status is JobStatus.RUNNING
    assert JobRequeued(gid).status is JobStatus.QUEUED and not JobRequeued(gid).is_terminal
    assert JobRequeued(gid, reason="released").to_dict() == {"type": "queued", "generation_id": "g",
                                                             "reason": "released"}


def test_malformed_events_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown job event"):
        event_from_dict({"type": "exploded", "generation_id": "g"})
    with pytest.raises(ValueError, match="malformed"):
        event_from_dict({"type": "progress", "generation_id": "g", "color": "red"})


def test_events_from_a_worker_thread_reach_subscribers_on_the_loop() -> None:
    async def scenario() -> list[JobEvent]:
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        loop_thread = threading.get_ident()
        seen_on: list[int] = []
        hub.add_listener(lambda _event: seen_on.append(threading.get_ident()))
        async with hub.subscribe(GenerationId("mine")) as queue:
            def work() -> None:
                hub.publish(JobProgress(GenerationId("other"), step=1, total=2))
                for step in (1, 2):
                    hub.publish(JobProgress(GenerationId("mine"), step=step, total=2))
                hub.publish(JobSucceeded(GenerationId("mine")))

            worker = threading.Thread(target=work)
            worker.start()
            received = [await asyncio.wait_for(queue.get(), timeout=HANG_GUARD_SECONDS) for _ in range(3)]
            worker.join()
        assert set(seen_on) == {loop_thread}  # delivered on the loop, never on the worker thread
        return received

    received = asyncio.run(scenario())
    assert [type(event) for event in received] == [JobProgress, JobProgress, JobSucceeded]
    assert [getattr(event, "step", None) for event in received] == [1, 2, None]
