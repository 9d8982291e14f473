"""A tiny, randomly initialised transformers CLIPModel saved as a PickScore/HPSv2-style folder, built offline.

The folder holds what a real one does: ``config.json`` (model_type "clip"), ``model.safetensors`` and the processor
files (the tiny CLIP tokenizer of :mod:`tests.tiny` and a 32-pixel image processor).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from tests.tiny import make_tokenizer, tiny_vocab_size

IMAGE_SIZE = 32


def tiny_clip_folder(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random CLIPModel + processor into ``folder`` and return it."""
    vocab_size = tiny_vocab_size()
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                     "num_hidden_layers": 3, "max_position_embeddings": 77, "bos_token_id": vocab_size - 2,
                     "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 3,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(str(folder))
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=make_tokenizer()).save_pretrained(str(folder))
    return folder
