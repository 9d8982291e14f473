"""imageloop.engine: diffusers pipelines behind one request type.

The public surface::

    from imageloop.engine import Engine, GenerationRequest

    engine = Engine(settings)                       # model from settings.engine.model, loaded on first use
    result = engine.generate(GenerationRequest(prompt="a cat in the rain", seed=1), on_step=print)
    result.images[0].png                            # PNG bytes with A1111 "parameters"
    read_png_parameters(result.images[0].png)       # -> the GenerationRequest that reproduces it

Names are imported lazily so that ``from imageloop.engine import GenerationRequest`` does not import torch or
diffusers; ``Engine`` and the loader do when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imageloop.engine.cache import CacheStats, LRUCache
    from imageloop.engine.engine import Engine, EngineCaches, GeneratedImage, GenerationResult
    from imageloop.engine.loader import LoadedModel, Mode, load_model
    from imageloop.engine.model_files import Architecture, detect_architecture
    from imageloop.engine.pngmeta import (
        ImageParameters,
        encode_png,
        format_parameters,
        parse_parameters,
        read_png_image_parameters,
        read_png_parameters,
    )
    from imageloop.engine.progress import CancelToken, StepCallback
    from imageloop.engine.request import GenerationRequest, check_limits
    from imageloop.engine.schedulers import SCHEDULER_NAMES, canonical_scheduler_name, make_scheduler

_EXPORTS = {
    "Architecture": "loader",
    "CacheStats": "cache",
    "CancelToken": "progress",
    "Engine": "engine",
    "EngineCaches": "engine",
    "GeneratedImage": "engine",
    "GenerationRequest": "request",
    "GenerationResult": "engine",
    "ImageParameters": "pngmeta",
    "LRUCache": "cache",
    "LoadedModel": "loader",
    "Mode": "loader",
    "SCHEDULER_NAMES": "schedulers",
    "StepCallback": "progress",
    "canonical_scheduler_name": "schedulers",
    "check_limits": "request",
    "detect_architecture": "loader",
    "encode_png": "pngmeta",
    "format_parameters": "pngmeta",
    "load_model": "loader",
    "make_scheduler": "schedulers",
    "parse_parameters": "pngmeta",
    "read_png_image_parameters": "pngmeta",
    "read_png_parameters": "pngmeta",
}

__all__ = [
    "SCHEDULER_NAMES",
    "Architecture",
    "CacheStats",
    "CancelToken",
    "Engine",
    "EngineCaches",
    "GeneratedImage",
    "GenerationRequest",
    "GenerationResult",
    "ImageParameters",
    "LRUCache",
    "LoadedModel",
    "Mode",
    "StepCallback",
    "canonical_scheduler_name",
    "check_limits",
    "detect_architecture",
    "encode_png",
    "format_parameters",
    "load_model",
    "make_scheduler",
    "parse_parameters",
    "read_png_image_parameters",
    "read_png_parameters",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'imageloop.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"imageloop.engine.{module}"), name)
    globals()[name] = value
    return value
