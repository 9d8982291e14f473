"""Fine-tuning the prompt expander: a PEFT LoRA on the local LLM (SmolLM2-135M-Instruct), trained with TRL.

An SFT warm-start on (intent → kept prompt) teaches the output format when there is no adapter yet (DPO alone
does not teach it); DPO on (intent, kept prompt, rejected prompt) then moves
the model toward what people kept. With a PEFT adapter the adapter-disabled model is DPO's reference, so no second
copy of the model is held: TRL keeps a frozen copy of the starting adapter (after the warm-start, or the parent
adapter a cycle continues from) as DPO's reference.

The training text of an intent is :func:`prompt_text`; the local-LLM strategy must use the same format when it
runs with an adapter.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings
from imageloop.errors import ModelLoadError, TrainingError
from imageloop.loading import MODEL_LOADS

__all__ = [
    "ExpanderTrainer", "load_expander_base", "lora_config", "preference_margins", "prompt_messages", "prompt_text",
    "sft_step_count",
]


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAPTER_INIT_SEED = 0  # the seed of a fresh adapter's initial weights (see ExpanderTrainer.train)
Progress = Callable[[float, str], None]


def prompt_messages(intent: str) -> list[dict[str, str]]:
    """The chat an adapter is trained on, exactly as the local-LLM strategy serves it: the adapter's system prompt
    and the intent read into English tags (``english_reading``: translated for Chinese), without few-shot examples
    (they would triple every example's length, and a trained adapter knows the format without them)."""
    from imageloop.prompts.expander.llm_prompt import adapter_prefix, user_message
    from imageloop.prompts.expander.rules import english_reading
    from imageloop.prompts.lexicon import load_lexicon

    lexicon = load_lexicon()
    return [*adapter_prefix(), user_message(english_reading(intent, lexicon))]


def prompt_text(intent: str, tokenizer: Any) -> str:
    """The model input for ``intent``: :func:`prompt_messages` through the chat template with the assistant turn
    opened, or a plain ``Intent: ...`` / ``Prompt:`` frame for a tokenizer without a template (test models)."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(prompt_messages(intent), tokenize=False, add_generation_prompt=True))
    return f"Intent: {intent.strip()}\nPrompt:"


def load_expander_base(settings: Settings) -> tuple[Any, Any]:
    """(model, tokenizer) of the LLM the expander adapters are trained on: ``training.expander_base`` if set,
    else the local-LLM strategy's SmolLM2 copy (converted from the GGUF once, shared with it), with the weights in
    ``training.expander_dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = settings.training.expander_base
    if path is None:
        from imageloop.prompts.expander.local_llm import LocalLLMExpander, convert_gguf, smollm2_gguf_path

        path = convert_gguf(smollm2_gguf_path(), LocalLLMExpander(settings).model_dir())
    try:
        with MODEL_LOADS:  # one load at a time in the process (imageloop.loading)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, settings.training.expander_dtype))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"expander base model {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@torch.no_grad()
def preference_margins(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_length: int, batch_size: int = 8
) -> list[float]:
    """Per row: log p(chosen | intent) - log p(rejected | intent) under ``model`` (summed over the completion's
    tokens, end-of-sequence included). Positive = the model prefers the prompt people kept."""
    texts: list[tuple[list[int], list[int]]] = []
    for row in rows:
        prompt_ids = tokenizer(prompt_text(str(row["prompt"]), tokenizer), add_special_tokens=False)["input_ids"]
        for side in ("chosen", "rejected"):
            completion = tokenizer(str(row[side]) + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            # Keep the end of a long prompt (where the intent is) and the start of the completion.
            ids = (prompt_ids + completion)[-max_length:]
            start = max(len(ids) - len(completion), 1)
            texts.append((ids, list(range(start, len(ids)))))
    scores = _sequence_logprobs(model, tokenizer, texts, batch_size)
    return [scores[2 * i] - scores[2 * i + 1] for i in range(len(rows))]


def _sequence_logprobs(model: Any, tokenizer: Any, texts: list[tuple[list[int], list[int]]], batch: int) -> list[float]:
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (ids, _) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        for i, (ids, positions) in enumerate(chunk):
            total = sum(float(logprobs[i, p - 1, ids[p]]) for p in positions)
            out.append(total)
    return out


class ExpanderTrainer:
    """Trains one expander adapter: SFT warm-start (when there is no parent adapter) then DPO."""

    def __init__(self, model: Any, tokenizer: Any, settings: Settings) -> None:
        self.base = model
        self.tokenizer = tokenizer
        self.settings = settings

    def train(
        self,
        sft_rows: Sequence[dict[str, Any]],
        dpo_rows: Sequence[dict[str, Any]],
        out_dir: Path,
        *,
        parent: Path | None = None,
        on_progress: Progress | None = None,
    ) -> Any:
        """Train and save the adapter to ``out_dir`` (PEFT format); returns the PEFT model (adapter active).

        1. The adapter: the ``parent`` adapter folder when given, else a fresh LoRA (:func:`lora_config`).
        2. SFT on ``sft_rows`` for ``training.sft_epochs`` passes (at most ``training.sft_max_steps`` steps).
        3. DPO on ``dpo_rows`` for ``training.dpo_max_steps`` steps.
        """
        from peft import PeftModel, get_peft_model

        cfg = self.settings.training
        # A fresh LoRA's initial weights come from torch's global generator: seeded here (on a forked state, so the
        # process's other randomness is untouched), a cycle trains the same adapter from the same rows whatever ran
        # in the process before it.
        with MODEL_LOADS, torch.random.fork_rng():
            torch.manual_seed(ADAPTER_INIT_SEED)
            if parent is not None:
                model = PeftModel.from_pretrained(self.base, str(parent), is_trainable=True)
            else:
                model = get_peft_model(self.base, lora_config(self.base, cfg.lora_rank, cfg.expander_lora_layers))
        sft_steps = sft_step_count(len(sft_rows), cfg.sft_epochs, cfg.batch_size, cfg.sft_max_steps)
        dpo_steps = cfg.dpo_max_steps if dpo_rows else 0
        total = max(sft_steps + dpo_steps, 1)
        if sft_steps:
            self._sft(model, sft_rows, out_dir / "sft-run", sft_steps, _scaled(on_progress, 0.0, sft_steps / total))
        if dpo_steps:
            self._dpo(model, dpo_rows, out_dir / "dpo-run", dpo_steps,
                      _scaled(on_progress, sft_steps / total, dpo_steps / total))
        model.save_pretrained(str(out_dir / "adapter"))
        self.tokenizer.save_pretrained(str(out_dir / "adapter"))
        return model

    def _common(self, run_dir: Path, steps: int, learning_rate: float) -> dict[str, Any]:
        cfg = self.settings.training
        return {
            "output_dir": str(run_dir), "per_device_train_batch_size": cfg.batch_size, "max_steps": steps,
            "learning_rate": learning_rate, "report_to": [], "save_strategy": "no", "logging_steps": 10,
            "use_cpu": True, "max_length": cfg.max_length, "dataloader_num_workers": 0, "disable_tqdm": True,
            # Explicit, because TRL's defaults (checkpointing on, bf16 autocast on) are wrong for a small model on a
            # CPU: there is no memory to save, and autocast over fp32 weights adds casts to every op.
            "gradient_checkpointing": False, "bf16": False, "seed": 0,
        }

    def _sft(self, model: Any, rows: Sequence[dict[str, Any]], run_dir: Path, steps: int, progress: Progress) -> None:
        import datasets
        from trl import SFTConfig, SFTTrainer  # type: ignore[attr-defined]

        data = datasets.Dataset.from_list([
            {"prompt": prompt_text(str(r["prompt"]), self.tokenizer), "completion": str(r["completion"])}
            for r in rows
        ])
        args = SFTConfig(**self._common(run_dir, steps, self.settings.training.learning_rate),
                         completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=self.tokenizer,
                             callbacks=[_progress_callback(progress, "expander SFT")])
        _run(trainer, "SFT warm-start")
        shutil.rmtree(run_dir, ignore_errors=True)

    def _dpo(self, model: Any, rows: Sequence[dict[str, Any]], run_dir: Path, steps: int, progress: Progress) -> None:
        import datasets
        from trl import DPOConfig, DPOTrainer  # type: ignore[attr-defined]

        data = datasets.Dataset.from_list([
            {"prompt": prompt_text(str(r["prompt"]), self.tokenizer), "chosen": str(r["chosen"]),
             "rejected": str(r["rejected"])}
            for r in rows
        ])
        args = DPOConfig(**self._common(run_dir, steps, self.settings.training.dpo_learning_rate),
                         truncation_mode="keep_start", beta=0.1)
        with MODEL_LOADS:  # TRL adds a frozen copy of the adapter (the reference): a load (imageloop.loading)
            trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=self.tokenizer,
                                 callbacks=[_progress_callback(progress, "expander DPO")])
        _run(trainer, "DPO")
        if "ref" in model.peft_config:  # TRL's frozen copy of the starting adapter, DPO's reference: not saved
            model.delete_adapter("ref")
        shutil.rmtree(run_dir, ignore_errors=True)


def lora_config(model: Any, rank: int, top_layers: int) -> Any:
    """A LoRA of ``rank`` on every linear layer (:data:`LORA_TARGETS`) of the model's top ``top_layers`` decoder
    layers (0 = all): gradients then stop below the lowest adapted layer, so a step costs little more than a
    forward pass."""
    from peft import LoraConfig

    layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    chosen = list(range(max(layers - top_layers, 0), layers)) if top_layers and layers else None
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present] or ["q_proj", "v_proj"]
    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets,
                      layers_to_transform=chosen, task_type="CAUSAL_LM")


def sft_step_count(rows: int, epochs: float, batch_size: int, cap: int) -> int:
    """Optimizer steps for ``epochs`` passes over ``rows`` examples, at most ``cap`` (0 when there are no rows)."""
    if rows <= 0 or cap <= 0:
        return 0
    return max(1, min(cap, math.ceil(epochs * rows / batch_size)))


def _run(trainer: Any, what: str) -> None:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its per-step dicts would flood the server log
    try:
        trainer.train()
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"expander {what} failed: {exc}") from exc


def _scaled(progress: Progress | None, start: float, span: float) -> Progress:
    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(start + span * fraction, message)

    return report


def _progress_callback(progress: Progress, label: str) -> Any:
    """A TrainerCallback reporting each optimizer step to ``progress`` as a fraction of max_steps."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            total = max(int(state.max_steps or 1), 1)
            progress(state.global_step / total, f"{label} step {state.global_step}/{total}")

    return ProgressCallback()
