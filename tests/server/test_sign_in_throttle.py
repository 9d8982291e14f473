"""The sign-in throttle on its own, with a settable clock: free failures, then a wait that doubles, per user name
and per client address; a success clears the name's count, never the address's."""

from __future__ import annotations

import asyncio

import pytest

from imageloop.config import AuthSettings
from imageloop.server.signin import SignInThrottle, SignInThrottled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, **fields: float) -> SignInThrottle:
    settings = AuthSettings(**{"free_failures_per_account": 3, "free_failures_per_address": 5,
                               "backoff_seconds": 2.0, "max_backoff_seconds": 60.0, **fields})
    return SignInThrottle(settings, clock=clock)


def test_the_wait_after_the_free_failures_doubles_up_to_the_cap() -> None:
    clock = Clock()
    gate = throttle(clock)
    for _ in range(3):
        gate.check("ada", None)
        gate.failed("ada", None)
    gate.check("ada", None)  # three free failures
    waits = []
    for _ in range(7):
        gate.failed("ada", None)
        with pytest.raises(SignInThrottled) as error:
            gate.check("ADA", None)  # the name as typed, case-folded
        waits.append(error.value.retry_after)
        assert error.value.http_status == 429 and "user name" in error.value.message
        clock.now += error.value.retry_after
        gate.check("ada", None)  # the wait is over
    assert waits == [2, 4, 8, 16, 32, 60, 60]


def test_an_address_guessing_many_names_backs_off_and_a_success_does_not_reset_it() -> None:
    clock = Clock()
    gate = throttle(clock)
    for index in range(5):
        gate.failed(f"user{index}", "10.0.0.9")
    gate.succeeded("mine")
    gate.failed("user5", "10.0.0.9")
    with pytest.raises(SignInThrottled, match="client address"):
        gate.check("someone-new", "10.0.0.9")
    gate.check("someone-new", "10.0.0.10")  # another address is not held back


def test_a_success_clears_the_name_and_old_failures_are_forgotten() -> None:
    clock = Clock()
    gate = throttle(clock)
    for _ in range(3):
        gate.failed("ada", None)
    gate.succeeded("ada")
    gate.failed("ada", None)
    gate.check("ada", None)
    for _ in range(2):
        gate.failed("ada", None)
    clock.now += 61  # longer than the longest wait: the count starts again
    gate.failed("ada", None)
    gate.check("ada", None)


def test_only_so_many_passwords_are_hashed_at_once() -> None:
    gate = SignInThrottle(AuthSettings(max_concurrent_password_checks=1))
    inside: list[str] = []
    release = asyncio.Event()

    async def sign_in(name: str) -> None:
        async with gate.hashing():
            inside.append(name)
            await release.wait()

    async def scenario() -> None:
        first = asyncio.create_task(sign_in("first"))
        second = asyncio.create_task(sign_in("second"))
        for _ in range(10):  # let both tasks run as far as they can: one event loop, no threads
            await asyncio.sleep(0)
        assert inside == ["first"]
        release.set()
        await asyncio.gather(first, second)
        assert inside == ["first", "second"]

    asyncio.run(scenario())
