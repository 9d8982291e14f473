"""``imageloop users create|list|set-password|keys``: accounts and API keys."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from imageloop.cli.groups import users_app
from imageloop.config import load_settings
from imageloop.storage import ApiKeyId, Storage


def _storage() -> Storage:
    return Storage.open(load_settings())


@users_app.command("create")
def create(
    name: str = typer.Argument(..., help="User name: letters, digits, '_', '.', '@', '-'."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator."),
) -> None:
    """Create a user and print their API key (shown once; only its hash is stored)."""
    storage = _storage()
    try:
        user, key = storage.users.create_user(name, is_admin=admin)
    finally:
        storage.close()
    typer.echo(f"created {'admin ' if user.is_admin else ''}user {user.name} ({user.id})", err=True)
    typer.echo("API key (store it now, it is not shown again):", err=True)
    typer.echo(key)


@users_app.command("list")
def list_users() -> None:
    """List users."""
    storage = _storage()
    try:
        users = storage.users.list_users()
    finally:
        storage.close()
    table = Table(title=f"{len(users)} user{'s' if len(users) != 1 else ''}")
    for column in ("name", "id", "admin", "password", "training opt-out", "tier", "created", "deleted"):
        table.add_column(column)
    for user in users:
        table.add_row(
            user.name, user.id, "yes" if user.is_admin else "", "set" if user.has_password else "",
            "yes" if user.training_opt_out else "", user.tier, f"{user.created_at:%Y-%m-%d %H:%M}",
            f"{user.deleted_at:%Y-%m-%d}" if user.deleted_at else "",
        )
    Console().print(table)


@users_app.command("set-password")
def set_password(
    name: str = typer.Argument(..., help="The user."),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="New password (prompted when omitted)."
    ),
) -> None:
    """Set a user's password (at least 8 characters)."""
    storage = _storage()
    try:
        storage.users.set_password(storage.users.get_by_name(name).id, password)
    finally:
        storage.close()
    typer.echo(f"password set for {name}")


@users_app.command("keys")
def keys(
    name: str = typer.Argument(..., help="The user."),
    new: bool = typer.Option(False, "--new", help="Create another API key and print it."),
    revoke: str | None = typer.Option(None, "--revoke", help="Revoke the key with this id."),
) -> None:
    """List a user's API keys (prefix only); create or revoke one."""
    storage = _storage()
    try:
        user = storage.users.get_by_name(name)
        if revoke:
            storage.users.revoke_api_key(user.id, ApiKeyId(revoke))
            typer.echo(f"revoked key {revoke}", err=True)
        if new:
            _, key = storage.users.create_api_key(user.id)
            typer.echo("new API key (store it now, it is not shown again):", err=True)
            typer.echo(key)
        listed = storage.users.list_api_keys(user.id)
    finally:
        storage.close()
    table = Table(title=f"API keys of {name}")
    for column in ("id", "prefix", "created", "revoked"):
        table.add_column(column)
    for info in listed:
        revoked = f"{info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else ""
        table.add_row(info.id, info.prefix + "…", f"{info.created_at:%Y-%m-%d %H:%M}", revoked)
    Console(stderr=new).print(table)
