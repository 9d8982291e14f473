"""Signed, expiring links to image files, for clients that cannot send an Authorization header
(the OpenAI API's ``response_format="url"``, ``<img src>``)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from urllib.parse import quote

from starlette.requests import Request

from imageloop.config import Settings
from imageloop.errors import PermissionDeniedError

LINK_SECONDS = 3600
_SECRET_FILE = "url-secret"


def load_secret(settings: Settings) -> bytes:
    """``server.url_secret``, or a random key kept in ``data_dir/url-secret`` (created on first use, mode 600)."""
    if settings.server.url_secret is not None:
        return settings.server.url_secret.get_secret_value().encode("utf-8")
    path = settings.data_dir / _SECRET_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def public_base_url(settings: Settings, request: Request) -> str:
    """The base of absolute links (share links, OpenAI ``url`` answers): ``server.public_url``; else the request's
    own base when its Host is one of ``server.trusted_hosts``; else this server's listen address. Never a Host
    header nobody configured, so a forged one cannot point a link at another site."""
    server = settings.server
    if server.public_url:
        return server.public_url.rstrip("/")
    if request.url.hostname in server.trusted_hosts:
        return str(request.base_url).rstrip("/")
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"http://{host}:{server.port}{request.scope.get('root_path', '')}".rstrip("/")


class ImageLinks:
    """Makes and checks links of the form ``/api/v1/files/<blob key>?expires=<unix time>&signature=<hmac>``."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, key: str, expires: int) -> str:
        return hmac.new(self._secret, f"{key}|{expires}".encode(), hashlib.sha256).hexdigest()

    def path(self, key: str, *, seconds: int = LINK_SECONDS) -> str:
        """The signed path (no host) for blob ``key``, valid ``seconds`` from now."""
        expires = int(time.time()) + seconds
        return f"/api/v1/files/{quote(key)}?expires={expires}&signature={self._signature(key, expires)}"

    def check(self, key: str, expires: int, signature: str) -> None:
        """PermissionDeniedError unless ``signature`` signs ``key`` until ``expires`` and that is in the future."""
        expected = self._signature(key, expires).encode("ascii")
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
            raise PermissionDeniedError("signature: this link is not valid")
        if expires < time.time():
            raise PermissionDeniedError("expires: this link has expired")
