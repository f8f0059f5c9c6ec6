# ruff: noqa: E402  (sys.path is cleaned before the imports, see below)
"""Admin console page times in a real browser (Debian's Chromium through Playwright).

    make bench-console         # or: .venv/bin/python bench/console.py --rounds 20

One ``arcana serve`` (embedded, in a temporary directory) with ``--products`` products and an
admin. For each round: a fresh page loads ``/admin`` (shell, stylesheet, module, the cookie
refresh, ``/auth/me`` and the overview's data) and then opens every section by its link. A time
is from the navigation start (or the click) until the section's heading and data are on screen,
measured in the page with ``performance.now()``. The table shows the median and p95 per page;
the console's target is under 200 ms for each.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``bench/http.py`` must not shadow the standard library's ``http`` (see bench/http.py).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import argparse
import asyncio
import statistics
import tempfile
import uuid

import httpx
from playwright.sync_api import Page, sync_playwright

from arcana.config import Settings
from arcana.lifecycle import Lifecycle

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["overview", "products", "users", "jobs", "events", "audit", "plugins"]
LINKS = {"audit": "Audit log"}
PASSWORD = "Bench-Console-42"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


async def _seed(settings: Settings, email: str, products: int) -> None:
    from arcana.domain.products import NewProduct, ProductStatus

    process = Lifecycle.build(settings)
    container = process.app
    await process.start()
    try:
        await container.users.create_user(email, "Bench", PASSWORD, frozenset({"admin"}))
        items = [NewProduct.build(name=f"Item {i}", price=i % 100 + 0.5) for i in range(products)]
        await container.products.create_many(items, ProductStatus.ACTIVE)
    finally:
        await process.stop()


def _shown(page: Page) -> None:
    page.locator("#view h1").wait_for()
    page.locator("#view").locator("table, dl, ol").first.wait_for()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--products", type=int, default=1000)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from tests.process import ArcanaProcess, free_port

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        env = {
            "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{cwd / 'arcana.db'}",
            "ARCANA_JWT_SECRET": "bench-console-" + "b" * 40,
            "ARCANA_GRPC_PORT": "0",
            "ARCANA_VAR_DIR": str(cwd / "var"),
            "ARCANA_PLUGINS_DIR": str(ROOT / "plugins"),
        }
        email = f"bench-{uuid.uuid4().hex[:6]}@example.com"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, database_url=env["ARCANA_DATABASE_URL"], var_dir=cwd / "var"
        )
        asyncio.run(_seed(settings, email, args.products))
        port = free_port()
        proc = ArcanaProcess(["serve", "--port", str(port)], env=env, cwd=cwd).start()
        base = f"http://127.0.0.1:{port}"
        times: dict[str, list[float]] = {"load /admin": [], **{p: [] for p in PAGES}}
        try:
            proc.wait_http(f"{base}/readyz", timeout=60)
            httpx.get(f"{base}/admin")  # warm-up
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{base}/admin")
                page.get_by_label("Email").fill(email)
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                _shown(page)
                page.close()
                for _ in range(args.rounds):
                    page = context.new_page()
                    page.goto(f"{base}/admin#/overview")
                    _shown(page)
                    times["load /admin"].append(page.evaluate("performance.now()"))
                    for name in PAGES:
                        started = page.evaluate("performance.now()")
                        page.locator(f'#nav a[href="#/{name}"]').click()
                        page.locator(f'#nav a[href="#/{name}"][aria-current="page"]').wait_for()
                        _shown(page)
                        times[name].append(page.evaluate("performance.now()") - started)
                    page.close()
                browser.close()
        finally:
            proc.stop()

    print(f"admin console, embedded, {args.products} products, {args.rounds} rounds (ms)")
    print(f"{'page':<14}{'median':>9}{'p95':>9}")
    for name, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        print(f"{name:<14}{statistics.median(values):>9.1f}{p95:>9.1f}")


if __name__ == "__main__":
    main()
