"""Request body limit: a body larger than ``server.max_body_bytes`` is refused with 413 before it is read whole."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Refuses bodies over ``max_bytes``: at once from ``Content-Length``, or while a chunked body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Other limits for some paths (by prefix), e.g. image uploads.
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        limit = next((n for prefix, n in self.path_limits.items() if path.startswith(prefix)), self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(send, limit)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, self._message(limit))
            return message

        await self.app(scope, limited, send)

    def _message(self, limit: int) -> str:
        return f"body: larger than {limit} bytes"

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps({"error": "PayloadTooLarge", "message": self._message(limit), "field": "body"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
