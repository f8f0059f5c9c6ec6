"""``arcana demo-data``: fill the catalog with generated products (batched inserts)."""

from __future__ import annotations

import random
import secrets
from decimal import Decimal
from typing import TYPE_CHECKING

import typer

from arcana.cli.console import run_with_services
from arcana.domain.products import NewProduct, ProductStatus

if TYPE_CHECKING:
    from arcana.services.app import Services

CATEGORIES = ("books", "garden", "kitchen", "music", "outdoor", "toys", "tools", "games")
ADJECTIVES = ("Arcane", "Brass", "Crystal", "Dusty", "Elder", "Gilded", "Hidden", "Iron", "Lunar")
NOUNS = ("Amulet", "Compass", "Grimoire", "Lantern", "Orb", "Scroll", "Staff", "Tome", "Wand")


DEMO_ADMIN_EMAIL = "admin@arcana.local"


async def ensure_demo_admin(services: Services) -> str | None:
    """Create the demo admin account (``admin@arcana.local``) unless it exists. Its password
    is random, printed once; returns it, or None when the account was already there."""
    if await services.users.get_user_by_email(DEMO_ADMIN_EMAIL) is not None:
        return None
    # Letters, digits and both cases: satisfies the password rules by construction.
    password = "Demo-" + secrets.token_urlsafe(12) + "a1A"
    await services.users.create_user(
        DEMO_ADMIN_EMAIL, "Demo Admin", password, frozenset({"user", "admin"})
    )
    typer.echo(f"demo admin: {DEMO_ADMIN_EMAIL} / {password}")
    return password


def _generate(rng: random.Random, start: int, count: int) -> list[NewProduct]:
    return [
        NewProduct(
            name=f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} #{i + 1}",
            description=f"Demo product number {i + 1}",
            price=Decimal(rng.randrange(0, 100_000)).scaleb(-2),
            stock=rng.randrange(0, 500),
            category=rng.choice(CATEGORIES),
        )
        for i in range(start, start + count)
    ]


async def fill_catalog(
    services: Services, products: int, batch_size: int, seed: int | None, show: bool = True
) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    rng = random.Random(seed)
    await ensure_demo_admin(services)
    done = 0

    with Progress(
        TextColumn("[bold]products"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not show,
    ) as progress:
        task = progress.add_task("insert", total=products)
        while done < products:
            count = min(batch_size, products - done)
            done += await services.products.create_many(
                _generate(rng, done, count), ProductStatus.ACTIVE
            )
            progress.update(task, completed=done)
    return done


def register(app: typer.Typer) -> None:
    @app.command("demo-data")
    def demo_data(
        products: int = typer.Option(1000, "--products", min=0, help="How many products to add"),
        batch_size: int = typer.Option(
            5000, "--batch-size", min=1, max=50_000, help="Rows per INSERT transaction"
        ),
        seed: int | None = typer.Option(None, "--seed", help="Random seed (repeatable data)"),
    ) -> None:
        """Fill the catalog with generated Active products (and the demo admin, when available)."""
        run_with_services(lambda c: fill_catalog(c, products, batch_size, seed))
        typer.echo(f"added {products} products")
