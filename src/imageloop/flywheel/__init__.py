"""The flywheel: what counts as kept, how prompt edits are measured, and the datasets built from the record.

The record itself (generations, images, actions) lives in :mod:`imageloop.storage`; this package reads it.
``export_dataset(kind, db_engine, out_dir)`` writes ``sft``, ``dpo``, ``pairs`` or ``recipes`` as Parquet + card.
"""

from imageloop.flywheel.actions import KEPT_ACTIONS, ActionType, is_kept
from imageloop.flywheel.editdiff import char_distance, edit_details, token_changes, token_distance, tokenize
from imageloop.flywheel.export import EXPORT_KINDS, ExportResult, export_dataset
from imageloop.storage.records import ActionRecord, EditDetails, GenerationRecord

__all__ = [
    "EXPORT_KINDS",
    "KEPT_ACTIONS",
    "ActionRecord",
    "ActionType",
    "EditDetails",
    "ExportResult",
    "GenerationRecord",
    "char_distance",
    "edit_details",
    "export_dataset",
    "is_kept",
    "token_changes",
    "token_distance",
    "tokenize",
]
