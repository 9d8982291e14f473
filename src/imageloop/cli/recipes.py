"""``imageloop recipes list|show|add|rm`` and ``imageloop loras add|list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imageloop.cli import app
from imageloop.config import load_settings
from imageloop.engine.recipes import LoraWeight, RecipeStore, dump_recipe, recipe_from_fields
from imageloop.errors import ConflictError, InvalidRequestError

recipes_app = typer.Typer(
    help="Recipes: named sets of LoRAs with weights, plus CFG, steps, sampler and style defaults.",
    no_args_is_help=True,
)
loras_app = typer.Typer(help="LoRA files in the data dir's loras/ folder.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")
app.add_typer(loras_app, name="loras")


def parse_lora_option(text: str) -> LoraWeight:
    """``FILE[:WEIGHT]`` -> LoraWeight; InvalidRequestError naming ``--lora`` if the weight is not a number."""
    file, sep, weight = text.rpartition(":")
    if not sep or not file:
        return _lora_weight(text, 1.0, text)
    try:
        value = float(weight)
    except ValueError:
        if "/" in weight or "\\" in weight:  # a Windows drive letter, e.g. C:\loras\x.safetensors
            return _lora_weight(text, 1.0, text)
        raise InvalidRequestError("--lora", f"weight {weight!r} in {text!r} is not a number",
                                  value=text, allowed="FILE or FILE:WEIGHT, e.g. detail.safetensors:0.6") from None
    return _lora_weight(file, value, text)


def _lora_weight(file: str, weight: float, text: str) -> LoraWeight:
    from pydantic import ValidationError

    try:
        return LoraWeight(file=file, weight=weight)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequestError("--lora", f"{text!r}: {message}", value=text) from None


@recipes_app.command("list")
def list_recipes() -> None:
    """List the recipes; broken recipe files are listed after them with what is wrong."""
    store = RecipeStore(load_settings())
    scan = store.scan()
    console = Console()
    if not scan.recipes and not scan.problems:
        console.print(f"No recipes in {store.recipes_dir}. Add one: imageloop recipes add NAME --lora FILE:WEIGHT")
        return
    if scan.recipes:
        table = Table("name", "LoRAs", "cfg", "steps", "scheduler", "style", "description")
        for recipe in scan.recipes.values():
            table.add_row(
                recipe.name,
                ", ".join(f"{lora.file}:{lora.weight:g}" for lora in recipe.loras) or "-",
                _or_dash(recipe.guidance_scale),
                _or_dash(recipe.steps),
                recipe.scheduler or "-",
                recipe.style or "-",
                recipe.description,
            )
        console.print(table)
    for problem in scan.problems:
        typer.secho(f"broken: {problem.message}", err=True, fg=typer.colors.RED)


def _or_dash(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"


@recipes_app.command("show")
def show_recipe(name: Annotated[str, typer.Argument(help="Recipe name.")]) -> None:
    """Print a recipe as YAML, followed by the LoRA files it resolves to."""
    store = RecipeStore(load_settings())
    recipe = store.get(name)
    typer.echo(dump_recipe(recipe), nl=False)
    for lora, path in zip(recipe.loras, store.check_loras(recipe), strict=True):
        typer.echo(f"# {lora.file} -> {path}")


@recipes_app.command("add")
def add_recipe(
    name: Annotated[str, typer.Argument(help="Recipe name: lowercase letters, digits, '-' and '_'.")],
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", "-l", help="FILE[:WEIGHT], repeatable. FILE is a name in loras/ or an absolute path."),
    ] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Guidance scale.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps.")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="A1111 sampler name, e.g. 'DPM++ 2M'.")] = None,
    style: Annotated[str | None, typer.Option("--style", help="Style preset name.")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What the recipe is for.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing recipe of this name.")] = False,
) -> None:
    """Create (or with --force replace) a recipe."""
    store = RecipeStore(load_settings())
    fields: dict[str, object] = {
        "name": name,
        "description": description,
        "loras": [parse_lora_option(item) for item in lora or []],
        "guidance_scale": cfg,
        "steps": steps,
        "scheduler": scheduler,
        "style": style,
    }
    recipe = recipe_from_fields(fields)
    try:
        path = store.save(recipe, overwrite=force)
    except ConflictError as exc:
        raise ConflictError(f"{exc.message}; pass --force to replace it") from exc
    typer.echo(f"saved recipe {recipe.name!r} to {path}")


@recipes_app.command("rm")
def remove_recipe(name: Annotated[str, typer.Argument(help="Recipe name.")]) -> None:
    """Delete a recipe (its LoRA files stay)."""
    store = RecipeStore(load_settings())
    store.delete(name)
    typer.echo(f"removed recipe {name!r}")


@loras_app.command("add")
def add_lora(
    file: Annotated[Path, typer.Argument(help="A LoRA .safetensors file (diffusers or kohya format).")],
    name: Annotated[str | None, typer.Option("--name", help="File name to store it under.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a LoRA of the same name.")] = False,
) -> None:
    """Check that FILE is a Stable Diffusion LoRA and copy it into the data dir's loras/ folder."""
    from imageloop.engine.lora import install_lora  # imports torch and diffusers: only when needed

    settings = load_settings()
    console = Console(stderr=True)
    try:
        with console.status(f"checking and copying {file} ..."):
            info = install_lora(file.expanduser(), settings.loras_dir, name=name, overwrite=force)
    except ConflictError as exc:
        raise ConflictError(f"{exc.message}; pass --force to replace it") from exc
    typer.echo(
        f"added {info.path.name}: {info.layers} LoRA layers for {', '.join(info.components)}"
        f" (base model: {info.base}); use it with --lora {info.path.stem}:WEIGHT"
    )


@loras_app.command("list")
def list_loras() -> None:
    """List the LoRA files in the data dir."""
    loras_dir = load_settings().loras_dir
    files = sorted(loras_dir.glob("*.safetensors")) if loras_dir.is_dir() else []
    if not files:
        typer.echo(f"No LoRAs in {loras_dir}. Add one: imageloop loras add FILE")
        return
    table = Table("name", "size")
    for path in files:
        table.add_row(path.stem, f"{path.stat().st_size / 2**20:.1f} MiB")
    Console().print(table)
