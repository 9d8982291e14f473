"""Textual-inversion embeddings by name, as A1111 uses them: a word in a prompt that names a file of the folder.

Every ``.safetensors`` or ``.pt`` file in ``settings.embeddings_dir`` (sub-folders too) is an embedding named after
the file (``easynegative.safetensors`` is ``easynegative``). When a prompt holds that name as a word (any case), the
engine loads the embedding into the pipeline's tokenizer and text encoder with diffusers' ``load_textual_inversion``
(once per text encoder) and writes the word as the embedding's tokens before encoding. The tokens are named after
the file's content hash, so an edited file is loaded again and cached encodings of the old one are never reused.

Formats read: A1111 ``.pt`` (``string_to_param``), A1111/Civitai ``.safetensors`` (``emb_params``), SDXL
(``clip_l`` + ``clip_g``) and diffusers' ``learned_embeds`` (one tensor). ``.pt`` files are read with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from imageloop.errors import RecipeError

if TYPE_CHECKING:
    import torch

EMBEDDING_SUFFIXES = (".safetensors", ".pt")


@dataclass(frozen=True)
class Embedding:
    """One embedding file: its name (the word a prompt uses), path and content hash."""

    name: str
    path: Path
    sha256: str

    @property
    def token(self) -> str:
        """The tokenizer token its first vector gets (the others get ``token_1``, ``token_2``...)."""
        return f"ti_{re.sub(r'[^a-z0-9]+', '_', self.name.lower())}_{self.sha256[:8]}"


def embedding_files(folder: Path) -> dict[str, Path]:
    """Embedding names (lowercase) -> files, for every embedding file under ``folder`` (none if it is missing)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in EMBEDDING_SUFFIXES and path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem.lower(), path)
    return found


def _word(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.IGNORECASE)


def names_in(text: str, names: list[str] | set[str] | dict[str, Path]) -> list[str]:
    """The names (of ``names``) that ``text`` holds as words, case-insensitively, sorted."""
    return sorted(name for name in names if _word(name).search(text))


def read_vectors(path: Path) -> dict[str, torch.Tensor]:
    """An embedding file's vectors as ``{"clip_l": [n, D]}`` (SD1.x-style) or ``{"clip_l", "clip_g"}`` (SDXL);
    RecipeError naming the file when it is not an embedding this can read."""
    import torch  # heavy; naming the embeddings a text uses needs no tensors

    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled code refused, not a tensor file
        raise RecipeError(f"embedding {path.name}: cannot be read ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]
    if not isinstance(data, dict):
        raise RecipeError(f"embedding {path.name}: not an embedding file (no tensors)")
    tensors = {str(key): value for key, value in data.items() if isinstance(value, torch.Tensor)}
    if "clip_l" in tensors and "clip_g" in tensors:
        return {"clip_l": _rows(tensors["clip_l"]), "clip_g": _rows(tensors["clip_g"])}
    if len(tensors) != 1:
        raise RecipeError(f"embedding {path.name}: expected one tensor (or clip_l and clip_g), found "
                          f"{', '.join(sorted(tensors)) or 'none'}")
    return {"clip_l": _rows(next(iter(tensors.values())))}


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().reshape(-1, tensor.shape[-1])


class EmbeddingLoader:
    """Loads the embeddings a prompt names into a pipeline's text encoders and rewrites the prompt to their tokens.

    Thread-safe; pipelines that share a tokenizer (``from_pipe`` variants) share what was loaded into it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._hashes: dict[tuple[Path, int, int], str] = {}
        self._loaded: WeakKeyDictionary[Any, dict[str, int]] = WeakKeyDictionary()  # tokenizer -> token: vectors
        self._lock = threading.Lock()

    def available(self) -> dict[str, Path]:
        """Embedding names (lowercase) -> files in the folder."""
        return embedding_files(self.folder)

    def prepare(self, pipe: Any, texts: list[str]) -> list[str]:
        """``texts`` with every embedding name written as its tokens, the embeddings loaded into ``pipe`` first.
        RecipeError names an embedding that cannot be read or does not fit the model's text encoders."""
        files = self.available()
        wanted = sorted({name for text in texts for name in names_in(text, files)})
        if not wanted:
            return list(texts)
        with self._lock:
            replacements = {name: self._ensure_loaded(pipe, self._embedding(name, files[name])) for name in wanted}
        out = []
        for text in texts:
            for name, tokens in replacements.items():
                text = _word(name).sub(tokens, text)
            out.append(text)
        return out

    def _embedding(self, name: str, path: Path) -> Embedding:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        digest = self._hashes.get(key)
        if digest is None:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self._hashes[key] = digest
        return Embedding(name, path, digest)

    def _ensure_loaded(self, pipe: Any, embedding: Embedding) -> str:
        named = [("tokenizer", "text_encoder", "clip_l"), ("tokenizer_2", "text_encoder_2", "clip_g")]
        pairs: list[tuple[Any, Any, str]] = [
            (getattr(pipe, tok), getattr(pipe, enc), key) for tok, enc, key in named
            if getattr(pipe, tok, None) is not None and getattr(pipe, enc, None) is not None
        ]
        count = 0
        vectors: dict[str, torch.Tensor] | None = None
        for tokenizer, encoder, key in pairs:
            loaded = self._loaded.setdefault(tokenizer, {})
            if embedding.token in loaded:
                count = loaded[embedding.token]
                continue
            vectors = vectors if vectors is not None else read_vectors(embedding.path)
            rows = vectors.get(key)
            width = encoder.get_input_embeddings().weight.shape[-1]
            if rows is None or rows.shape[-1] != width:
                found = ", ".join(f"{k} {v.shape[-1]}" for k, v in vectors.items())
                raise RecipeError(f"embedding {embedding.name!r} ({embedding.path.name}) does not fit this model: its "
                                  f"vectors are {found} wide, the text encoder's ({key}) are {width}")
            pipe.load_textual_inversion({"emb_params": rows.to(encoder.dtype)}, token=embedding.token,
                                        text_encoder=encoder, tokenizer=tokenizer)
            loaded[embedding.token] = count = rows.shape[0]
        return " ".join([embedding.token] + [f"{embedding.token}_{i}" for i in range(1, count)])
