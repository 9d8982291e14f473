"""``imageloop styles``: list the style presets."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from imageloop.cli import app
from imageloop.prompts.styles import get_style, load_styles


@app.command()
def styles(
    name: str | None = typer.Argument(None, help="Show one preset in full (slug, English or Chinese name)."),
    negative: bool = typer.Option(False, "--negative", help="Also show each preset's negative prompt."),
) -> None:
    """List the style presets (use the slug, English or Chinese name with --style)."""
    presets = [get_style(name)] if name else list(load_styles().values())
    table = Table(title=f"{len(presets)} style preset{'s' if len(presets) != 1 else ''}", show_lines=bool(name))
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("English")
    table.add_column("中文")
    table.add_column("positive template", overflow="fold")
    if negative or name:
        table.add_column("negative", overflow="fold")
    for preset in presets:
        row = [preset.name, preset.name_en, preset.name_zh, preset.positive]
        if negative or name:
            row.append(preset.negative)
        table.add_row(*(Text(cell) for cell in row))  # Text: A1111 [weights] are not rich markup
    Console().print(table)
