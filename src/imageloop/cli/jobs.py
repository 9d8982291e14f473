"""``imageloop jobs cancel ID``: an operator cancels any user's generation job."""

from __future__ import annotations

import typer

from imageloop.cli import app
from imageloop.config import load_settings
from imageloop.storage import GenerationId, JobStatus, Storage

jobs_app = typer.Typer(help="Generation jobs of every user.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.command("cancel")
def cancel(generation_id: str = typer.Argument(..., help="The generation's id (from the API or the history).")) -> None:
    """Cancel any user's job: a queued one at once (refunded), a running one within a second (its worker sees the
    cancel at its next heartbeat and stops inside the current step). A finished job is left as it is."""
    storage = Storage.open(load_settings())
    try:
        record = storage.generations.request_cancel(None, GenerationId(generation_id))
    finally:
        storage.close()
    if record.status is JobStatus.CANCELLED:
        typer.echo(f"{record.id}: cancelled")
    elif record.status is JobStatus.RUNNING:
        typer.echo(f"{record.id}: running; its worker stops it within a second")
    else:
        typer.echo(f"{record.id}: already {record.status.value}; nothing to cancel")
