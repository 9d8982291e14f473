"""Sub-command groups shared by the command modules (``imageloop bench engine``, ``imageloop train base``...)."""

from __future__ import annotations

import typer

from imageloop.cli import app

bench_app = typer.Typer(help="Benchmarks: print a table, write a JSON result (and a plot where it helps).",
                        no_args_is_help=True)
train_app = typer.Typer(help="Training jobs.", no_args_is_help=True)
export_app = typer.Typer(help="Export datasets from the flywheel record.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts and API keys.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)

app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(export_app, name="export")
app.add_typer(users_app, name="users")
app.add_typer(models_app, name="models")
