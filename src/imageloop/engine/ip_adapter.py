"""IP-Adapter: a reference image steers what the model draws (SD1.5 and SDXL), through diffusers'
``load_ip_adapter`` with local files only.

The adapter is a ``.safetensors`` file of ``image_proj.*`` and ``ip_adapter.*`` tensors (the layout of the files
published for diffusers and A1111), named in the data dir's ``ip-adapters/`` or given as a path. Its image encoder
is a ``CLIPVisionModelWithProjection`` folder: ``engine.ip_image_encoder``, else an ``image_encoder`` folder beside
the adapter file (the layout the adapters are published in), else ``ip-adapters/image_encoder``. The encoder is
registered on the pipeline before the adapter loads, so diffusers never looks for it on the hub.

The adapter changes the UNet's attention processors, which every pipeline variant of a model shares; a request
without a reference image detaches it again (diffusers' ``unload_ip_adapter``), so plain requests run exactly as
before. Attaching reads the file again; consecutive reference-image requests keep it attached.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings
from imageloop.engine.loader import error_reason, quiet_loading
from imageloop.engine.model_files import content_hash, read_checkpoint_keys
from imageloop.errors import ImageloopError, InvalidRequestError, ModelLoadError, UnsupportedModelError

ADAPTER_SUFFIX = ".safetensors"
ENCODER_FOLDER = "image_encoder"
_ADAPTER_PREFIXES = ("image_proj.", "ip_adapter.")


def resolve_ip_adapter_path(spec: str | Path, settings: Settings) -> Path:
    """Where IP-Adapter ``spec`` lives: a path, or a name (suffix optional) in ``settings.ip_adapters_dir``;
    ModelLoadError naming both places otherwise."""
    text = str(spec)
    library = settings.ip_adapters_dir
    for path in (Path(text).expanduser(), library / text, library / f"{text}{ADAPTER_SUFFIX}"):
        if path.is_file():
            return path
    raise ModelLoadError(f"IP-Adapter {text!r} not found: no such file, and no {text}{ADAPTER_SUFFIX} in {library}")


def resolve_image_encoder_path(adapter: Path, settings: Settings) -> Path:
    """The image encoder folder for ``adapter`` (see the module docstring); ModelLoadError naming where it looked."""
    spec = settings.engine.ip_image_encoder
    if spec is not None:
        places = [Path(spec).expanduser(), settings.ip_adapters_dir / spec]
    else:
        places = [adapter.parent / ENCODER_FOLDER, settings.ip_adapters_dir / ENCODER_FOLDER]
    for place in places:
        if (place / "config.json").is_file():
            return place
    looked = " or ".join(str(place) for place in places)
    raise ModelLoadError(f"IP-Adapter {adapter.name}: its image encoder (a CLIPVisionModelWithProjection folder with "
                         f"config.json) is not at {looked}; set IMAGELOOP_ENGINE__IP_IMAGE_ENCODER")


def check_adapter_file(path: Path) -> None:
    """UnsupportedModelError unless ``path`` holds IP-Adapter tensors (``image_proj.*`` and ``ip_adapter.*``)."""
    keys = read_checkpoint_keys(path)
    if not all(any(key.startswith(prefix) for key in keys) for prefix in _ADAPTER_PREFIXES):
        raise UnsupportedModelError(f"{path}: not an IP-Adapter (it needs image_proj.* and ip_adapter.* tensors; "
                                    f"first keys: {', '.join(sorted(keys)[:3])})")


class IpAdapter:
    """One IP-Adapter and its image encoder, loaded for one model's pipelines (which share one UNet).

    ``version`` hashes the adapter file and the encoder folder, so results made with it are cached apart.
    """

    def __init__(self, spec: str | Path, settings: Settings, device: torch.device, dtype: torch.dtype) -> None:
        self.path = resolve_ip_adapter_path(spec, settings)
        check_adapter_file(self.path)
        encoder_dir = resolve_image_encoder_path(self.path, settings)
        self.name = self.path.stem
        try:
            with quiet_loading():
                from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

                encoder: Any = CLIPVisionModelWithProjection.from_pretrained(encoder_dir, dtype=dtype,
                                                                             local_files_only=True)
                if (encoder_dir / "preprocessor_config.json").is_file():
                    processor = CLIPImageProcessor.from_pretrained(encoder_dir, local_files_only=True)
                else:
                    side = int(encoder.config.image_size)
                    processor = CLIPImageProcessor(size=side, crop_size=side)
        except Exception as exc:  # transformers raises many types for a bad folder
            raise ModelLoadError(f"{encoder_dir}: cannot load the IP-Adapter image encoder: {error_reason(exc)}") \
                from exc
        self.encoder: Any = encoder.to(device).eval()
        self.processor: Any = processor
        digest = hashlib.sha256(f"{content_hash(self.path)}|{content_hash(encoder_dir)}".encode())
        self.version = digest.hexdigest()
        self._attached_unet: Any = None

    def attach(self, pipe: Any, scale: float) -> None:
        """Make ``pipe`` take ``ip_adapter_image`` at ``scale``: the encoder registered, the adapter's attention
        layers on its UNet (once per UNet). ModelLoadError when the adapter does not fit the model; InvalidRequestError
        for a model without a UNet (FLUX.1, SD3: their IP-Adapters are not supported)."""
        if getattr(pipe, "unet", None) is None:
            raise InvalidRequestError("ip_image", f"IP-Adapter runs on SD1.5 and SDXL models, not on "
                                      f"{type(pipe).__name__}")
        if getattr(pipe, "image_encoder", None) is not self.encoder:
            pipe.register_modules(image_encoder=self.encoder, feature_extractor=self.processor)
        if self._attached_unet is not pipe.unet:
            try:
                with quiet_loading():
                    pipe.load_ip_adapter(str(self.path.parent), subfolder="", weight_name=self.path.name,
                                         image_encoder_folder=None, local_files_only=True)
            except ImageloopError:
                raise
            except Exception as exc:  # shape mismatches: an SDXL adapter on SD1.5 or the reverse
                self.detach(pipe)
                raise ModelLoadError(f"{self.path}: the IP-Adapter does not fit the loaded model: "
                                     f"{error_reason(exc)}") from exc
            self._attached_unet = pipe.unet
        pipe.set_ip_adapter_scale(scale)

    def detach(self, pipe: Any) -> None:
        """Restore ``pipe``'s UNet to plain attention (a no-op when the adapter is not attached)."""
        unet = getattr(pipe, "unet", None)
        if unet is None or (self._attached_unet is None and getattr(unet, "encoder_hid_proj", None) is None):
            return
        with quiet_loading():
            pipe.unload_ip_adapter()
        self._attached_unet = None

    @property
    def attached(self) -> bool:
        """Whether the adapter's layers are on the UNet now."""
        return self._attached_unet is not None


def reference_kwargs(ip_image: bytes | None) -> dict[str, Any]:
    """The pipeline-call arguments for a request's reference image: ``ip_adapter_image``, or nothing."""
    if ip_image is None:
        return {}
    from imageloop.engine.request import decode_image

    return {"ip_adapter_image": decode_image(ip_image, "ip_image")}
