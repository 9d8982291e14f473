"""The remote LLM strategy: any OpenAI-compatible chat endpoint (``prompts.remote_url``), e.g. a llama.cpp or vLLM
server on the LAN, or a hosted API. Same messages and post-processing as the local LLM; every failure (network,
HTTP status, timeout, odd JSON, unusable text) is a :class:`StrategyFailed` so the chain moves on.
"""

from __future__ import annotations

from typing import Any

import httpx

from imageloop.config import Settings
from imageloop.prompts.expander._common import ExampleSource, Expander, Expansion, Stopwatch, StrategyFailed
from imageloop.prompts.expander.llm_prompt import build_messages
from imageloop.prompts.expander.postprocess import clean_llm_output
from imageloop.prompts.expander.rules import plan_scene
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import Lexicon, load_lexicon

__all__ = ["RemoteLLMExpander"]

REMOTE_VERSION = "remote-1"


class RemoteLLMExpander(Expander):
    """Chat completions from ``settings.prompts.remote_url`` (``/chat/completions`` is appended)."""

    name = "remote_llm"

    def __init__(
        self,
        settings: Settings,
        *,
        examples: ExampleSource | None = None,
        lexicon: Lexicon | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        config = settings.prompts
        if not config.remote_url:
            raise StrategyFailed("prompts.remote_url is not set")
        self.config = config
        self.examples = examples
        self.lexicon = lexicon or load_lexicon()
        key = config.remote_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self._client = httpx.Client(
            base_url=config.remote_url.rstrip("/"), headers=headers, timeout=config.remote_timeout_seconds,
            transport=transport,
        )

    @property
    def version(self) -> str:
        return f"{REMOTE_VERSION}+{self.config.remote_model}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant text the endpoint answers to ``messages``; StrategyFailed on any failure."""
        body: dict[str, Any] = {
            "model": self.config.remote_model, "messages": messages, "temperature": 0.2,
            "max_tokens": self.config.remote_max_new_tokens,
        }
        try:
            response = self._client.post("/chat/completions", json=body)
            response.raise_for_status()
            return str(response.json()["choices"][0]["message"]["content"])
        except httpx.HTTPStatusError as exc:
            raise StrategyFailed(f"remote LLM answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise StrategyFailed(f"remote LLM unreachable: {type(exc).__name__}: {exc}") from exc
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StrategyFailed(f"remote LLM gave an unexpected answer: {exc!r}") from exc

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        """An expansion from the endpoint; StrategyFailed when it fails or its text is unusable."""
        watch = Stopwatch()
        lang = resolve_language(intent, language)
        plan = plan_scene(intent, self.lexicon, lang)
        guard = {attribute: value.key for attribute, value in plan.values.items()}
        keywords = [self.lexicon.canonical(a, k) for a, k in guard.items()]
        examples = self.examples.examples(intent, k=self.config.few_shot_examples) if self.examples else []
        raw = self.complete(build_messages(intent, self.lexicon, examples, keywords))
        prompt = clean_llm_output(raw, self.lexicon, guard)
        if not prompt:
            raise StrategyFailed(f"the remote LLM gave no usable tags: {raw[:200]!r}")
        return Expansion(
            prompt=prompt, negative=", ".join(plan.negatives) or None, strategy=self.name, version=self.version,
            language=lang, latency=watch.seconds, details={"raw": raw, "examples": [e.intent for e in examples]},
        )

    def close(self) -> None:
        self._client.close()
