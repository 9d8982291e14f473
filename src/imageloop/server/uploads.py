"""Uploads: at most ``server.max_concurrent_uploads`` in progress per user, and every image's pixel count checked
from its header before anything decodes it (``server.max_image_pixels``)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from imageloop.engine.request import check_image_pixels
from imageloop.errors import QuotaError

# What a refused upload is told to wait: an upload's checks take about a second; the client then tries again.
UPLOAD_RETRY_AFTER_SECONDS = 2


class UploadSlots:
    """Per-user count of uploads in progress; :meth:`hold` admits one or raises QuotaError (429, Retry-After)."""

    def __init__(self, per_user: int) -> None:
        self._per_user = per_user
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, user_id: str) -> Iterator[None]:
        """One of ``user_id``'s upload slots for the ``with`` block; QuotaError when they are all taken."""
        with self._lock:
            if self._held[user_id] >= self._per_user:
                raise QuotaError(f"uploads: {self._per_user} already in progress for this user; wait for one to "
                                 "finish", retry_after=UPLOAD_RETRY_AFTER_SECONDS)
            self._held[user_id] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[user_id] -= 1
                if not self._held[user_id]:
                    del self._held[user_id]


def check_images_pixels(files: Sequence[tuple[str, bytes]], field: str, max_pixels: int) -> None:
    """Check each uploaded file's declared size from its header: InvalidRequestError naming ``field[i]``."""
    for index, (_, data) in enumerate(files):
        check_image_pixels(data, f"{field}[{index}]", max_pixels)
