"""Responses name files, never the server's paths: error bodies keep only each file's name (the log keeps the full
path); tests/jobs/test_error_paths.py checks a failed generation's stored error."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from imageloop.errors import RecipeError, redact_paths
from imageloop.server.errors import install_error_handlers

LORA = "/srv/imageloop-data/loras/ada/portrait.safetensors"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (f"LoRA {LORA}: cannot be read", "LoRA portrait.safetensors: cannot be read"),
        ("cannot write blob 'images/a.png' under /var/lib/imageloop/blobs: disk full",
         "cannot write blob 'images/a.png' under blobs: disk full"),
        ("C:\\imageloop\\models\\base.safetensors is not a model", "base.safetensors is not a model"),
        ("GET /api/v1/generations/abc and /v1/images/generations", "GET /api/v1/generations/abc and "
         "/v1/images/generations"),
        ("share it at http://127.0.0.1:8000/s/token", "share it at http://127.0.0.1:8000/s/token"),
        ("a 1/2 chance, width/height", "a 1/2 chance, width/height"),
    ],
)
def test_paths_become_file_names_and_routes_stay(message: str, expected: str) -> None:
    assert redact_paths(message) == expected


def test_an_error_response_names_the_file_not_its_path() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise RecipeError(f"LoRA {LORA}: not a readable .safetensors file")

    answer = TestClient(app).get("/boom")
    assert answer.status_code == 422
    assert answer.json()["message"] == "LoRA portrait.safetensors: not a readable .safetensors file"
