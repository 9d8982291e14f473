"""Sign-in throttle: failed password sign-ins back off per user name and per client address.

Each key (a user name as typed, case-folded; a client address) may fail ``free`` times; each further failure starts
a wait of ``backoff_seconds * 2**(extra failures - 1)``, capped at ``max_backoff_seconds``. While a key waits, sign-in
answers 429 with ``Retry-After`` before any password is hashed, so a flood of guesses costs no scrypt work and cannot
enumerate names (an unknown name backs off exactly like a known one). A successful sign-in clears the user name's
failures, never the address's (one's own account must not reset the count of guesses against others). Failures older
than ``max_backoff_seconds`` are forgotten. The state lives in this server process (one per deployment's API server;
behind several processes each throttles on its own). At most ``max_concurrent_password_checks`` passwords are hashed
at once (:meth:`SignInThrottle.hashing`); further sign-ins wait on the event loop, holding no thread.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from imageloop.config import AuthSettings
from imageloop.errors import QuotaError

__all__ = ["SignInThrottle", "SignInThrottled"]

_MAX_TRACKED = 100_000  # keys kept at most; the stalest go first, so memory stays bounded under a flood


class SignInThrottled(QuotaError):
    """Too many failed sign-ins: wait ``retry_after`` seconds (the API answers 429 with Retry-After)."""

    def __init__(self, scope: str, wait_seconds: float) -> None:
        seconds = max(1, math.ceil(wait_seconds))
        super().__init__(f"sign-in: too many failed attempts for this {scope}; try again in {seconds} s",
                         retry_after=seconds)


@dataclass
class _Failures:
    count: int
    last: float
    blocked_until: float


class SignInThrottle:
    """Counts failed sign-ins per user name and client address (see the module docstring). Thread-safe."""

    def __init__(self, settings: AuthSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock = clock
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._lock = threading.Lock()
        self._hashing = asyncio.Semaphore(settings.max_concurrent_password_checks)

    @asynccontextmanager
    async def hashing(self) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrent_password_checks`` slots while a password is hashed."""
        async with self._hashing:
            yield

    def _keys(self, name: str, address: str | None) -> list[tuple[str, str]]:
        keys = [("account", name.casefold())]
        return [*keys, ("address", address)] if address else keys

    def check(self, name: str, address: str | None) -> None:
        """Raise SignInThrottled when the name or the address is still waiting."""
        now = self._clock()
        with self._lock:
            for key in self._keys(name, address):
                entry = self._failures.get(key)
                if entry is not None and entry.blocked_until > now:
                    raise SignInThrottled("user name" if key[0] == "account" else "client address",
                                          entry.blocked_until - now)

    def failed(self, name: str, address: str | None) -> None:
        """Count a failed sign-in against the name and the address."""
        now = self._clock()
        settings = self._settings
        with self._lock:
            for key in self._keys(name, address):
                entry = self._failures.get(key)
                if entry is None or now - entry.last > settings.max_backoff_seconds:
                    entry = _Failures(0, now, now)
                entry.count += 1
                entry.last = now
                free = (settings.free_failures_per_account if key[0] == "account"
                        else settings.free_failures_per_address)
                extra = entry.count - free
                if extra > 0:
                    wait = min(settings.backoff_seconds * 2.0 ** min(extra - 1, 60), settings.max_backoff_seconds)
                    entry.blocked_until = now + wait
                self._failures.pop(key, None)
                self._failures[key] = entry  # re-inserted: the dict's order is the order of last failure
            while len(self._failures) > _MAX_TRACKED:
                del self._failures[next(iter(self._failures))]

    def succeeded(self, name: str) -> None:
        """The name signed in: forget its failures (the address's stay)."""
        with self._lock:
            self._failures.pop(("account", name.casefold()), None)
