"""What differs between the model families the engine runs: the flow-matching transformers (FLUX.1, SD3) next to
the UNet families (SD1.5, SDXL).

- **Parameters.** FLUX.1 is guidance-distilled: ``guidance_scale`` is the guidance value embedded into the
  transformer (dev: 3.5 by default), not classifier-free guidance, so there is no second, negative pass and no
  negative prompt. A request with a negative prompt on FLUX.1 is refused with an InvalidRequestError naming
  ``negative_prompt``; a style preset's negative part is left out and the PNG parameters say so
  (``Negative prompt: not used``). FLUX.1 schnell has no guidance embedding at all: a request's
  ``guidance_scale`` other than 0 is refused. SD3 runs true CFG with a negative prompt, as SD1.5/SDXL do.
- **Samplers.** Both families denoise with ``FlowMatchEulerDiscreteScheduler`` built on the model's own scheduler
  config; the only sampler name that applies is "Euler" (:data:`FLOW_SCHEDULERS`). Any other name is refused
  naming it and the family.
- **Sizes.** Width and height must be multiples of the VAE scale factor times the transformer's 2x2 patch (16 for
  the real models); diffusers would otherwise resize (FLUX) or fail (SD3).
- **Not (yet) for these families:** ControlNet and ``clip_skip`` (refused by name).
- **Guidance-embedded UNets.** An SD1.5/SDXL UNet with ``time_cond_proj_dim`` set (LCM-distilled models, our own
  few-step student) takes ``guidance_scale - 1`` as an embedding beside the timestep, and diffusers runs no
  unconditional pass for it. The engine adds one for a negative prompt (:mod:`imageloop.engine.embedded_negative`):
  a second UNet pass per step, only for images that have a negative prompt (:data:`NEGATIVE_SECOND_PASS`); without
  one such a model runs one pass per step. Without an ``imageloop.json`` it runs the LCM sampler in
  :data:`GUIDANCE_EMBEDDED_STEPS` steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageloop.errors import InvalidRequestError

FLOW_FAMILIES = frozenset({"flux", "sd3"})
FLOW_SCHEDULERS = ("Euler",)
FLOW_SCHEDULER_CLASS = "FlowMatchEulerDiscreteScheduler"
# Defaults of the released models (model cards): FLUX.1 dev 28 steps at guidance 3.5, schnell 4 steps with no
# guidance, SD3 28 steps at CFG 7.
FLUX_DEV_STEPS, FLUX_DEV_GUIDANCE = 28, 3.5
FLUX_SCHNELL_STEPS, FLUX_SCHNELL_GUIDANCE = 4, 0.0
SD3_STEPS, SD3_GUIDANCE = 28, 7.0
FLUX_DEFAULT_SAMPLE_SIZE = 128  # FluxPipeline's default latent side (1024 pixels with the 8x VAE)
NEGATIVE_NOT_USED = "not used (FLUX.1 has no negative prompt)"
NEGATIVE_SECOND_PASS = "A negative prompt costs a second UNet pass per step (guidance-embedded, LCM-distilled model)"
# Defaults of a guidance-embedded (LCM-distilled) UNet without an imageloop.json: LCM's few-step sampler.
GUIDANCE_EMBEDDED_STEPS, GUIDANCE_EMBEDDED_SCHEDULER = 4, "LCM"


def is_flow_family(architecture: str) -> bool:
    """True for the flow-matching transformer families (FLUX.1, SD3)."""
    return architecture in FLOW_FAMILIES


def negative_unused_reason(architecture: str) -> str | None:
    """Why a negative prompt has no effect on a model (FLUX.1), or None when it is used: the pipeline runs a negative
    pass (a guidance-embedded UNet gets one from the engine)."""
    if architecture == "flux":
        return NEGATIVE_NOT_USED
    return None


def has_negative_prompt(architecture: str) -> bool:
    """Whether a negative prompt is used: every family but FLUX.1 (a UNet that embeds the guidance included)."""
    return negative_unused_reason(architecture) is None


def config_embeds_guidance(unet_config: Mapping[str, Any]) -> bool:
    """Whether a UNet config (``unet/config.json``) has a guidance embedding (``time_cond_proj_dim`` set)."""
    return unet_config.get("time_cond_proj_dim") is not None


def unet_embeds_guidance(pipe: Any) -> bool:
    """Whether a loaded SD-family pipeline's UNet takes the guidance as an embedding (LCM-distilled); False for a
    pipeline without a UNet (FLUX.1, SD3)."""
    unet = getattr(pipe, "unet", None)
    return unet is not None and config_embeds_guidance(unet.config)


def has_guidance_embedding(pipe: Any) -> bool:
    """Whether a FLUX.1 transformer takes a guidance value (dev does, schnell does not)."""
    return bool(getattr(pipe.transformer.config, "guidance_embeds", False))


def family_defaults(architecture: str, pipe: Any) -> tuple[int, float, int]:
    """(steps, guidance, native side in pixels) of a flow-family pipeline, from its configs and the model cards."""
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    if architecture == "flux":
        sample = int(getattr(pipe, "default_sample_size", FLUX_DEFAULT_SAMPLE_SIZE))
        if has_guidance_embedding(pipe):
            return FLUX_DEV_STEPS, FLUX_DEV_GUIDANCE, sample * scale
        return FLUX_SCHNELL_STEPS, FLUX_SCHNELL_GUIDANCE, sample * scale
    return SD3_STEPS, SD3_GUIDANCE, int(pipe.transformer.config.sample_size) * scale


def native_side_from_configs(architecture: str, transformer: dict[str, Any], vae: dict[str, Any]) -> int:
    """The native side in pixels from the transformer's and VAE's ``config.json`` (no weights loaded)."""
    scale = int(2 ** (len(vae["block_out_channels"]) - 1))
    sample = FLUX_DEFAULT_SAMPLE_SIZE if architecture == "flux" else int(transformer["sample_size"])
    return sample * scale


def flow_scheduler(name: str, model_config: dict[str, Any], architecture: str) -> Any:
    """A fresh FlowMatchEulerDiscreteScheduler on the model's config for sampler ``name``; InvalidRequestError
    naming ``scheduler`` when the name does not apply to the family."""
    check_flow_scheduler(name, architecture)
    import diffusers

    config = {key: value for key, value in model_config.items() if key != "_use_default_values"}
    return getattr(diffusers, FLOW_SCHEDULER_CLASS).from_config(config)


def check_flow_scheduler(name: str, architecture: str) -> None:
    """InvalidRequestError naming ``scheduler`` unless ``name`` applies to a flow-family model."""
    if name not in FLOW_SCHEDULERS:
        raise InvalidRequestError(
            "scheduler", f"{name!r} does not apply to {architecture} models (they denoise with flow-matching Euler)",
            value=name, allowed=", ".join(FLOW_SCHEDULERS))


def check_flow_request(
    architecture: str, pipe: Any, *, negative_prompt: str, guidance_scale: float | None, clip_skip: int | None,
    control: bool, width: int, height: int,
) -> None:
    """Refuse, naming the field, what a flow-family model cannot honour (see the module docstring)."""
    if architecture == "flux" and negative_prompt.strip():
        raise InvalidRequestError(
            "negative_prompt", "FLUX.1 models have no negative prompt (guidance-distilled: guidance_scale is the "
            "embedded guidance, there is no unconditional pass)", value=negative_prompt, allowed="an empty text")
    if architecture == "flux" and not has_guidance_embedding(pipe) and guidance_scale not in (None, 0.0):
        raise InvalidRequestError("guidance_scale", "this FLUX.1 model (schnell-style) takes no guidance",
                                  value=guidance_scale, allowed="0 or unset")
    if clip_skip is not None:
        raise InvalidRequestError("clip_skip", f"does not apply to {architecture} models", value=clip_skip)
    if control:
        raise InvalidRequestError("control_image", f"ControlNet is not supported for {architecture} models yet")
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    multiple = scale * 2
    # SD3's positional embedding covers a fixed grid of patches (3072 pixels a side for the released models).
    grid = getattr(pipe.transformer.config, "pos_embed_max_size", None) if architecture == "sd3" else None
    longest = int(grid) * int(pipe.transformer.config.patch_size) * scale if grid else None
    for field, value in (("width", width), ("height", height)):
        if value % multiple or (longest is not None and value > longest):
            allowed = f"a multiple of {multiple}" + (f" up to {longest}" if longest is not None else "")
            raise InvalidRequestError(field, f"{value} does not fit a {architecture} model", value=value,
                                      allowed=allowed)


def pipeline_prompt_kwargs(kwargs: dict[str, Any], *, negative_pass: bool) -> dict[str, Any]:
    """The prompt keyword arguments the model's pipeline takes: one without a negative pass gets no negative
    embeddings (FLUX.1 would run "true CFG" with them, which the distilled model is not made for)."""
    if negative_pass:
        return kwargs
    return {key: value for key, value in kwargs.items() if not key.startswith("negative_")}
