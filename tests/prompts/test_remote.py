"""The remote LLM strategy against a tiny OpenAI-compatible server on 127.0.0.1 (no network)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from imageloop.config import Settings
from imageloop.prompts.expander import StrategyFailed
from imageloop.prompts.expander.chain import ChainExpander
from imageloop.prompts.expander.remote import RemoteLLMExpander
from imageloop.prompts.expander.rules import RulesExpander


class ChatHandler(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with ``reply`` (or ``status``), recording each request."""

    reply: ClassVar[Any] = "forest, night, spooky, moonlit"
    status: ClassVar[int] = 200
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.status != 200:
            payload = b'{"error": "overloaded"}'
        elif isinstance(self.reply, str):
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": self.reply}}]}).encode()
        else:
            payload = json.dumps(self.reply).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    ChatHandler.requests = []
    ChatHandler.reply, ChatHandler.status = "forest, night, spooky, moonlit", 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    return Settings(data_dir=tmp_path, prompts={"remote_url": url, "remote_model": "tiny-chat",
                                                "remote_api_key": "sk-test", **extra})


def test_remote_expansion_sends_examples_and_keywords_and_cleans_the_reply(tmp_path: Path, endpoint: str) -> None:
    remote = RemoteLLMExpander(_settings(tmp_path, endpoint))
    result = remote.expand("夜晚阴森的树林")
    assert result.prompt == "bleak, forest, night, spooky, moonlit"  # the intent said 阴森: the guard adds bleak
    assert (result.strategy, result.version, result.language) == ("remote_llm", "remote-1+tiny-chat", "zh")
    [request] = ChatHandler.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    messages = request["body"]["messages"]
    assert request["body"]["model"] == "tiny-chat" and messages[0]["role"] == "system"
    assert messages[-1]["content"].startswith("夜晚阴森的树林") and "forest" in messages[-1]["content"]
    assert len(messages) == 1 + 2 * 3 + 1  # system, three built-in examples, the intent


@pytest.mark.parametrize(("status", "reply"), [(503, "x"), (200, {"unexpected": True}), (200, "夜晚，森林")])
def test_remote_failures_are_strategy_failures_and_the_chain_falls_back(
    tmp_path: Path, endpoint: str, status: int, reply: Any
) -> None:
    ChatHandler.status, ChatHandler.reply = status, reply
    remote = RemoteLLMExpander(_settings(tmp_path, endpoint))
    with pytest.raises(StrategyFailed):
        remote.expand("a fox")
    result = ChainExpander([remote, RulesExpander()]).expand("a fox")
    assert result.strategy == "rules" and result.details["attempts"][0]["outcome"] == "failed"


def test_an_unreachable_endpoint_fails_fast(tmp_path: Path) -> None:
    remote = RemoteLLMExpander(_settings(tmp_path, "http://127.0.0.1:9/v1", remote_timeout_seconds=2))
    with pytest.raises(StrategyFailed, match="unreachable"):
        remote.expand("a fox")


def test_no_url_means_no_remote_strategy(tmp_path: Path) -> None:
    with pytest.raises(StrategyFailed, match="remote_url"):
        RemoteLLMExpander(Settings(data_dir=tmp_path))
