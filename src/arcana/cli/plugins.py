"""``arcana plugins list`` / ``arcana plugins check FILE``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from arcana.cli.console import fail, run_with_services

if TYPE_CHECKING:
    from arcana.services.app import Services

plugins_app = typer.Typer(
    help="WebAssembly audit plugins.", no_args_is_help=True, rich_markup_mode=None
)


@plugins_app.command("list")
def list_cmd() -> None:
    """Load the plugins of ARCANA_PLUGINS_DIR and show them."""

    async def run(services: Services) -> list[dict[str, object]]:
        return await services.plugins.list_plugins()

    statuses = run_with_services(run, migrate=False)
    if not statuses:
        typer.echo("no plugins")
        return
    typer.echo(f"{'NAME':<20} {'STATE':<8} {'VERSION':<8} {'DIGEST':<14} FILE")
    for s in statuses:
        digest = str(s["digest"] or "-")[:12]
        version = "-" if s["version"] is None else str(s["version"])
        line = f"{s['name']!s:<20} {s['state']!s:<8} {version:<8} {digest:<14} {s['file']}"
        if s.get("error"):
            line += f"  ({s['error']})"
        typer.echo(line)


@plugins_app.command("check")
def check_cmd(file: Path = typer.Argument(..., help="A .wasm or .wat module")) -> None:
    """Validate a module against the plugin ABI and run a sample event through it."""
    if not file.is_file():
        raise fail(f"{file}: no such file")

    async def run(services: Services) -> dict[str, object]:
        return await services.plugins.check(file)

    report = run_with_services(run, migrate=False)
    version = "-" if report["version"] is None else report["version"]
    if not report["alloc"]:
        buffers = "legacy, host-grown buffer"
    elif report.get("dealloc", True):
        buffers = "alloc/dealloc"
    else:
        buffers = "alloc without dealloc, instance renewed near the memory cap"
    typer.echo(
        f"{report['name']}: ok (version {version}, {buffers}{', WASI' if report['wasi'] else ''})"
    )
    typer.echo(
        f"sample user.data_access/export -> {report['code']}; "
        f"fuel {report['fuel']}, {report['micros']} us"
    )
    if report.get("output"):
        typer.echo(f"output: {report['output']}")


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
