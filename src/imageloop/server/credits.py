"""Credits, tiers and fair use: what a generation costs, what the user's tier allows, and the charge a submitted
generation carries into storage (which debits it atomically with the insert; see :mod:`imageloop.storage.credits`).

The cost model, in credits per image (``credits.*`` settings)::

    work     = (width * height) * steps            (+ the hires-fix pass: upscaled pixels * hires steps)
    per_image = max(1, ceil(work / (reference_pixels * reference_steps))) * credits_per_image
    cost     = n * per_image

A size or step count left to the model's defaults counts as the reference (512x512, 30 steps), so an ordinary image
costs ``credits_per_image`` and a 1024x1024 image at 30 steps four times that; smaller or shorter ones cost the same
as the reference. Failed, cancelled and withheld work is refunded.

With ``credits.enabled`` off nothing is charged and only the engine limits apply; quotes still give the cost.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from imageloop.config import CreditsSettings, Settings, TierSettings
from imageloop.errors import InvalidRequestError, QuotaError
from imageloop.storage import Allowance, Charge, CreditBalance, NewGeneration, Storage, UserAccount

RATE_WINDOW_SECONDS = 60.0
# What a route that queues generations may answer with credits on (for the OpenAPI docs).
CHARGED_RESPONSES: dict[int | str, dict[str, Any]] = {
    402: {"description": "OutOfCreditsError: the balance does not cover the cost; Retry-After until the refill."},
    429: {"description": "QuotaError: over the tier's requests per minute or queued jobs; Retry-After."},
}


def image_cost(params: Mapping[str, Any], credits: CreditsSettings) -> int:
    """Credits one image with these generation ``params`` costs (see the module docstring)."""
    width, height = params.get("width"), params.get("height")
    pixels = width * height if isinstance(width, int) and isinstance(height, int) else credits.reference_pixels
    steps = params.get("steps") or credits.reference_steps
    work = pixels * steps
    scale = params.get("hires_scale")
    if isinstance(scale, int | float) and scale > 1:
        hires_steps = params.get("hires_steps") or steps
        work += int(pixels * scale * scale) * hires_steps
    units = max(1, math.ceil(work / (credits.reference_pixels * credits.reference_steps)))
    return units * credits.credits_per_image


def generation_cost(params: Mapping[str, Any], credits: CreditsSettings) -> int:
    """Credits a whole generation costs: its ``num_images`` times :func:`image_cost`."""
    return int(params.get("num_images") or 1) * image_cost(params, credits)


@dataclass(frozen=True, slots=True)
class Quote:
    """What a request would cost this user now, and whether their balance and tier allow it."""

    cost: int
    per_image: int
    n: int
    tier: str
    charged: bool  # False: credits are off or the tier is unlimited
    balance: int
    next_refill_at: datetime | None
    affordable: bool
    problem: str | None  # the tier limit the request is over, if any


class RequestRate:
    """Generation submits per user in a sliding window of 60 s, in this process (one server; with several behind a
    proxy each counts its own). ``clock`` is monotonic seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def hit(self, user_id: str, limit: int, tier: str) -> None:
        """Count one request; QuotaError (429, Retry-After) when the user made ``limit`` in the last minute."""
        if limit <= 0:
            return
        now = self._clock()
        with self._lock:
            recent = self._recent[user_id]
            while recent and recent[0] <= now - RATE_WINDOW_SECONDS:
                recent.popleft()
            if len(recent) >= limit:
                wait = max(math.ceil(recent[0] + RATE_WINDOW_SECONDS - now), 1)
                raise QuotaError(
                    f"requests_per_minute: the {tier} tier allows {limit} generation requests a minute; the next is "
                    f"allowed in {wait} s", retry_after=wait,
                )
            recent.append(now)


class FairUse:
    """The credits and tier policy of this server, built once at start-up: quotes, tier limits, the request rate,
    and the charge each submitted generation carries."""

    def __init__(self, settings: Settings, storage: Storage, *, rate: RequestRate | None = None) -> None:
        self.settings = settings
        self.credits = settings.credits
        self.storage = storage
        self.rate = rate or RequestRate()

    def tier(self, user: UserAccount) -> tuple[str, TierSettings]:
        """The user's tier and its settings (the default tier when theirs is no longer configured)."""
        return self.credits.tier(user.tier)

    def charged(self, user: UserAccount) -> bool:
        """Whether this user's generations cost credits and meet tier limits."""
        return self.credits.enabled and self.tier(user)[0] not in self.credits.unlimited_tiers

    def allowance(self, user: UserAccount) -> Allowance | None:
        name, tier = self.tier(user)
        if tier.refill_credits <= 0:
            return None
        return Allowance(tier=name, credits=tier.refill_credits, period=timedelta(hours=tier.refill_period_hours))

    def balance(self, user: UserAccount) -> CreditBalance:
        """The user's balance now, refilled first when a refill is due (only while credits are on)."""
        return self.storage.credits.balance(user.id, self.allowance(user) if self.credits.enabled else None)

    def limit_problem(
        self, user: UserAccount, params: Mapping[str, Any], *, prefix: str = ""
    ) -> InvalidRequestError | None:
        """The tier limit ``params`` are over, as the error a submit answers (422 naming the field, after
        ``prefix``); None when within the limits or the user is not charged."""
        if not self.charged(user):
            return None
        name, tier = self.tier(user)
        steps, n = params.get("steps"), int(params.get("num_images") or 1)
        width, height = params.get("width"), params.get("height")
        if tier.max_steps and isinstance(steps, int) and steps > tier.max_steps:
            return InvalidRequestError(f"{prefix}params.steps", f"{steps} is more than the {name} tier allows",
                                       value=steps, allowed=f"1..{tier.max_steps}")
        if tier.max_images and n > tier.max_images:
            return InvalidRequestError(f"{prefix}n", f"{n} is more than the {name} tier allows", value=n,
                                       allowed=f"1..{tier.max_images}")
        if tier.max_pixels and isinstance(width, int) and isinstance(height, int):
            scale = params.get("hires_scale")
            pixels = width * height * (scale * scale if isinstance(scale, int | float) and scale > 1 else 1)
            if pixels > tier.max_pixels:
                return InvalidRequestError(
                    f"{prefix}params.width", f"{width}x{height} is larger than the {name} tier allows", value=width,
                    allowed=f"width*height <= {tier.max_pixels}")
        return None

    def quote(self, user: UserAccount, params: Mapping[str, Any]) -> Quote:
        """What a generation with ``params`` would cost ``user`` now (nothing is charged or counted)."""
        name, _ = self.tier(user)
        charged = self.charged(user)
        cost = generation_cost(params, self.credits)
        balance = self.balance(user)
        problem = self.limit_problem(user, params)
        return Quote(
            cost=cost, per_image=image_cost(params, self.credits), n=int(params.get("num_images") or 1), tier=name,
            charged=charged, balance=balance.credits, next_refill_at=balance.next_refill_at,
            affordable=not charged or balance.credits >= cost, problem=problem.message if problem else None,
        )

    def count_request(self, user: UserAccount) -> None:
        """Count one generation submit (a generation, a batch, a reroll or edit) against the tier's request rate,
        before any work is done for it; QuotaError (429, Retry-After) over it."""
        if self.charged(user):
            name, tier = self.tier(user)
            self.rate.hit(user.id, tier.requests_per_minute, name)

    def admit(
        self, user: UserAccount, requests: Sequence[NewGeneration], *, fields: Sequence[str] = ()
    ) -> list[NewGeneration]:
        """``requests`` (one submit) with their charges, after checking each against the tier's limits
        (InvalidRequestError naming the field, after ``fields[i]`` for a batch item). Storage debits the charges
        when it stores them: OutOfCreditsError (402) when the balance is short, QuotaError (429) past the tier's
        queued jobs."""
        if not self.charged(user):
            return list(requests)
        _, tier = self.tier(user)
        for index, request in enumerate(requests):
            problem = self.limit_problem(user, request.params, prefix=fields[index] if index < len(fields) else "")
            if problem is not None:
                raise problem
        allowance = self.allowance(user)
        return [
            dataclasses.replace(request, charge=Charge(
                cost=generation_cost(request.params, self.credits), allowance=allowance,
                max_active_jobs=tier.max_queued_jobs,
            ))
            for request in requests
        ]
