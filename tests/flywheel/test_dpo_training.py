"""The exported dpo file trains as is: one TRL DPOTrainer step on a tiny random causal LM built here (offline)."""

from __future__ import annotations

import copy
from pathlib import Path

import datasets
import torch

from imageloop.flywheel.export import export_dataset
from imageloop.storage import Storage
from tests.flywheel.record import build_record


def _tiny_tokenizer(texts: list[str]):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="<eos>")


def test_one_dpo_step_on_the_exported_file(storage: Storage, tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    build_record(storage)
    result = export_dataset("dpo", storage.db_engine, tmp_path / "export")
    train = datasets.load_dataset("parquet", data_files=str(result.path), split="train")
    assert len(train) == 2

    tokenizer = _tiny_tokenizer([t for row in train for t in (row["prompt"], row["chosen"], row["rejected"])])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=1,
                     learning_rate=1e-2, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
                     max_length=64, dataloader_num_workers=0, disable_tqdm=True)
    # The reference model is given (a frozen copy), so TRL never tries to load one from a hub path.
    reference = copy.deepcopy(model).eval()
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=train, processing_class=tokenizer)
    output = trainer.train()

    assert output.global_step == 1 and torch.isfinite(torch.tensor(output.training_loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
