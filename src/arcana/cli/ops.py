"""``arcana migrate``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from arcana.cli.console import run_with_container

if TYPE_CHECKING:
    from arcana.bootstrap import Container


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate() -> None:
        """Apply database migrations (Alembic) to ARCANA_DATABASE_URL."""

        async def go(container: Container) -> None:
            await container.migrate()

        run_with_container(go, migrate=False)
        typer.echo("database is up to date")
