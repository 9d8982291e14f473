"""``imageloop users create|list|set-password|keys|tier|credits``: accounts, API keys, tiers and credits."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from imageloop.cli.groups import users_app
from imageloop.config import load_settings
from imageloop.errors import InvalidRequestError, UnknownNameError
from imageloop.storage import ApiKeyId, Storage


def _storage() -> Storage:
    return Storage.open(load_settings())


@users_app.command("create")
def create(
    name: str = typer.Argument(..., help="User name: letters, digits, '_', '.', '@', '-'."),
    admin: bool = typer.Option(False, "--admin", help="Make the user an administrator."),
) -> None:
    """Create a user and print their API key (shown once; only its hash is stored). An administrator is put in the
    first of ``credits.unlimited_tiers`` (``admin``): never charged."""
    settings = load_settings()
    storage = Storage.open(settings)
    try:
        user, key = storage.users.create_user(name, is_admin=admin)
        tier_name = settings.credits.unlimited_tiers[0] if admin and settings.credits.unlimited_tiers else user.tier
        if tier_name != user.tier:
            storage.credits.set_tier(user.id, tier_name)
    finally:
        storage.close()
    typer.echo(f"created {'admin ' if user.is_admin else ''}user {user.name} ({user.id}), {tier_name} tier", err=True)
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
    for column in ("name", "id", "admin", "password", "training opt-out", "tier", "credits", "created", "deleted"):
        table.add_column(column)
    for user in users:
        table.add_row(
            user.name, user.id, "yes" if user.is_admin else "", "set" if user.has_password else "",
            "yes" if user.training_opt_out else "", user.tier, str(user.credits), f"{user.created_at:%Y-%m-%d %H:%M}",
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


@users_app.command("tier")
def tier(
    name: str = typer.Argument(..., help="The user."),
    tier_name: str = typer.Argument(..., metavar="TIER", help="A tier of the settings (credits.tiers)."),
) -> None:
    """Put a user in a tier: its limits apply from the next request, and its allowance is refilled at once."""
    settings = load_settings()
    if tier_name not in settings.credits.tiers:
        raise UnknownNameError("tier", tier_name, settings.credits.tiers)
    storage = Storage.open(settings)
    try:
        storage.credits.set_tier(storage.users.get_by_name(name).id, tier_name)
    finally:
        storage.close()
    typer.echo(f"{name} is now in the {tier_name} tier")


@users_app.command("credits", context_settings={"ignore_unknown_options": True})
def credits(
    name: str = typer.Argument(..., help="The user."),
    amount: str | None = typer.Argument(None, metavar="[+N|-N]", help="Credits to grant (+N) or take (-N)."),
    reason: str = typer.Option("granted by an operator", "--reason", help="Reason recorded in the ledger."),
    history: int = typer.Option(10, "--history", min=0, max=200, help="Ledger rows to show, newest first."),
) -> None:
    """Show a user's balance and newest ledger rows; with +N or -N, grant or take credits first (one ledger row)."""
    change = None
    if amount is not None:
        try:
            change = int(amount)
        except ValueError:
            raise InvalidRequestError("amount", f"cannot read {amount!r}", value=amount, allowed="+N or -N") from None
    storage = Storage.open(load_settings())
    try:
        user = storage.users.get_by_name(name)
        if change is not None:
            storage.credits.grant(user.id, change, reason=reason)
        balance = storage.users.get(user.id).credits
        entries = storage.credits.history(user.id, limit=history) if history else []
    finally:
        storage.close()
    typer.echo(f"{name}: {balance} credits ({user.tier} tier)")
    if entries:
        table = Table(title=f"credit history of {name}, newest first")
        for column in ("when", "kind", "amount", "balance", "generation", "reason"):
            table.add_column(column)
        for entry in entries:
            table.add_row(f"{entry.created_at:%Y-%m-%d %H:%M:%S}", entry.kind.value, f"{entry.amount:+d}",
                          str(entry.balance_after), entry.generation_id or "", entry.reason)
        Console().print(table)
