"""A local S3-compatible server (moto's server mode) on loopback, for the blob store and scaled-mode tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from imageloop.server.background import free_port


@contextmanager
def moto_s3_server() -> Iterator[str]:
    """Run moto's S3 server on a free loopback port and yield its endpoint URL; stopped afterwards."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
