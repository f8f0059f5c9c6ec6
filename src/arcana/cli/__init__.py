"""The ``arcana`` command. Each area adds its commands in its own module here.

Exit codes: 0 success, 1 an error (one line on stderr), 2 bad usage.

Start-up: each command imports what it needs (the composition root, uvicorn, grpc, SQLAlchemy,
wasmtime) when it runs, so ``arcana --help`` and argument errors load none of them;
``tests/unit/test_cli_imports.py`` keeps it so.
"""

from __future__ import annotations

import gc

import typer

from arcana import __version__
from arcana.cli import demo, jobs, ops, plugins, serve, users, worker

app = typer.Typer(
    name="arcana",
    help="Arcana service. Configuration comes from ARCANA_* environment variables and .env.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help and usage errors: rendering them with rich imports rich's markdown,
    # syntax and traceback modules, which costs more than the rest of ``arcana --help``.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"arcana {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Arcana: auth, product catalog, job queue, domain events, WebAssembly audit plugins."""


serve.register(app)
ops.register(app)
users.register(app)
worker.register(app)
jobs.register(app)
plugins.register(app)
demo.register(app)


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's last garbage collections, at exit, walk every object the command
        # made or imported: 0.3-0.5 s of a 1.3-1.5 s ``arcana users list`` here, after its
        # work was done (``make bench-cli``). Frozen objects are skipped by them. The command
        # has closed what it opened (``Lifecycle.stop``); objects are still freed as modules
        # are torn down.
        gc.freeze()
