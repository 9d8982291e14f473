"""The embedded model's own tokenizer: word-level English plus one token per Chinese character.

Built offline with the ``tokenizers`` library from the caption vocabulary and saved as a
``PreTrainedTokenizerFast`` folder, so ``from_pretrained`` works without a network. Every encoding is
``<|startoftext|> tokens... <|endoftext|> <pad>...`` like CLIP's, truncated to ``MAX_LENGTH``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from imageloop.training.base.captions import LANGUAGES, caption
from imageloop.training.base.scenes import random_spec

MAX_LENGTH = 64
BOS, EOS, PAD, UNK = "<|startoftext|>", "<|endoftext|>", "<pad>", "<unk>"
SPECIALS = [PAD, UNK, BOS, EOS]  # ids 0..3
# Common words a user may add around the attributes; they get ids so they do not all collapse into <unk>.
_EXTRA_WORDS = (
    "the with and of in on at a an is very highly detailed high quality best masterpiece photo picture style "
    "scene background small big large little cute beautiful blurry ugly low weather lighting light tone"
)
# Common Chinese characters of prompts beyond the attribute names (measure words, particles, adjectives).
_EXTRA_ZH = "一只个头座辆在里中上下左右和与及是有的了着很非常美丽可爱漂亮高清细节画质最好风格背景场景小大色光天"



def _corpus(n_captions: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = [caption(random_spec(rng), lang, rng, omit_prob=0.0) for _ in range(n_captions) for lang in LANGUAGES]
    lines.append(" ".join(string.digits + string.punctuation) + " ，。、：；！？（）")
    lines.append(_EXTRA_WORDS)
    lines.append(" ".join(_EXTRA_ZH))
    return lines


def build_tokenizer(n_captions: int = 6000, seed: int = 0) -> PreTrainedTokenizerFast:
    """Build the tokenizer deterministically from ``n_captions`` random captions per language."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    tok.train_from_iterator(_corpus(n_captions, seed), trainer=trainer)
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}", special_tokens=[(BOS, bos_id), (EOS, eos_id)]
    )
    fast: Any = PreTrainedTokenizerFast  # untyped for mypy
    return fast(  # type: ignore[no-any-return]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_LENGTH,
        padding_side="right",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write ``tokenizer`` as a folder that ``PreTrainedTokenizerFast.from_pretrained`` (and AutoTokenizer) load."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(folder))
