"""The official ``openai`` client against a real uvicorn server: POST /v1/images/generations works unchanged."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from imageloop.engine.pngmeta import read_png_parameters
from imageloop.server import create_app
from imageloop.storage import Storage
from tests.server.kit import make_user, running_server, tiny_settings


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[tuple[str, str]]:
    settings = tiny_settings(tmp_path_factory.mktemp("openai-data"), tiny_model)
    storage = Storage.open(settings)
    _, key = make_user(storage, "openai-user")
    storage.close()
    with running_server(create_app(settings)) as base_url:
        yield base_url, key


@pytest.fixture(scope="module")
def client(server: tuple[str, str]) -> openai.OpenAI:
    base_url, key = server
    return openai.OpenAI(api_key=key, base_url=f"{base_url}/v1", max_retries=0, timeout=60)


def test_b64_json_images(client: openai.OpenAI) -> None:
    result = client.images.generate(model="imageloop", prompt="a green dragon", n=2, size="64x64",
                                    response_format="b64_json", user="session-1")
    assert result.data is not None and len(result.data) == 2
    pngs = [base64.b64decode(image.b64_json or "") for image in result.data]
    requests = [read_png_parameters(png) for png in pngs]
    assert {request.prompt for request in requests} == {"a green dragon"}
    assert requests[1].seed == (requests[0].seed or 0) + 1
    assert result.data[0].revised_prompt == "a green dragon"


def test_url_images_are_signed_links(client: openai.OpenAI) -> None:
    result = client.images.generate(prompt="a castle", size="64x64")  # url is the default format
    assert result.data is not None
    url = result.data[0].url or ""
    fetched = httpx.get(url)  # no Authorization header: the signature is the credential
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert read_png_parameters(fetched.content).prompt == "a castle"
    tampered = httpx.get(url.replace("signature=", "signature=0"))
    assert tampered.status_code == 403


def test_errors_reach_the_client_with_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as unknown_model:
        client.images.generate(model="dall-e-9", prompt="a cat")
    assert "model" in str(unknown_model.value)
    with pytest.raises(openai.UnprocessableEntityError) as bad_size:
        client.images.generate(prompt="a cat", size="100x100")  # type: ignore[arg-type]
    assert bad_size.value.body is not None and bad_size.value.body["param"] == "size"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="il_wrong", base_url=str(client.base_url), max_retries=0).images.generate(prompt="a")


def test_a_generation_that_ends_without_images_is_not_retried(
    tmp_path: Path, tiny_model: Path
) -> None:
    # The job is held at a gate until the route's wait runs out; the answer must be one the official client does not
    # retry (409, 429 and 5xx are retried), or each retry would queue the same job again.
    from imageloop.engine.engine import Engine
    from tests.server.kit import Gate, GatedEngine

    settings = tiny_settings(tmp_path / "data", tiny_model, server={"wait_timeout_seconds": 0.5})
    gate = Gate()
    storage = Storage.open(settings)
    user_id, key = make_user(storage, "impatient")
    storage.close()
    app = create_app(settings, engine_factory=lambda: GatedEngine(Engine(settings), gate))
    with running_server(app) as base_url:
        client = openai.OpenAI(api_key=key, base_url=f"{base_url}/v1", max_retries=2, timeout=60)
        with pytest.raises(openai.UnprocessableEntityError, match="cancelled"):
            client.images.generate(model="imageloop", prompt="a held fox", n=1, size="64x64")
        gate.open()
        services = app.state.services
        assert len(services.storage.generations.history(user_id).items) == 1  # asked once, queued once
