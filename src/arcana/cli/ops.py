"""``arcana migrate``."""

from __future__ import annotations

import asyncio

import typer

from arcana.cli.console import load_settings


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate() -> None:
        """Apply database migrations (Alembic) to ARCANA_DATABASE_URL."""

        from arcana.log import configure_logging

        settings = load_settings()
        configure_logging("WARNING", json=False)

        async def go() -> None:
            from arcana.bootstrap import build_app, close_resources, migrate

            app = build_app(settings)
            try:
                await migrate(app)
            finally:
                await close_resources(app)

        asyncio.run(go())
        typer.echo("database is up to date")
