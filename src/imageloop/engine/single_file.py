"""Config folders for single-file SD1.5 / SDXL checkpoints, built offline from what we ship.

``from_single_file`` needs a diffusers folder with the component configs and the tokenizer files. We ship the
configs (``assets/configs/sd15``, ``assets/configs/sdxl``) and CLIP's BPE vocabulary once
(``assets/configs/clip/bpe_simple_vocab_16e6.txt.gz``, see its NOTICE); :func:`prepared_config_dir` assembles the
full folder, with ``vocab.json`` / ``merges.txt`` derived the way CLIP's own tokenizer derives them, in a cache dir.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from imageloop.config import ASSETS_DIR
from imageloop.errors import ModelLoadError

CLIP_BPE_FILE = ASSETS_DIR / "configs" / "clip" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
_MERGE_COUNT = CLIP_VOCAB_SIZE - 256 - 256 - 2  # byte symbols, byte symbols ending a word, two specials


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's printable stand-ins for the 256 byte values, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@functools.cache
def clip_vocab_and_merges(bpe_file: Path = CLIP_BPE_FILE) -> tuple[dict[str, int], list[str]]:
    """CLIP's ``vocab.json`` mapping and ``merges.txt`` lines, built from the BPE file (49408 tokens)."""
    with gzip.open(bpe_file, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = lines[1 : _MERGE_COUNT + 1]  # the first line is a header
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}, merges


def _fingerprint(source: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(file.relative_to(source).as_posix().encode() + b"\0" + file.read_bytes())
    digest.update(CLIP_BPE_FILE.read_bytes())
    return digest.hexdigest()[:16]


def prepared_config_dir(source: Path, cache_root: Path) -> Path:
    """A complete config folder for ``source`` (shipped configs, tokenizers without vocab), built once under
    ``cache_root``; rebuilt when the shipped files change. ModelLoadError if ``source`` is not a config folder."""
    if not (source / "model_index.json").is_file():
        raise ModelLoadError(f"no shipped config folder at {source}; pass --config DIR (a diffusers folder of the "
                             "same architecture: model_index.json, component configs, tokenizer)")
    target = cache_root / f"{source.name}-{_fingerprint(source)}"
    if (target / "model_index.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=cache_root))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        vocab, merges = clip_vocab_and_merges()
        for tokenizer_dir in staging.glob("tokenizer*"):
            (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        try:
            staging.rename(target)  # atomic: other processes see the whole folder or none
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
