"""`ao train` command."""

import typer


def register(app: typer.Typer) -> None:
    """Add the training command(s) to the top-level `ao` app."""
