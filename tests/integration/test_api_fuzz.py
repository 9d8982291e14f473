"""Schemathesis against our own OpenAPI spec on a real server: generated requests (valid and not) never get a 5xx.

Bounded: a few examples per operation, and engine limits so small that any valid generation is cheap.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from imageloop.server import create_app
from imageloop.storage import Storage
from tests.server.kit import make_user, running_server, save_tiny_model, tiny_settings

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25
# Streams until the job ends; its 404/422 paths are covered by the API tests.
SKIPPED = {("GET", "/api/v1/generations/{generation_id}/events")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    tiny_model = save_tiny_model(root / "model")
    app_settings = tiny_settings(
        root / "data", tiny_model, engine={"model": str(tiny_model), "threads": 1, "max_steps": 3,
                                           "max_pixels": 128 * 128, "max_images": 2},
        server={"wait_timeout_seconds": 30},
    )
    storage = Storage.open(app_settings)
    _, key = make_user(storage, "fuzzer")
    storage.close()
    with running_server(create_app(app_settings)) as base_url:
        yield base_url, key


def test_no_generated_request_gets_a_server_error(server: tuple[str, str]) -> None:
    base_url, key = server
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
    assert len(operations) >= 14
    headers = st.sampled_from([{"Authorization": f"Bearer {key}"}, {}, {"Authorization": "Bearer il_forged"}])
    for operation in operations:

        @given(case=operation.as_strategy(), auth=headers)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case, auth: dict[str, str]) -> None:
            case.call_and_validate(base_url=base_url, headers=auth, checks=[not_a_server_error])

        check()
