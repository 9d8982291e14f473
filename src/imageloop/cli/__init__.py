"""The ``imageloop`` command. Each sub-command lives in its own module and registers itself here."""

from __future__ import annotations

import sys

import typer

from imageloop.errors import ImageloopError

app = typer.Typer(
    name="imageloop",
    help="Imageloop: text-to-image that learns from what people keep.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to ``app``; kept lazy so `--help` stays fast.
    from imageloop.cli import commands  # noqa: F401


def main() -> None:
    """Entry point: run the CLI, turning any ImageloopError into one clear line and exit code 2."""
    _register()
    try:
        exit_code = app(standalone_mode=False)
        if isinstance(exit_code, int) and exit_code:  # typer.Exit(n) comes back as n without standalone mode
            sys.exit(exit_code)
    except ImageloopError as exc:
        typer.secho(f"error: {exc.message}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        raise
