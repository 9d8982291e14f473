"""A bounded load test against a real ``imageloop serve`` on loopback, credits on.

60 clients at once, each a user of the free tier: cheap routes (health, account, history, a generation's status),
small generations and an action on each image; beside them one client floods sign-in with wrong passwords and one
submits the largest request its tier allows (cut by the server's job time limit). It ends with no 5xx, every
accepted job finished once, the ledger consistent (one debit per job, one refund per failed or cancelled job, each
balance the sum of its rows) and the p95 latency of cheap routes under CHEAP_P95_BOUND_SECONDS. The same server's
connection limits are checked: an idle keep-alive connection is closed, an oversized request head is refused.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageloop.config import Settings
from imageloop.storage import GenerationId, LedgerKind, Storage, UserId
from tests.integration.serve_process import serve_env, start_server
from tests.server.kit import HANG_GUARD_SECONDS, free_port, make_user, save_tiny_model
from tests.storage.dbs import backends, fresh_database

CLIENTS = 60
# Generous: the p95 measured was about 1 s on a 2-core machine busy with other work (load 5; see the README).
CHEAP_P95_BOUND_SECONDS = 3.0
MAX_JOB_SECONDS = 10  # the server's time limit: the largest allowed request runs into it
KEEP_ALIVE_SECONDS = 3  # the server closes idle connections after this; the clients drop theirs sooner
SMALL = {"steps": 2, "width": 64, "height": 64}
LARGEST = {"steps": 50, "width": 256, "height": 256}  # the free tier's 50 steps, 4 x the tiny model's 64 px, n=4
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Server:
    base: str
    port: int
    storage: Storage
    settings: Settings


@pytest.fixture(scope="module", params=backends())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server on SQLite, and on PostgreSQL where the tests have one."""
    folder = tmp_path_factory.mktemp(f"load-{request.param}")
    with fresh_database(request.param, folder) as database_url:
        yield from _serve(folder, database_url)


def _serve(folder: Path, database_url: str) -> Iterator[Server]:
    env = serve_env(folder / "data", save_tiny_model(folder / "model"), lease_seconds=30)
    env.update({
        "IMAGELOOP_DATABASE_URL": database_url,
        "IMAGELOOP_CREDITS__ENABLED": "true",
        "IMAGELOOP_JOBS__MAX_JOB_SECONDS": str(MAX_JOB_SECONDS),
        "IMAGELOOP_SERVER__TIMEOUT_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE_SECONDS),
        "IMAGELOOP_SERVER__MAX_INCOMPLETE_EVENT_BYTES": "8192",
        "IMAGELOOP_PROMPTS__STRATEGIES": '["rules"]',
    })
    settings = Settings(data_dir=folder / "data", database_url=database_url, credits={"enabled": True})
    storage = Storage.open(settings)
    port = free_port()
    process = start_server(env, port, folder / "serve.log")
    try:
        yield Server(f"http://127.0.0.1:{port}", port, storage, settings)
    finally:
        process.terminate()
        process.wait(timeout=30)
        storage.close()
        log = (folder / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]


@dataclass
class Tally:
    """What the clients saw: every status, the latencies of cheap routes, the jobs accepted per user."""

    statuses: list[tuple[str, int]] = field(default_factory=list)
    cheap: list[float] = field(default_factory=list)
    accepted: dict[GenerationId, UserId] = field(default_factory=dict)

    async def call(self, client: httpx.AsyncClient, method: str, url: str, *, cheap: bool = False,
                   **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        response = await client.request(method, url, **kwargs)
        if cheap:
            self.cheap.append(time.perf_counter() - started)
        self.statuses.append((f"{method} {url.split('?')[0]}", response.status_code))
        return response


async def _ordinary_user(client: httpx.AsyncClient, tally: Tally, user: UserId, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/healthz", "/api/v1/account", "/api/v1/history"):
        await tally.call(client, "GET", path, cheap=True, headers=headers)
    submit = await tally.call(client, "POST", "/api/v1/generations", headers=headers,
                              json={"prompt": f"a small test {user}", "params": SMALL})
    if submit.status_code != 202:
        return
    generation_id = submit.json()["id"]
    tally.accepted[GenerationId(generation_id)] = user
    body: dict[str, Any] = {}
    while body.get("status") not in TERMINAL:
        await asyncio.sleep(0.25)
        body = (await tally.call(client, "GET", f"/api/v1/generations/{generation_id}", cheap=True,
                                 headers=headers)).json()
        await tally.call(client, "GET", "/api/v1/history", cheap=True, headers=headers)
    for image in body.get("images", []):
        await tally.call(client, "POST", "/api/v1/actions", headers=headers,
                         json={"type": "like", "image_id": image["id"], "client_event_id": f"like-{image['id']}"})
    await tally.call(client, "GET", "/api/v1/account", cheap=True, headers=headers)


async def _sign_in_flood(client: httpx.AsyncClient, tally: Tally, deadline: float) -> None:
    while time.monotonic() < deadline:
        response = await tally.call(client, "POST", "/api/v1/session", json={"name": "load-0", "password": "wrong"})
        assert response.status_code in {401, 429}, response.text
        if response.status_code == 429:
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 0.5))


async def _largest_request(client: httpx.AsyncClient, tally: Tally, user: UserId, key: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    submit = await tally.call(client, "POST", "/api/v1/generations", headers=headers,
                              json={"prompt": "the largest request", "n": 4, "params": LARGEST})
    assert submit.status_code == 202, submit.text
    generation_id = submit.json()["id"]
    tally.accepted[GenerationId(generation_id)] = user
    body: dict[str, Any] = {}
    while body.get("status") not in TERMINAL:
        await asyncio.sleep(0.5)
        body = (await tally.call(client, "GET", f"/api/v1/generations/{generation_id}", cheap=True,
                                 headers=headers)).json()
    return body


async def _load(server: Server, users: list[tuple[UserId, str]]) -> tuple[Tally, dict[str, Any], float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10,
                          keepalive_expiry=KEEP_ALIVE_SECONDS / 3)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base, timeout=HANG_GUARD_SECONDS, limits=limits) as client:
        big_user, big_key = users[-1]
        largest = asyncio.create_task(_largest_request(client, tally, big_user, big_key))
        ordinary = [_ordinary_user(client, tally, user, key) for user, key in users[:-1]]
        flood = _sign_in_flood(client, tally, time.monotonic() + 15)
        await asyncio.wait_for(asyncio.gather(*ordinary, flood), timeout=HANG_GUARD_SECONDS)
        largest_body = await asyncio.wait_for(largest, timeout=HANG_GUARD_SECONDS)
    return tally, largest_body, time.monotonic() - started


def _check_ledger(storage: Storage, tally: Tally, users: list[tuple[UserId, str]]) -> None:
    for generation_id, user in tally.accepted.items():
        record = storage.generations.get(user, generation_id)
        assert record.status.is_terminal, record  # no job lost
        entries = storage.credits.generation_entries(generation_id)
        debits = [entry.amount for entry in entries if entry.kind is LedgerKind.DEBIT]
        refunds = [entry.amount for entry in entries if entry.kind is LedgerKind.REFUND]
        assert len(debits) == 1 and len(refunds) <= 1, (record.status, entries)  # charged once, refunded once
        if record.status.value in {"failed", "cancelled"}:
            assert refunds == [-debits[0]], (record.status, entries)
    for user, _ in users:
        rows = storage.credits.history(user, limit=200)  # a handful each
        assert storage.users.get(user).credits == sum(entry.amount for entry in rows)


def test_sixty_clients_with_a_sign_in_flood_and_the_largest_request(server: Server) -> None:
    users = [make_user(server.storage, f"load-{i}") for i in range(CLIENTS - 1)]
    tally, largest, seconds = asyncio.run(_load(server, users))
    failures = [(route, status) for route, status in tally.statuses if status >= 500]
    assert failures == []
    unexpected = {(route, status) for route, status in tally.statuses if status not in {200, 201, 202, 401, 429}}
    assert unexpected == set()
    # It finishes, or the job time limit stops it with the reason (and it is refunded: _check_ledger).
    assert largest["status"] == "succeeded" or "time limit" in (largest["error"] or ""), largest
    _check_ledger(server.storage, tally, users)
    p95 = statistics.quantiles(tally.cheap, n=20)[-1]
    report = (f"load: {len(tally.statuses)} requests by {CLIENTS} clients in {seconds:.1f} s; "
              f"{len(tally.accepted)} jobs accepted; cheap routes p50 {statistics.median(tally.cheap) * 1000:.0f} ms "
              f"p95 {p95 * 1000:.0f} ms (bound {CHEAP_P95_BOUND_SECONDS:g} s); largest request {largest['status']}; "
              f"load average {os.getloadavg()[0]:.1f}")
    print(report)
    assert p95 < CHEAP_P95_BOUND_SECONDS, report


def _read_all(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_an_idle_keep_alive_connection_is_closed(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD_SECONDS) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        opened = time.monotonic()
        answer = _read_all(connection)  # the response, then the server closes the idle connection
        assert answer.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in answer
        assert time.monotonic() - opened < HANG_GUARD_SECONDS


def test_an_oversized_request_head_is_refused(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=HANG_GUARD_SECONDS) as connection:
        # A head still unfinished at 12 kB (more than the 8 kB allowed here, less than uvicorn's default 16 kB):
        # refused while it comes in, not held until it ends.
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Filler: " + b"a" * 12_000)
        answer = _read_all(connection)
    assert answer.split(b" ", 2)[1] in {b"400", b"431"}, answer[:200]


def test_the_settings_reach_uvicorn(tmp_path: Path) -> None:
    from imageloop.cli.serve import uvicorn_options

    settings = Settings(data_dir=tmp_path, server={"timeout_keep_alive_seconds": 3, "max_incomplete_event_bytes": 4096})
    assert uvicorn_options(settings) == {"timeout_keep_alive": 3, "h11_max_incomplete_event_size": 4096}
