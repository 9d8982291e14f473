from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def app_overrides() -> dict[str, Any]:
    return {"server": {"max_body_bytes": 64_000}}
