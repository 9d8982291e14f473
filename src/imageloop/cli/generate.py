"""``imageloop generate PROMPT -o out.png``: one request through the engine, with a progress bar.

``--from-png`` (a PNG from Imageloop, A1111, Forge or Civitai) and ``--from-text`` (its ``parameters`` text as
pasted) start from those settings; each one that cannot be honoured is printed as a warning line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imageloop.cli import app
from imageloop.config import Settings, load_settings
from imageloop.errors import InvalidRequestError

if TYPE_CHECKING:
    from imageloop.engine.infotext import ImportedParameters

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> (512, 768); InvalidRequestError naming ``--size`` otherwise."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise InvalidRequestError("--size", f"cannot read {text!r}", value=text, allowed="WIDTHxHEIGHT, e.g. 512x512")
    return int(match[1]), int(match[2])


def _read_image(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(option, f"cannot read {path}: {exc.strerror or exc}", value=str(path)) from None


def _imported(
    from_png: Path | None, from_text: str | None, settings: Settings, model: str | Path | None = None
) -> ImportedParameters | None:
    """The settings of ``--from-png`` or ``--from-text`` (a file, or - for standard input) for ``model`` (default:
    the configured one), or None."""
    from imageloop.engine.infotext import import_parameters
    from imageloop.engine.model_files import model_family
    from imageloop.engine.pngmeta import png_parameters_text

    if from_png is not None and from_text is not None:
        raise InvalidRequestError("--from-text", "give --from-png or --from-text, not both")
    if from_png is not None:
        png = _read_image(from_png, "--from-png")
        assert png is not None
        text = png_parameters_text(png)
    elif from_text is not None:
        try:
            text = sys.stdin.read() if from_text == "-" else Path(from_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidRequestError("--from-text", f"cannot read {from_text}: {exc}", value=from_text) from None
    else:
        return None
    spec = model or settings.engine.model
    return import_parameters(text, settings, family=model_family(spec, settings))


def output_paths(out: Path, count: int) -> list[Path]:
    """``out`` for one image; ``name-0.png``, ``name-1.png``... for a batch."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(
        help="What to draw (A1111 attention syntax allowed: (word:1.3), \\[word]); optional with --from-png.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write (name-0.png, name-1.png... for -n > 1).")]
    = Path("out.png"),
    seed: Annotated[int | None, typer.Option(help="Seed; random when left out (printed). Image i uses seed+i.")]
    = None,
    negative: Annotated[str | None, typer.Option("--negative", help="Negative prompt.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: recipe, then the model's).")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="CFG scale (default: recipe, then the model's).")] = None,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT, multiples of 8 (default: the model's).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras'.")]
    = None,
    recipe: Annotated[str | None, typer.Option(help="Recipe name (see `imageloop recipes list`).")] = None,
    style: Annotated[str | None, typer.Option(help="Style preset (see `imageloop styles`).")] = None,
    model: Annotated[str | None, typer.Option(help="'embedded', a diffusers folder or a .safetensors file.")] = None,
    config: Annotated[Path | None, typer.Option(help="Diffusers config folder for a single-file checkpoint.")]
    = None,
    init_image: Annotated[Path | None, typer.Option("--init-image", help="img2img source image.")] = None,
    strength: Annotated[float | None, typer.Option(help="img2img denoising strength in (0, 1] (default 0.75).")]
    = None,
    control_image: Annotated[Path | None, typer.Option("--control-image", help="ControlNet image (sketch...).")]
    = None,
    control_model: Annotated[str | None, typer.Option("--control-model", help="ControlNet folder or file.")] = None,
    control_scale: Annotated[float | None, typer.Option("--control-scale", help="ControlNet weight (default 1).")]
    = None,
    ip_image: Annotated[Path | None, typer.Option("--ip-image", help="IP-Adapter reference image: its look "
                                                                     "steers the result.")] = None,
    ip_scale: Annotated[float | None, typer.Option("--ip-scale", help="How strongly the reference steers, 0..2 "
                                                                      "(default 0.6).")] = None,
    ip_adapter: Annotated[str | None, typer.Option("--ip-adapter", help="IP-Adapter file (name in ip-adapters/ or "
                                                                        "a path; default: engine.ip_adapter).")]
    = None,
    num_images: Annotated[int | None, typer.Option("-n", "--num-images", help="Images in the batch (default 1).")]
    = None,
    from_png: Annotated[Path | None, typer.Option("--from-png", help="Start from the A1111 parameters of a PNG "
                                                                     "(ours, A1111's, Forge's, Civitai's); other "
                                                                     "options override.")]
    = None,
    from_text: Annotated[str | None, typer.Option("--from-text", help="Start from pasted A1111/Forge/Civitai "
                                                                       "parameters text in FILE (- = stdin).")]
    = None,
    clip_skip: Annotated[int | None, typer.Option("--clip-skip", help="A1111 Clip skip (2 = the layer before the "
                                                                      "last; SD1.x models).")] = None,
    hires_scale: Annotated[float | None, typer.Option("--hires-scale", help="Hires fix: upscale by this factor and "
                                                                            "denoise again.")] = None,
    hires_steps: Annotated[int | None, typer.Option("--hires-steps", help="Hires fix steps (default: --steps).")]
    = None,
    hires_strength: Annotated[float | None, typer.Option("--hires-strength", help="Hires fix denoising strength "
                                                                                  "(default 0.7).")] = None,
) -> None:
    """Generate images and write them as PNGs carrying their A1111 parameters."""
    from imageloop.engine import Engine, GenerationRequest

    width, height = parse_size(size) if size else (None, None)
    settings = load_settings()
    console = Console(stderr=True)
    imported = _imported(from_png, from_text, settings, model)
    given = {
        "prompt": prompt, "negative_prompt": negative, "seed": seed, "steps": steps, "guidance_scale": cfg,
        "width": width, "height": height, "scheduler": scheduler, "recipe": recipe, "style": style,
        "num_images": num_images, "init_image": _read_image(init_image, "--init-image"), "strength": strength,
        "control_image": _read_image(control_image, "--control-image"),
        "controlnet_conditioning_scale": control_scale, "clip_skip": clip_skip, "hires_scale": hires_scale,
        "hires_steps": hires_steps, "hires_strength": hires_strength,
        "ip_image": _read_image(ip_image, "--ip-image"), "ip_scale": ip_scale,
    }
    fields = imported.request.model_dump(exclude_unset=True) if imported is not None else {}
    fields.update({key: value for key, value in given.items() if value is not None})
    if "prompt" not in fields:
        raise InvalidRequestError("prompt", "give a PROMPT, or --from-png / --from-text to reuse parameters")
    request = GenerationRequest(**fields)
    engine = Engine(settings, model=model, config=config, controlnet=control_model, ip_adapter=ip_adapter)
    engine.check(request)  # bad names fail before the (slow) model load
    with console.status(f"loading model {engine.model_spec}"):
        loaded = engine.model
    console.print(f"model {loaded.name} ({loaded.architecture.value}, {loaded.short_hash}) on {loaded.device}")
    if imported is not None:
        _warn_ignored(console, imported, loaded.name, loaded.version)
    if (request.clip_skip or 1) > 1 and getattr(loaded.pipe, "text_encoder_2", None) is not None:
        console.print(f"warning: not honoured: Clip skip: {request.clip_skip} — this model reads its text encoders' "
                      "penultimate layer always (as A1111 does for SDXL by default)", style="yellow", markup=False,
                      highlight=False, soft_wrap=True)
    result = _run_with_progress(engine, request, console)
    paths = output_paths(out, len(result.images))
    for path, image in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.png)
        typer.echo(f"{path}  seed {image.seed}  {image.width}x{image.height}")
    r = result.request
    console.print(f"{r.steps} steps, {r.scheduler}, CFG {r.guidance_scale:g} in {result.timings['total']:.1f} s"
                  + (" (from cache)" if result.from_cache else ""))
    from imageloop.engine.model_knowledge import read_knowledge
    from imageloop.engine.request_notes import request_notes

    knows = read_knowledge(loaded.path) if loaded.path.is_dir() else None
    for note in request_notes(knows, {"width": r.width, "height": r.height}, r.prompt, r.style):
        console.print(f"note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _warn_ignored(console: Console, imported: ImportedParameters, model_name: str, model_version: str) -> None:
    """One warning line per pasted setting not honoured (the model too, when the text names another)."""
    lines = [str(item) for item in imported.ignored]
    named = imported.model_name or imported.model_hash
    same = imported.model_name == model_name or (
        imported.model_hash is not None and model_version.startswith(imported.model_hash.lower()))
    if named and not same:
        lines.append(f"Model: {named} — generated with the loaded model {model_name!r} instead")
    for line in lines:
        console.print(f"warning: not honoured: {line}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _run_with_progress(engine: Any, request: Any, console: Console) -> Any:
    columns = (TextColumn("denoising"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("denoising", total=None)

        def on_step(step: int, total: int) -> None:
            progress.update(task, completed=step, total=total)

        return engine.generate(request, on_step=on_step)
