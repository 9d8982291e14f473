"""``imageloop generate PROMPT -o out.png``: one request through the engine, with a progress bar."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imageloop.cli import app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError

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


def _from_png(path: Path) -> dict[str, object]:
    from imageloop.engine import read_png_parameters

    png = _read_image(path, "--from-png")
    assert png is not None
    return read_png_parameters(png).model_dump(exclude_none=True)


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
    num_images: Annotated[int | None, typer.Option("-n", "--num-images", help="Images in the batch (default 1).")]
    = None,
    from_png: Annotated[Path | None, typer.Option("--from-png", help="Start from the A1111 parameters of a PNG "
                                                                     "(ours or A1111's); other options override.")]
    = None,
) -> None:
    """Generate images and write them as PNGs carrying their A1111 parameters."""
    from imageloop.engine import Engine, GenerationRequest

    width, height = parse_size(size) if size else (None, None)
    given = {
        "prompt": prompt, "negative_prompt": negative, "seed": seed, "steps": steps, "guidance_scale": cfg,
        "width": width, "height": height, "scheduler": scheduler, "recipe": recipe, "style": style,
        "num_images": num_images, "init_image": _read_image(init_image, "--init-image"), "strength": strength,
        "control_image": _read_image(control_image, "--control-image"),
        "controlnet_conditioning_scale": control_scale,
    }
    fields = _from_png(from_png) if from_png is not None else {}
    fields.update({key: value for key, value in given.items() if value is not None})
    if "prompt" not in fields:
        raise InvalidRequestError("prompt", "give a PROMPT, or --from-png FILE to reuse a PNG's parameters")
    request = GenerationRequest(**fields)
    engine = Engine(load_settings(), model=model, config=config, controlnet=control_model)
    engine.check(request)  # bad names fail before the (slow) model load
    console = Console(stderr=True)
    with console.status(f"loading model {engine.model_spec}"):
        loaded = engine.model
    console.print(f"model {loaded.name} ({loaded.architecture.value}, {loaded.short_hash}) on {loaded.device}")
    result = _run_with_progress(engine, request, console)
    paths = output_paths(out, len(result.images))
    for path, image in zip(paths, result.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.png)
        typer.echo(f"{path}  seed {image.seed}  {image.width}x{image.height}")
    r = result.request
    console.print(f"{r.steps} steps, {r.scheduler}, CFG {r.guidance_scale:g} in {result.timings['total']:.1f} s"
                  + (" (from cache)" if result.from_cache else ""))


def _run_with_progress(engine: Any, request: Any, console: Console) -> Any:
    columns = (TextColumn("denoising"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("denoising", total=None)

        def on_step(step: int, total: int) -> None:
            progress.update(task, completed=step, total=total)

        return engine.generate(request, on_step=on_step)
