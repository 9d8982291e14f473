"""Actions through the HTTP API: every request must record an action (a refused one fails the bench)."""

from __future__ import annotations

from imageloop.bench.api_ingest import api_ingest


def test_api_ingest_records_every_action_for_each_client_count() -> None:
    results = api_ingest(count=30, clients=(1, 4))
    assert [(result.clients, result.actions) for result in results] == [(1, 30), (4, 30)]
    assert all(result.actions_per_second > 0 for result in results)
