"""``imageloop models list | show ID | promote ID | rollback ID``: the model registry from the command line."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from imageloop.cli.groups import models_app
from imageloop.config import load_settings
from imageloop.errors import UnknownNameError
from imageloop.storage import Storage
from imageloop.training.registry import ModelKind, ModelVersion, Registry


def _with_registry() -> tuple[Storage, Registry]:
    settings = load_settings()
    storage = Storage.open(settings)
    return storage, Registry(storage.sessions, settings)


def _kind(value: str | None) -> ModelKind | None:
    if value is None:
        return None
    try:
        return ModelKind(value)
    except ValueError:
        raise UnknownNameError("kind", value, [k.value for k in ModelKind]) from None


def _gate(version: ModelVersion) -> str:
    gate = version.metrics.get("gate") or {}
    if not gate:
        return ""
    return (f"{gate.get('candidate_accuracy', 0):.2f} vs {gate.get('current_accuracy', 0):.2f} "
            f"[{gate.get('gain_low', 0):+.2f}, {gate.get('gain_high', 0):+.2f}] n={gate.get('pairs', 0)}")


@models_app.command("list")
def list_models(
    kind: str | None = typer.Option(None, "--kind", help="expander, reward or lora"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every public model version, newest first, with its status, traffic share and gate result."""
    storage, registry = _with_registry()
    try:
        versions = registry.list(_kind(kind))
    finally:
        storage.close()
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=1))
        return
    if not versions:
        typer.echo("no model versions yet (run: imageloop train cycle)")
        return
    table = Table("id", "kind", "version", "status", "share", "parent", "gate: accuracy vs current [gain CI]",
                  "created")
    by_id = {v.id: v for v in versions}
    for v in versions:
        parent = f"v{by_id[v.parent_id].version}" if v.parent_id in by_id else ""
        table.add_row(v.id, v.kind.value, f"v{v.version}", v.status.value, f"{v.traffic_share:.0%}", parent,
                      _gate(v), v.created_at.strftime("%Y-%m-%d %H:%M"))
    Console(width=200).print(table)


@models_app.command("show")
def show_model(version_id: str = typer.Argument(..., help="Version id (from `imageloop models list`).")) -> None:
    """One version as JSON: metrics, files, data hash, notes."""
    storage, registry = _with_registry()
    try:
        typer.echo(json.dumps(registry.get(version_id).to_dict(), indent=1))
    finally:
        storage.close()


@models_app.command("promote")
def promote(version_id: str = typer.Argument(..., help="Version id (from `imageloop models list`).")) -> None:
    """Make a version serve all traffic of its kind; the current one is retired."""
    storage, registry = _with_registry()
    try:
        version = registry.promote(version_id, note="promoted from the CLI")
    finally:
        storage.close()
    typer.echo(f"{version.kind.value} v{version.version} promoted")


@models_app.command("rollback")
def rollback(version_id: str = typer.Argument(..., help="Version id (from `imageloop models list`).")) -> None:
    """Stop serving a version (A/B candidate or current); the current one is replaced by the one it replaced."""
    storage, registry = _with_registry()
    try:
        version = registry.rollback(version_id, note="rolled back from the CLI")
        current = registry.current(version.kind)
    finally:
        storage.close()
    now = f"v{current.version}" if current else "the untrained base"
    typer.echo(f"{version.kind.value} v{version.version} rolled back; serving now: {now}")
