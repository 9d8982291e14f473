"""The cycle's expander stage: its data (the whole record, in the served format) and its gate (held-out intents).

Unlike the reward model, the expander is trained afresh each cycle on every kept intent so far (narrowed to the
top-K most kept), not on the last window: the record of kept prompts is small text, a fresh adapter cannot drift
from an old one, and the held-out intents (a stable hash of the text) are never trained on in any cycle, so the gate
can use all of them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from imageloop.config import Settings
from imageloop.flywheel.export import export_datasets
from imageloop.loading import MODEL_LOADS
from imageloop.prompts.lexicon import load_lexicon
from imageloop.storage import Storage
from imageloop.storage.action_history import ActionHistory
from imageloop.training.data import Row, read_rows, snapshot_hash, top_k_intents
from imageloop.training.expander_eval import (
    IntentExample,
    community_examples,
    dpo_rows,
    edit_meanings,
    edited_examples,
    intent_examples,
    recall_scores,
    sft_rows,
    split_examples,
)
from imageloop.training.gate import GateResult, evaluate_gate

__all__ = ["ExpanderData", "expander_data", "gate_expander"]

METRIC = ("held-out intent score: the agreed scene values the answer states / (agreed values + other values it "
          "adds); for an intent with no agreed meaning, 1 when the answer adds no scene value")


@dataclass
class ExpanderData:
    """What one expander stage trains on and is gated on."""

    sft: list[Row] = field(default_factory=list)
    dpo: list[Row] = field(default_factory=list)
    gated: list[IntentExample] = field(default_factory=list)  # held-out intents whose words have a meaning
    plain: list[IntentExample] = field(default_factory=list)  # as many held-out intents with none (add nothing)
    data_hash: str = ""

    def counts(self) -> dict[str, int]:
        return {"sft": len(self.sft), "dpo": len(self.dpo), "heldout_intents": len(self.gated),
                "heldout_plain_intents": len(self.plain)}

    @property
    def items(self) -> list[IntentExample]:
        """What the gate scores: the intents with a meaning, then the plain ones."""
        return [*self.gated, *self.plain]


def expander_data(storage: Storage, folder: Path, *, until: datetime, settings: Settings) -> ExpanderData:
    """1. Export the SFT and DPO datasets of the whole record up to ``until`` into ``folder``.
    2. Keep the top-K kept intents, read every kept generation into an :class:`IntentExample`; read every hand edit.
    3. Split by intent (a stable hash): held-out intents are never trained on.
    4. What each phrasing word means to the community: the values people add by hand after it
       (:func:`edit_meanings`), from every edit. A meaning belongs to a phrase, not to one intent: the edits of
       held-out intents are evidence of it like any other (a third of a week's edits is often the difference
       between two people and the three an agreement needs), while the held-out intents themselves are never
       trained on. Kept prompts are not asked: they also carry whatever rode along in what was served (another
       person's taste reused by retrieval), and kept it because it did not hurt.
    5. SFT rows in the served format for every training intent, kept, edited or only typed, with the agreed values
       of its words (nothing for a plain intent: the adapter learns to add nothing); DPO rows likewise.
    6. The gate's items: held-out intents people typed whose words have agreed values, each with those values as
       its target (does the candidate carry a phrase's meaning to intents it never saw?); and as many held-out
       intents whose words mean nothing agreed, where the right answer adds no scene value (a candidate that writes
       the common values everywhere must not pass)."""
    cfg = settings.training
    shutil.rmtree(folder, ignore_errors=True)
    export_datasets(("sft", "dpo"), storage.db_engine, folder, since=None, until=until, blobs=storage.blobs)
    files = [folder / kind / "data.parquet" for kind in ("sft", "dpo")]
    sft = read_rows(files[0], ["prompt", "completion"])
    dpo = read_rows(files[1], ["prompt", "chosen", "rejected"])
    keep = top_k_intents(sft, cfg.top_k_intents)
    lexicon = load_lexicon()
    examples = intent_examples([row for row in sft if str(row["prompt"]).strip() in keep], lexicon)
    history = ActionHistory(storage.sessions)
    edits = history.intent_edits(until=until)
    typed = sorted({*(e.intent for e in edits), *history.intents(until=until)})  # content order, as the rows
    train, test = split_examples([*examples, *edited_examples(typed, lexicon)], cfg.heldout_fraction)
    held = {example.intent for example in test}
    agreed = edit_meanings(edits, lexicon, min_users=cfg.meaning_min_users)
    judged = {e.intent: e for e in community_examples(test, lexicon, agreed)}
    targets = [e for e in judged.values() if e.values]
    return ExpanderData(
        sft=sft_rows(community_examples(train, lexicon, agreed)),
        dpo=dpo_rows([row for row in dpo if str(row["prompt"]).strip() in keep], lexicon, agreed, exclude=held),
        gated=targets,
        plain=[e for e in judged.values() if not e.values][:len(targets)],
        data_hash=snapshot_hash(files),
    )


def gate_expander(peft_model: Any, tokenizer: Any, data: ExpanderData, parent: Path | None,
                  settings: Settings) -> tuple[GateResult, dict[str, Any]]:
    """The candidate (``peft_model``'s active adapter) against what is served now: the ``parent`` adapter, or the
    base model as served without one, on the held-out intents; the gate result and metrics to record."""
    cfg = settings.training
    lexicon = load_lexicon()
    tokens = settings.prompts.llm_max_new_tokens
    candidate, answers = recall_scores(peft_model, tokenizer, data.items, lexicon, trained=True,
                                       max_new_tokens=tokens)
    if parent is not None:
        with MODEL_LOADS:  # one load at a time in the process (imageloop.loading)
            peft_model.load_adapter(str(parent), adapter_name="current")
        peft_model.set_adapter("current")
        baseline, _ = recall_scores(peft_model, tokenizer, data.items, lexicon, trained=True, max_new_tokens=tokens)
        peft_model.set_adapter("default")
        peft_model.delete_adapter("current")
    else:
        with peft_model.disable_adapter():
            baseline, _ = recall_scores(peft_model, tokenizer, data.items, lexicon, trained=False,
                                        max_new_tokens=settings.prompts.llm_base_max_new_tokens)
    gate = evaluate_gate(candidate, baseline, confidence=cfg.gate_confidence, min_pairs=cfg.min_heldout_items,
                         metric="recall", items="intents")
    examples = [{"intent": e.intent, "kept": e.values, "answer": a} for e, a in zip(data.items, answers,
                                                                                  strict=False)][:10]
    return gate, {"baseline": "current" if parent is not None else "base", "metric": METRIC, "examples": examples}
