"""``arcana users create|grant-role|revoke-role|list``."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import typer

from arcana.cli.console import fail
from arcana.cli.console import run_with_services as _run_with_services
from arcana.domain.identity import Role
from arcana.domain.users import User

if TYPE_CHECKING:
    from arcana.services.app import Services

T = TypeVar("T")


def run_with_services(fn: Callable[[Services], Awaitable[T]]) -> T:
    """Like the shared runner, but an unexpected error (e.g. a PostgreSQL database that was
    never migrated) is still one line on stderr and exit 1, not a traceback."""
    try:
        return _run_with_services(fn)
    except (typer.Exit, SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise fail(f"{first} (has `arcana migrate` been run?)") from None


users_app = typer.Typer(
    help="Manage user accounts and roles.", no_args_is_help=True, rich_markup_mode=None
)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise fail("no password on standard input")
        return password
    password = str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
    return password


@users_app.command("create")
def create(
    email: str = typer.Option(..., "--email", help="Login email (stored lowercased)."),
    name: str = typer.Option(..., "--name", help="Display name."),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin role too."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password from the first line of stdin."
    ),
) -> None:
    """Create a user (password from --password-stdin or an interactive prompt)."""
    password = _read_password(password_stdin)
    roles = frozenset({Role.USER.value, Role.ADMIN.value} if admin else {Role.USER.value})

    async def go(services: Services) -> User:
        return await services.users.create_user(email, name, password, roles)

    user = run_with_services(go)
    typer.echo(f"created user {user.id} <{user.email}> roles={','.join(sorted(user.roles))}")


def _role_command(email: str, role: str, *, grant: bool) -> None:
    if role not in {r.value for r in Role}:
        raise fail(f"unknown role '{role}' (known: {', '.join(r.value for r in Role)})")

    async def go(services: Services) -> User:
        if grant:
            return await services.users.grant_role(email, role)
        return await services.users.revoke_role(email, role)

    user = run_with_services(go)
    typer.echo(f"{user.email}: roles={','.join(sorted(user.roles)) or '-'}")


@users_app.command("grant-role")
def grant_role(email: str, role: str) -> None:
    """Give ROLE (user, admin) to the user with EMAIL."""
    _role_command(email, role, grant=True)


@users_app.command("revoke-role")
def revoke_role(email: str, role: str) -> None:
    """Take ROLE away; the user's access tokens issued before stop working at once."""
    _role_command(email, role, grant=False)


@users_app.command("delete")
def delete_user(email: str) -> None:
    """Delete the user with EMAIL, their sessions and tokens; their access tokens stop working."""

    async def go(services: Services) -> User:
        return await services.users.delete_user(email)

    user = run_with_services(go)
    typer.echo(f"deleted user {user.id} <{user.email}>")


@users_app.command("list")
def list_users() -> None:
    """Show every user."""

    async def go(services: Services) -> list[User]:
        return await services.users.list_users(limit=100_000)

    users = run_with_services(go)
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "email", "name", "roles", "sync", "created_at")
    for u in users:
        table.add_row(
            u.id,
            u.email,
            u.name,
            ",".join(sorted(u.roles)),
            u.sync_status.value,
            u.created_at.isoformat(timespec="seconds"),
        )
    Console(width=160).print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
