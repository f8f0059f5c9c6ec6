"""Shared CLI plumbing: run a coroutine with the services, report errors in one line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from arcana.errors import ArcanaError

if TYPE_CHECKING:
    from arcana.config import Settings
    from arcana.services.app import Services

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def load_settings() -> Settings:
    # Settings (pydantic-settings) and logging (structlog) are imported when a command runs,
    # so that ``arcana --help`` stays fast.
    from arcana.config import ConfigError, get_settings

    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:  # pydantic ValidationError: keep it to one line per field
        first = str(exc).splitlines()
        raise fail("invalid configuration: " + " ".join(s.strip() for s in first[:3])) from None


def run_with_services(fn: Callable[[Services], Awaitable[T]], *, migrate: bool = True) -> T:
    """Build and start the services (``arcana.lifecycle``), run ``fn``, stop; domain errors
    become exit 1 with one line."""
    from arcana.log import configure_logging

    settings = load_settings()
    configure_logging("WARNING", json=False)

    async def runner() -> T:
        from arcana.lifecycle import Lifecycle

        async with Lifecycle.running(settings, migrate_embedded=migrate) as process:
            return await fn(process.app)

    try:
        return asyncio.run(runner())
    except ArcanaError as exc:
        raise fail(exc.detail) from None
    except KeyboardInterrupt:
        sys.exit(130)
