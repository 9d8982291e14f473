"""``imageloop styles``: list the style presets."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from imageloop.cli import app
from imageloop.config import load_settings
from imageloop.engine.model_profile import model_profile
from imageloop.prompts.style_fit import style_fit
from imageloop.prompts.styles import get_style, load_styles


@app.command()
def styles(
    name: str | None = typer.Argument(None, help="Show one preset in full (slug, English or Chinese name)."),
    negative: bool = typer.Option(False, "--negative", help="Also show each preset's negative prompt."),
) -> None:
    """List the style presets (use the slug, English or Chinese name with --style). When the serving model has a fixed
    vocabulary (the embedded model), a last column says what each preset does to it, or that it means nothing to it."""
    presets = [get_style(name)] if name else list(load_styles().values())
    settings = load_settings()
    profile = model_profile(settings.engine.model, settings)
    table = Table(title=f"{len(presets)} style preset{'s' if len(presets) != 1 else ''}", show_lines=bool(name))
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("English")
    table.add_column("中文")
    table.add_column("positive template", overflow="fold")
    if negative or name:
        table.add_column("negative", overflow="fold")
    if profile.knows is not None:
        table.add_column(f"to the {profile.name} model", overflow="fold")
    for preset in presets:
        row = [preset.name, preset.name_en, preset.name_zh, preset.positive]
        if negative or name:
            row.append(preset.negative)
        if profile.knows is not None:
            row.append(style_fit(preset, profile.knows).note)
        table.add_row(*(Text(cell) for cell in row))  # Text: A1111 [weights] are not rich markup
    Console().print(table)
