"""`ao data ...` commands."""

import typer

app = typer.Typer(help="Build and inspect oracle training mixtures.", no_args_is_help=True)
