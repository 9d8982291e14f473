"""The generation engine: one loaded model, requests in, PNGs with their parameters out.

``Engine.generate`` reads as the numbered steps of a run (as diffusers' pipelines do): check the request, resolve
defaults (request, then recipe, then the model's own), prepare the pipeline variant and LoRAs, answer from the result
cache if possible, encode the prompts (cached), denoise with a step callback, and encode the PNGs.
``Engine.generate_many`` runs compatible requests in one pipeline call for the server's dynamic batching.
Checking a request and resolving it into a run plan live in :mod:`imageloop.engine.plan`.
The engine is thread-safe; runs are serialised on one lock because they share one pipeline.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imageloop.config import Settings
from imageloop.engine.autocast import autocast_name, decode_latents, denoise_autocast, resolve_autocast
from imageloop.engine.cache import MODEL_RESIDENCY, CacheStats, LRUCache, PromptKey, result_key
from imageloop.engine.conditioning import EncodedPrompt, PromptWeighting, batch_for_pipeline, encode_prompt
from imageloop.engine.controlnet import check_controlnet_fits, load_controlnet
from imageloop.engine.embedded_negative import negative_pass, split_embedded_negative
from imageloop.engine.embeddings import EmbeddingLoader
from imageloop.engine.families import flow_scheduler, is_flow_family, pipeline_prompt_kwargs
from imageloop.engine.flow_conditioning import encode_flow_prompt
from imageloop.engine.ip_adapter import IpAdapter, reference_kwargs
from imageloop.engine.loader import LoadedModel, Mode, load_model, pipeline_variant
from imageloop.engine.lora import LoraManager
from imageloop.engine.model_files import resolve_model_source
from imageloop.engine.plan import RunPlan, batch_chunks, check_request, hires_steps_run, make_plan, named_recipe
from imageloop.engine.pngmeta import encode_png, format_parameters
from imageloop.engine.progress import CancelToken, RunClock, StepCallback, StepReporter
from imageloop.engine.recipes import Recipe, RecipeStore
from imageloop.engine.request import GenerationRequest, decode_image, hires_size
from imageloop.engine.safety import nsfw_possible
from imageloop.engine.schedulers import make_scheduler, seed_noise_sampler
from imageloop.errors import ImageloopError, InvalidRequestError, RecipeError

RESULT_CACHE_MAX_BYTES = 256 * 1024 * 1024  # PNGs kept by the result cache, whatever its entry count


@dataclass(frozen=True)
class GeneratedImage:
    """One image: PNG bytes carrying its A1111 ``parameters`` chunk, and the seed that reproduces it alone."""

    png: bytes
    seed: int
    width: int
    height: int


@dataclass(frozen=True)
class GenerationResult:
    """A finished run: the fully resolved request (seed filled in), its images, and which model made them."""

    request: GenerationRequest
    images: list[GeneratedImage]
    model_id: str
    model_version: str
    timings: dict[str, float] = field(default_factory=dict)
    from_cache: bool = False


@dataclass(frozen=True)
class EngineCaches:
    """The prompt-encoding and result caches. Engines of one model may share them (the embedded workers do): the
    keys name the model version, adapters and autocast, so an entry made by one engine is valid for the others."""

    prompt: LRUCache[PromptKey, EncodedPrompt]
    result: LRUCache[str, GenerationResult]

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineCaches:
        return cls(LRUCache(settings.engine.text_encoder_cache_size),
                   LRUCache(settings.engine.result_cache_size, weigh=_png_bytes, max_weight=RESULT_CACHE_MAX_BYTES))


class Engine:
    """Generates images with one model (``settings.engine.model`` unless ``model`` is given), loaded on first use.

    ``caches`` lets several engines share one prompt and result cache (default: caches of its own)."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: str | Path | None = None,
        config: Path | None = None,
        controlnet: str | Path | None = None,
        caches: EngineCaches | None = None,
        ip_adapter: str | Path | None = None,
    ) -> None:
        self.settings = settings
        self.model_spec = model if model is not None else settings.engine.model
        self.config_dir = config if config is not None else settings.engine.model_config_dir
        self.controlnet_spec = controlnet if controlnet is not None else settings.engine.controlnet
        self.ip_adapter_spec = ip_adapter if ip_adapter is not None else settings.engine.ip_adapter
        if settings.engine.threads > 0:
            torch.set_num_threads(settings.engine.threads)
        self.recipes = RecipeStore(settings)
        self.loras = LoraManager(settings)
        self.embeddings = EmbeddingLoader(settings.embeddings_dir)
        shared = caches if caches is not None else EngineCaches.from_settings(settings)
        self.prompt_cache: LRUCache[PromptKey, EncodedPrompt] = shared.prompt
        self.result_cache: LRUCache[str, GenerationResult] = shared.result
        self._model: LoadedModel | None = None
        self._controlnet: Any = None
        self._controlnet_version = ""
        self._ip_adapter: IpAdapter | None = None
        self._residency_key: str | None = None
        self._release_pending = False
        self._depth = 0  # runs in progress on this thread (generate_many runs generate inside)
        self._lock = threading.RLock()

    # -- model ---------------------------------------------------------------------------------------------------

    @property
    def model(self) -> LoadedModel:
        """The loaded model (loads it on first access; ModelLoadError if it cannot be loaded)."""
        with self._lock:
            if self._model is None:
                # Other models beyond engine.max_loaded_models are released before this one loads.
                MODEL_RESIDENCY.admit(self._model_key(), self, self.settings.engine.max_loaded_models)
                self._model = load_model(self.model_spec, self.settings, config=self.config_dir)
            return self._model

    def _model_key(self) -> str:
        if self._residency_key is None:
            path = resolve_model_source(self.model_spec, self.settings)
            self._residency_key = f"{path}|{self.config_dir or ''}"
        return self._residency_key

    def release_model(self) -> None:
        """Drop the loaded model, its ControlNet and IP-Adapter so their memory can be freed (the next request loads
        them again); a run in progress finishes first. The model residency calls this when another model loads."""
        if self._lock.acquire(blocking=False):
            try:
                self._release_pending = True
                if self._depth == 0:
                    self._drop_model()
            finally:
                self._lock.release()
        else:
            self._release_pending = True  # the run holding the lock drops it when it ends

    def _drop_model(self) -> None:
        self._model, self._controlnet, self._controlnet_version, self._ip_adapter = None, None, "", None
        self._release_pending = False

    @contextmanager
    def _running(self) -> Iterator[None]:
        """Hold the engine for a run; a release asked for meanwhile happens when the outermost run ends."""
        with self._lock:
            self._depth += 1
            if self._model is not None:
                MODEL_RESIDENCY.touch(self._model_key())
            try:
                yield
            finally:
                self._depth -= 1
                if self._release_pending and self._depth == 0:
                    self._drop_model()

    def _controlnet_model(self) -> tuple[Any, str]:
        if self._controlnet is None:
            if self.controlnet_spec is None:
                raise InvalidRequestError(
                    "control_image", "no ControlNet model is configured",
                    allowed="set --control-model PATH or IMAGELOOP_ENGINE__CONTROLNET",
                )
            model = self.model
            unet_config = dict(model.pipe.unet.config)
            if unet_config.get("encoder_hid_dim_type") == "ip_image_proj":  # an attached IP-Adapter's, not the model's
                unet_config["encoder_hid_dim_type"] = None
            controlnet, version = load_controlnet(
                self.controlnet_spec, self.settings, model.device, model.dtype, unet_config
            )
            check_controlnet_fits(controlnet.config, model.pipe.unet.config, self.controlnet_spec)
            self._controlnet, self._controlnet_version = controlnet, version
        return self._controlnet, self._controlnet_version

    def _ip_adapter_model(self) -> IpAdapter:
        if self._ip_adapter is None:
            if self.ip_adapter_spec is None:
                raise InvalidRequestError("ip_image", "no IP-Adapter is configured",
                                          allowed="set --ip-adapter NAME or IMAGELOOP_ENGINE__IP_ADAPTER")
            model = self.model
            self._ip_adapter = IpAdapter(self.ip_adapter_spec, self.settings, model.device, model.dtype)
        return self._ip_adapter

    @property
    def autocast(self) -> torch.dtype | None:
        """The dtype the denoising runs under autocast (``engine.cpu_autocast``; bf16 on a capable CPU), or None."""
        model = self.model
        return resolve_autocast(self.settings.engine.cpu_autocast, model.device, model.dtype)

    def cache_stats(self) -> dict[str, CacheStats]:
        """Hits, misses and sizes of the prompt-encoding and result caches (for metrics)."""
        return {"prompt": self.prompt_cache.stats, "result": self.result_cache.stats}

    # -- checking and resolving ------------------------------------------------------------------------------------

    def check(self, request: GenerationRequest) -> Recipe | None:
        """Check everything about ``request`` that needs no model: limits, recipe, style, images.

        Returns the recipe it names (or None): the one the request carries (``request.with_recipe``, e.g. a user's
        private recipe) or else the shared recipe of that name. Raises InvalidRequestError / UnknownNameError naming
        the field.
        """
        return check_request(request, self.settings, self.recipes, controlnet_spec=self.controlnet_spec,
                             ip_adapter_spec=self.ip_adapter_spec, ip_adapter_loaded=self._ip_adapter is not None)

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with every default filled in (seed too, if it was None), as a GenerationResult records it."""
        return self._plan(request, self.check(request)).request

    def nsfw_possible(self, request: GenerationRequest) -> bool:
        """Whether ``request``'s images could show nudity, so that the NSFW check has something to find (see
        :mod:`imageloop.engine.safety`)."""
        return nsfw_possible(self.model.path, request, named_recipe(request, self.recipes))

    def _plan(self, request: GenerationRequest, recipe: Recipe | None) -> RunPlan:
        return make_plan(request, recipe, self.model, self.settings)

    # -- generation ------------------------------------------------------------------------------------------------

    def generate(
        self, request: GenerationRequest, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> GenerationResult:
        """Run ``request``; same request and seed give identical PNG bytes.

        ``on_step(step, total)`` is called after each denoising step; returning False (or cancelling ``cancel``)
        stops the run with GenerationCancelled and no image. A repeated request with an explicit seed is answered
        from the result cache without running the model.
        """
        timings: dict[str, float] = {}
        clock = RunClock(timings)
        reporter = StepReporter(on_step, cancel)
        # 1. Check inputs: nothing here touches the model.
        recipe = self.check(request)
        reporter.raise_if_stopped()
        clock.lap("check")
        with self._running():
            loads_now = self._model is None
            model = self.model
            clock.lap("load")
            if loads_now and model.acceleration.compile_s is not None:
                timings["compile"] = model.acceleration.compile_s  # part of "load": the compiling warm-up run
            # 2. Resolve defaults: request, then recipe, then the model's own.
            plan = self._plan(request, recipe)
            # 3. Prepare the pipeline variant, its sampler and the recipe's LoRAs.
            pipe, extra_version = self._prepare(plan)
            clock.lap("prepare")
            # 4. Answer from the result cache when this exact run was done before.
            key = result_key(plan.request.canonical_json(), self._version_key(pipe, extra_version))
            cached = self.result_cache.get(key) if not plan.random_seed else None
            if cached is not None:
                clock.lap("cache")
                return dataclasses.replace(cached, timings=clock.total(), from_cache=True)
            # 5. Encode the prompts (LRU cache keyed by model, active LoRAs and text).
            kwargs = self._prompt_kwargs(pipe, [self._encode_pair(pipe, plan)] * plan.request.num_images)
            clock.lap("encode")
            # 6. Denoise, reporting each step; a stop request interrupts the pipeline.
            images = self._run(pipe, plan, kwargs, plan.seeds, reporter)
            clock.lap("denoise")
            # 6b. Hires fix: upscale and denoise again at the larger size (a second, img2img pass).
            if plan.request.hires_scale is not None:
                images = self._hires(plan, kwargs, images, reporter)
                clock.lap("hires")
            # 7. Encode PNGs with their A1111 parameters.
            result = GenerationResult(plan.request, self._pngs(plan, images, model), model.name, plan.model_version)
            clock.lap("png")
            # 8. Remember the result (explicit seeds only: a random seed is not a request anyone can repeat).
            if not plan.random_seed:
                self.result_cache.put(key, result)
            return dataclasses.replace(result, timings=clock.total())

    def generate_many(
        self,
        requests: Sequence[GenerationRequest],
        on_step: StepCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> list[GenerationResult]:
        """Run several requests, sharing one pipeline call among compatible ones; results in request order.

        Compatible = text-to-image with the same size, steps, CFG, sampler and recipe; prompts, styles, seeds and
        batch sizes may differ. Each image still gets its own generator (seed + i), so it matches a separate run up
        to floating-point noise (prompts of different lengths are padded to the longest, as A1111 does).
        Every request is checked first; the first invalid one raises and nothing runs. ``on_step`` is called after
        each step of every pipeline call; returning False (or cancelling ``cancel``) stops the whole list with
        GenerationCancelled.
        """
        recipes = [self.check(request) for request in requests]
        results: list[GenerationResult | None] = [None] * len(requests)
        with self._running():
            model = self.model
            plans = [self._plan(request, recipe) for request, recipe in zip(requests, recipes, strict=True)]
            groups: dict[tuple[Any, ...], list[int]] = {}
            for index, plan in enumerate(plans):
                if plan.mode is Mode.TXT2IMG and plan.request.hires_scale is None and plan.request.ip_image is None:
                    groups.setdefault(plan.batch_key(), []).append(index)
                else:
                    results[index] = self.generate(requests[index], on_step, cancel)  # img2img / ControlNet alone
            for indices in groups.values():
                for chunk in batch_chunks(indices, plans, self.settings.engine.max_images):
                    group = self._run_group(model, [plans[i] for i in chunk], StepReporter(on_step, cancel))
                    for index, result in zip(chunk, group, strict=True):
                        results[index] = result
        return [result for result in results if result is not None]

    def _run_group(self, model: LoadedModel, plans: list[RunPlan], reporter: StepReporter) -> list[GenerationResult]:
        started = time.perf_counter()
        pipe, extra_version = self._prepare(plans[0])
        version_key = self._version_key(pipe, extra_version)
        out: dict[int, GenerationResult] = {}
        todo: list[int] = []
        for i, plan in enumerate(plans):
            cached = None if plan.random_seed else self.result_cache.get(
                result_key(plan.request.canonical_json(), version_key))
            if cached is not None:
                out[i] = dataclasses.replace(cached, from_cache=True)
            else:
                todo.append(i)
        if todo:
            pairs = [self._encode_pair(pipe, plans[i]) for i in todo for _ in range(plans[i].request.num_images)]
            seeds = [seed for i in todo for seed in plans[i].seeds]
            reporter.raise_if_stopped()
            images = self._run(pipe, plans[todo[0]], self._prompt_kwargs(pipe, pairs), seeds, reporter)
            elapsed = {"total": time.perf_counter() - started, "batch_images": float(len(seeds))}
            for i in todo:
                plan = plans[i]
                mine, images = images[: plan.request.num_images], images[plan.request.num_images:]
                result = GenerationResult(plan.request, self._pngs(plan, mine, model), model.name,
                                          plan.model_version, timings=elapsed)
                if not plan.random_seed:
                    self.result_cache.put(result_key(plan.request.canonical_json(), version_key), result)
                out[i] = result
        return [out[i] for i in range(len(plans))]

    # -- the parts -------------------------------------------------------------------------------------------------

    def _prepare(self, plan: RunPlan) -> tuple[Any, str]:
        model = self.model
        controlnet, controlnet_version = (None, "")
        if plan.mode in (Mode.CONTROLNET, Mode.CONTROLNET_IMG2IMG):
            controlnet, controlnet_version = self._controlnet_model()
        pipe = pipeline_variant(model, plan.mode, controlnet)
        pipe.scheduler = self._scheduler(plan.scheduler)
        if plan.request.ip_image is not None:
            adapter = self._ip_adapter_model()
            adapter.attach(pipe, plan.request.ip_scale or 0.0)
            controlnet_version += f"|ip:{adapter.version}"
        elif self._ip_adapter is not None:
            self._ip_adapter.detach(pipe)
        try:
            self.loras.apply(pipe, plan.recipe)
        except ImageloopError:
            raise
        except Exception as exc:  # a LoRA that loads but does not fit this model
            raise RecipeError(f"recipe {plan.request.recipe!r} cannot be applied: {exc}") from exc
        return pipe, controlnet_version

    def _scheduler(self, name: str) -> Any:
        model = self.model
        if is_flow_family(model.architecture.value):
            return flow_scheduler(name, model.scheduler_config, model.architecture.value)
        return make_scheduler(name, model.scheduler_config)

    def _schedule(self, steps: int, scheduler: str) -> dict[str, Any]:
        """The pipeline's step arguments: the model's own timesteps (its ``imageloop.json``) when the run uses its
        default sampler and as many steps as they have, else diffusers' spacing for ``steps``."""
        own = self.model.defaults
        if own.timesteps is not None and scheduler == own.scheduler and steps == len(own.timesteps):
            return {"num_inference_steps": steps, "timesteps": list(own.timesteps)}
        return {"num_inference_steps": steps}

    @property
    def prompt_weighting(self) -> PromptWeighting:
        """How prompt weights act: the ``engine.prompt_weighting`` setting, else the model's own choice."""
        chosen = self.settings.engine.prompt_weighting
        return self.model.defaults.prompt_weighting if chosen == "model" else chosen

    def _version_key(self, pipe: Any, extra_version: str) -> str:
        # What a result depends on besides the request: model weights, ControlNet weights, active LoRA adapters,
        # the prompt weighting, the denoising's autocast (bf16 images differ slightly from fp32 ones), and a
        # guidance-embedded model's negative scale.
        negative = f"|{self.settings.engine.embedded_negative_scale!r}" if self.model.guidance_embedded else ""
        return (f"{self.model.version}|{extra_version}|{self.loras.active(pipe)!r}|{self.prompt_weighting}|"
                f"{autocast_name(self.autocast)}{negative}")

    def _encode_pair(self, pipe: Any, plan: RunPlan) -> tuple[EncodedPrompt, EncodedPrompt]:
        adapters = repr(self.loras.active(pipe))
        # Embedding names become their tokens (named after the file's hash, so the cache key follows the file).
        prompt, negative = self.embeddings.prepare(pipe, [plan.prompt, plan.negative])
        positive = self._encode(pipe, adapters, prompt, plan.clip_skip)
        if not self.model.runs_negative_pass or (self.model.guidance_embedded and not plan.negative.strip()):
            # FLUX.1 is not given a negative; a guidance-embedded UNet runs a negative pass only for a negative prompt.
            return positive, positive
        return positive, self._encode(pipe, adapters, negative, plan.clip_skip)

    def _prompt_kwargs(self, pipe: Any, pairs: list[tuple[EncodedPrompt, EncodedPrompt]]) -> dict[str, Any]:
        return pipeline_prompt_kwargs(batch_for_pipeline(pipe, pairs), negative_pass=self.model.runs_negative_pass)

    def _encode(self, pipe: Any, adapters: str, text: str, clip_skip: int = 1) -> EncodedPrompt:
        weighting = self.prompt_weighting
        key = PromptKey(self.model.version, adapters, text, weighting, clip_skip)
        with torch.inference_mode():
            architecture = self.model.architecture.value
            if is_flow_family(architecture):
                return self.prompt_cache.get_or_compute(
                    key, lambda: encode_flow_prompt(pipe, architecture, text, weighting))
            return self.prompt_cache.get_or_compute(key, lambda: encode_prompt(pipe, text, weighting, clip_skip))

    def _run(
        self, pipe: Any, plan: RunPlan, kwargs: dict[str, Any], seeds: list[int], reporter: StepReporter
    ) -> list[Any]:
        call: dict[str, Any] = dict(kwargs)
        seed_noise_sampler(pipe.scheduler, seeds)
        call.update(
            **self._schedule(plan.steps, plan.scheduler),
            guidance_scale=plan.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=reporter.hook(later=hires_steps_run(plan)),
            output_type="pil",
        )
        request = plan.request
        size = (plan.width, plan.height)
        if request.init_image is not None:
            call["image"] = decode_image(request.init_image, "init_image").resize(size)
            call["strength"] = request.strength
        if request.control_image is not None:
            control = decode_image(request.control_image, "control_image").resize(size)
            call["control_image" if request.init_image is not None else "image"] = control
            call["controlnet_conditioning_scale"] = request.controlnet_conditioning_scale
        call.update(reference_kwargs(request.ip_image))
        # Plain img2img takes the image's size, except FLUX.1's and SD3's, which make their default size unless told.
        flow = is_flow_family(self.model.architecture.value)
        if request.init_image is None or request.control_image is not None or flow:
            call.update(width=plan.width, height=plan.height)
        return self._call(pipe, call, reporter)

    def _call(self, pipe: Any, call: dict[str, Any], reporter: StepReporter) -> list[Any]:
        autocast = self.autocast
        # A stop is looked for inside each step too, before each block of the denoiser and the ControlNet.
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        denoisers = (denoiser, getattr(pipe, "controlnet", None))
        # A guidance-embedded UNet's pipeline runs no negative pass: the engine adds one for a negative prompt.
        call, negative = (split_embedded_negative(call, self.settings.engine.embedded_negative_scale)
                          if self.model.guidance_embedded else (call, None))
        if autocast is None or is_flow_family(self.model.architecture.value):  # (flow latents: the pipe decodes)
            with torch.inference_mode(), denoise_autocast(autocast), reporter.inside(*denoisers), \
                    negative_pass(denoiser, negative):
                images = list(pipe(**call).images)
            reporter.raise_if_stopped()
            return images
        # Only the denoising under autocast; the fp32 latents are decoded by the VAE in fp32.
        call["output_type"] = "latent"
        with torch.inference_mode(), denoise_autocast(autocast), reporter.inside(*denoisers), \
                negative_pass(denoiser, negative):
            latents = pipe(**call).images
        reporter.raise_if_stopped()
        return decode_latents(pipe, latents)

    def _hires(self, plan: RunPlan, kwargs: dict[str, Any], images: list[Any], reporter: StepReporter) -> list[Any]:
        """A1111's hires fix: each image upscaled (Lanczos, in pixel space) by ``hires_scale`` and denoised again
        with img2img at ``hires_strength`` over ``hires_steps`` (A1111 runs ``steps * strength`` of them, as
        diffusers' img2img does); same prompts, sampler, LoRAs and seeds."""
        request = plan.request
        assert request.hires_scale is not None and request.hires_strength is not None
        size = hires_size(plan.width, plan.height, request.hires_scale)
        pipe = pipeline_variant(self.model, Mode.IMG2IMG, None)
        pipe.scheduler = self._scheduler(plan.scheduler)
        if request.ip_image is not None:  # the second pass keeps the reference image
            self._ip_adapter_model().attach(pipe, request.ip_scale or 0.0)
        seeds = plan.seeds
        seed_noise_sampler(pipe.scheduler, seeds)
        from PIL import Image

        call: dict[str, Any] = dict(kwargs)
        call.update(
            image=[image.resize(size, Image.Resampling.LANCZOS) for image in images],
            strength=request.hires_strength,
            **self._schedule(request.hires_steps or plan.steps, plan.scheduler),
            guidance_scale=plan.guidance_scale,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=reporter.hook(done=reporter.steps),
            output_type="pil",
            **reference_kwargs(request.ip_image),
        )
        if is_flow_family(self.model.architecture.value):  # they make their default size unless told
            call.update(width=size[0], height=size[1])
        return self._call(pipe, call, reporter)

    def _pngs(self, plan: RunPlan, images: list[Any], model: LoadedModel) -> list[GeneratedImage]:
        out = []
        autocast = self.autocast
        extras = {"Autocast": autocast_name(autocast)} if autocast is not None else {}
        if plan.request.ip_image is not None and self._ip_adapter is not None:
            extras["IP-Adapter"] = self._ip_adapter.name
        extras.update(plan.unused)
        for image, seed in zip(images, plan.seeds, strict=True):
            text = format_parameters(plan.request, seed=seed, model_name=model.name, model_hash=model.version,
                                     extras=extras)
            out.append(GeneratedImage(encode_png(image, text), seed, image.width, image.height))
        return out


def _png_bytes(result: GenerationResult) -> int:
    return sum(len(image.png) for image in result.images)
