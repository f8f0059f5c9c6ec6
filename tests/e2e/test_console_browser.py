"""The admin console in a real browser (Debian's Chromium through Playwright) against a real
``arcana serve`` on each backend: embedded (SQLite, in-process queue and events) and
PostgreSQL + Redis (``--with-worker`` so jobs run).

One server and one browser per backend for the whole module; each test opens its pages in a
shared, logged-in browser context. Screenshots of every page go to the test's temporary
directory (``ARCANA_CONSOLE_SCREENSHOTS`` names another one to keep them).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Route,
    async_playwright,
    expect,
)

from arcana.lifecycle import Lifecycle
from tests.auth_support import create_user
from tests.conftest import REDIS_URL, RUN_ID, base_settings
from tests.process import ArcanaProcess, free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "Console-Pass-42"
PAGES = ["overview", "products", "users", "jobs", "events", "audit", "plugins"]
ROOT = Path(__file__).resolve().parents[2]

if not Path(CHROMIUM).exists():  # pragma: no cover - the machine setup installs it
    pytest.skip("Chromium is missing: run scripts/system-deps.sh as root", allow_module_level=True)


@dataclass
class Server:
    base: str
    backend: str
    admin: str
    member: str
    shots: Path


@dataclass
class ServerSetup:
    backend: str
    cwd: Path
    env: dict[str, str]
    args: list[str]


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def server_setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ServerSetup:
    backend = str(request.param)
    cwd = tmp_path_factory.mktemp(f"console-{backend}")
    plugins = cwd / "plugins"
    plugins.mkdir()
    shutil.copy(ROOT / "plugins" / "audit.wasm", plugins / "audit.wasm")
    env = {
        "ARCANA_JWT_SECRET": "console-secret-" + "c" * 40,
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_VAR_DIR": str(cwd / "var"),
        "ARCANA_PLUGINS_DIR": str(plugins),
        "ARCANA_JOB_BACKOFF_BASE": "0.05",
    }
    args = ["serve"]
    if backend == "postgres":
        env["ARCANA_DATABASE_URL"] = request.getfixturevalue("pg_url")
        env["ARCANA_REDIS_URL"] = REDIS_URL
        env["ARCANA_REDIS_PREFIX"] = f"arcana-test-{RUN_ID}-console"
        args.append("--with-worker")
    else:
        env["ARCANA_DATABASE_URL"] = f"sqlite+aiosqlite:///{cwd / 'arcana.db'}"
    return ServerSetup(backend, cwd, env, args)


@pytest.fixture(scope="module")
async def server(server_setup: ServerSetup) -> AsyncIterator[Server]:
    setup = server_setup
    tag = uuid.uuid4().hex[:8]
    admin, member = f"admin-{tag}@example.com", f"member-{tag}@example.com"
    # The admin is stored in-process before the server starts (the CLI does the same, at the
    # cost of one more interpreter start-up).
    process = Lifecycle.build(
        base_settings(database_url=setup.env["ARCANA_DATABASE_URL"], var_dir=setup.cwd / "var")
    )
    container = process.app
    await process.start()
    try:
        await create_user(container, email=admin, name="Admin", password=PASSWORD, admin=True)
    finally:
        await process.stop()
    port = free_port()
    proc = ArcanaProcess([*setup.args, "--port", str(port)], env=setup.env, cwd=setup.cwd)
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{base}/readyz", timeout=60)
        body = {"name": "Member", "email": member, "password": PASSWORD}
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.post("/api/v1/auth/register", json=body)).status_code == 201
        shots = Path(os.environ.get("ARCANA_CONSOLE_SCREENSHOTS") or setup.cwd / "screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Server(base, setup.backend, admin, member, shots)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def _login(page: Page, server: Server, email: str) -> None:
    await page.goto(f"{server.base}/admin")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


@pytest.fixture(scope="module")
async def admin_context(browser: Browser, server: Server) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(15_000)
    page = await context.new_page()
    await _login(page, server, server.admin)
    await expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    await page.close()
    yield context
    await context.close()


@pytest.fixture
async def page(admin_context: BrowserContext, server: Server) -> AsyncIterator[Page]:
    """A console page, signed in through the refresh cookie of the shared context (the access
    token lives only in the page's memory, so a new page starts from the cookie)."""
    page = await admin_context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(f"{server.base}/admin#/overview")
    await expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    yield page
    await page.close()


async def _open(page: Page, name: str) -> None:
    await (
        page.get_by_role("navigation", name="Sections")
        .get_by_role("link", name={"audit": "Audit log"}.get(name, name.capitalize()), exact=True)
        .click()
    )
    await expect(page.locator(f'#nav a[href="#/{name}"]')).to_have_attribute("aria-current", "page")


async def test_a_non_admin_is_told_the_admin_role_is_needed(
    browser: Browser, server: Server
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await _login(page, server, server.member)
        await expect(page.get_by_role("alert")).to_contain_text("needs the admin role")
        await expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
        # Nothing of a session is left behind: the cookie was cleared by the logout.
        assert not [c for c in await context.cookies() if c["name"] == "arcana_refresh"]
    finally:
        await context.close()


async def test_the_overview_updates_live(page: Page, server: Server) -> None:
    users = page.locator("#overview dl").filter(has_text="Users").locator("dd")
    await expect(users).to_have_text(re.compile(r"^\d+$"))
    before = int(await users.inner_text())
    async with httpx.AsyncClient(base_url=server.base) as http:
        body = {"name": "New", "email": f"new-{uuid.uuid4().hex[:8]}@example.com"}
        r = await http.post("/api/v1/auth/register", json={**body, "password": PASSWORD})
        assert r.status_code == 201
    await expect(users).to_have_text(str(before + 1))  # no reload: the page follows by itself


async def test_console_pages_carry_the_security_headers(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base) as http:
        r = await http.get("/admin")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_stock_to_zero_shows_out_of_stock_in_the_live_tail(page: Page) -> None:
    name = f"Lamp {uuid.uuid4().hex[:6]}"
    await _open(page, "products")
    form = page.locator("#product-form")
    await form.get_by_label("Name").fill(name)
    await form.get_by_label("Price").fill("12.50")
    await form.get_by_label("Stock").fill("1")
    await form.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Created {name}")
    await page.get_by_label("Name contains").fill(name)
    await page.get_by_role("button", name="Filter").click()
    row = page.get_by_role("row").filter(has_text=name)
    await expect(row).to_have_count(1)
    await row.get_by_role("button", name=f"Stock minus one for {name}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Stock of {name} is 0")

    await _open(page, "events")
    await page.get_by_label("Type contains").fill("product.out_of_stock")
    await expect(page.locator("#event-list")).to_contain_text("product.out_of_stock")
    # Pause holds new events back until resumed.
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("button", name="Resume")).to_have_attribute(
        "aria-pressed", "true"
    )
    await page.get_by_role("button", name="Resume").click()


async def test_a_failing_echo_goes_to_dead_letters_and_is_retried(page: Page) -> None:
    message = f"canary-{uuid.uuid4().hex[:6]}"
    await _open(page, "jobs")
    await page.get_by_label("Type").select_option("system.echo")
    await page.get_by_label("Message (echo)").fill(message)
    await page.get_by_label("Fail times (echo)").fill("5")
    await page.get_by_label("Max retries").fill("1")
    await page.get_by_role("button", name="Enqueue").click()
    await expect(page.get_by_role("status")).to_contain_text("Enqueued system.echo")
    job_id = (await page.get_by_role("status").inner_text()).split("(")[1].rstrip(").")

    await page.get_by_label("Status", exact=True).select_option("dead")
    retry = page.get_by_role("button", name=f"Retry job {job_id}")
    for _ in range(100):  # a dead letter appears once both attempts failed
        if await retry.count():
            break
        await page.get_by_role("button", name="Refresh").click()
        await page.wait_for_timeout(100)
    await page.get_by_role("button", name=f"Details of job {job_id}").click()
    await expect(page.locator("#job-detail")).to_contain_text("on purpose")
    await retry.click()
    await expect(page.get_by_role("status")).to_contain_text(f"Job {job_id} is")


async def test_an_admin_grants_and_revokes_a_role(page: Page, server: Server) -> None:
    await _open(page, "users")
    await page.get_by_label("Name or email contains").fill(server.member)
    await page.get_by_role("button", name="Search").click()
    row = page.get_by_role("row").filter(has_text=server.member)
    await row.get_by_role("button", name=f"Grant admin for {server.member}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Granted admin to {server.member}")
    await expect(row.get_by_role("cell", name="admin, user")).to_be_visible()
    await row.get_by_role("button", name=f"Revoke admin for {server.member}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Revoked admin from {server.member}")
    await expect(row.get_by_role("cell", name="user", exact=True)).to_be_visible()
    await row.get_by_role("button", name=f"Sessions of {server.member}").click()
    await expect(page.locator("#user-sessions")).to_contain_text(f"Sessions of {server.member}")


async def test_an_admin_ends_a_users_session_and_deletes_the_user(
    page: Page, server: Server
) -> None:
    email = f"leaver-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(base_url=server.base) as http:
        body = {"name": "Leaver", "email": email, "password": PASSWORD}
        assert (await http.post("/api/v1/auth/register", json=body)).status_code == 201
        r = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        refresh = r.json()["refresh_token"]

    await _open(page, "users")
    await page.get_by_label("Name or email contains").fill(email)
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name=f"Sessions of {email}").click()
    sessions = page.locator("#user-sessions")
    await sessions.get_by_role("button", name="End session", exact=False).click()
    await expect(page.get_by_role("status")).to_contain_text("Session ended")
    await expect(sessions).to_contain_text("Nothing here.")
    async with httpx.AsyncClient(base_url=server.base) as http:
        r = await http.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert r.status_code == 401

    await page.get_by_role("button", name=f"Delete {email}").click()  # the dialog is accepted
    await expect(page.get_by_role("status")).to_contain_text(f"Deleted {email}")
    await expect(page.get_by_role("row").filter(has_text=email)).to_have_count(0)


async def test_a_product_is_edited_and_archived_for_good(page: Page) -> None:
    name = f"Desk {uuid.uuid4().hex[:6]}"
    await _open(page, "products")
    form = page.locator("#product-form")
    await form.get_by_label("Name").fill(name)
    await form.get_by_label("Price").fill("99")
    await form.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Created {name}")
    await page.get_by_label("Name contains").fill(name)
    await page.get_by_role("button", name="Filter").click()
    await page.get_by_role("button", name=f"Edit {name}").click()
    await form.get_by_label("Price").fill("89.90")
    await form.get_by_label("Status").select_option("Archived")
    await form.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Saved {name}")
    row = page.get_by_role("row").filter(has_text=name)
    await expect(row).to_contain_text("89.90")
    await expect(row).to_contain_text("Archived")
    await page.get_by_role("button", name=f"Edit {name}").click()
    await expect(form.get_by_label("Status (Archived is final)")).to_be_disabled()


async def test_plugins_reload_from_the_console(page: Page) -> None:
    await _open(page, "plugins")
    await page.get_by_role("button", name="Reload plugins").click()
    await expect(page.get_by_role("status")).to_contain_text("Reloaded 1 plugins")
    await expect(page.get_by_role("row").filter(has_text="audit")).to_contain_text("active")
    # The reload is an audited config change, which the audit plugin flags.
    await _open(page, "audit")
    await expect(page.locator("#view table")).to_contain_text("admin.config_change")
    await expect(page.locator("#view table")).to_contain_text("audit: flag")


async def test_the_export_downloads_a_csv(page: Page) -> None:
    await _open(page, "products")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export CSV").click()
    download = await download_info.value
    assert download.suggested_filename == "products.csv"
    text = Path(await download.path()).read_text()
    assert (
        text.splitlines()[0]
        == "id,name,description,price,stock,category,status,created_at,updated_at"
    )


def _serve_html(body: str) -> Callable[[Route], Awaitable[None]]:
    async def handler(route: Route) -> None:
        await route.fulfill(content_type="text/html", body=body)

    return handler


async def test_cross_site_forms_and_requests_without_the_header_are_refused(
    page: Page, server: Server
) -> None:
    port = server.base.rsplit(":", 1)[1]
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{free_port()}"):
        # A hostile page on another site (localhost: the cookie is not sent at all) and on
        # another origin of the same site (the cookie is sent, the header is missing).
        attacker = await page.context.new_page()
        forms = "".join(
            f'<form id="{name}" method="post" action="{server.base}/api/v1/auth/{name}">'
            '<input name="refresh_token" value="x"></form>'
            for name in ("refresh", "logout")
        )
        await attacker.route(f"{origin}/evil", _serve_html(f"<body>{forms}</body>"))
        for name in ("refresh", "logout"):
            await attacker.goto(f"{origin}/evil")  # a submitted form navigates away
            async with attacker.expect_navigation() as info:
                await attacker.evaluate(f"document.getElementById('{name}').submit()")
            response = await info.value
            assert response is not None
            assert response.url == f"{server.base}/api/v1/auth/{name}"
            assert response.status in {403, 422}, (origin, name, response.status)
        await attacker.close()

    # A script of the console's own origin that leaves the header out is refused too.
    refused = await page.evaluate(
        "fetch('/api/v1/auth/refresh', {method: 'POST'})"
        ".then(async r => [r.status, (await r.json()).code])"
    )
    assert refused == [403, "FORBIDDEN"]
    # And the session survived all of it: the cookie still refreshes with the header.
    status = await page.evaluate(
        "fetch('/api/v1/auth/refresh', {method: 'POST', headers: {'X-Arcana-Client': 'browser'}})"
        ".then(r => r.status)"
    )
    assert status == 200


# Last, so the pages show what the tests above did.
async def test_every_page_renders_without_serious_accessibility_violations(
    page: Page, server: Server
) -> None:
    axe = Axe()
    timings: dict[str, float] = {}
    for name in PAGES:
        started = time.perf_counter()
        await _open(page, name)
        await expect(page.locator("#view h1")).to_be_visible()
        await expect(page.locator("#view").locator("table, dl, ol").first).to_be_visible()
        timings[name] = round((time.perf_counter() - started) * 1000)
        results = await axe.run(page)
        serious = [
            v for v in results.response["violations"] if v["impact"] in {"serious", "critical"}
        ]
        assert not serious, f"{name}: {[(v['id'], v['nodes'][0]['html']) for v in serious]}"
        await page.screenshot(
            path=str(server.shots / f"{server.backend}-{name}.png"), full_page=True
        )
    print(f"console page render times (ms, {server.backend}): {timings}")


async def test_the_console_works_from_the_keyboard(page: Page) -> None:
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    await page.get_by_role("link", name="Jobs", exact=True).focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#view h1")).to_have_text("Jobs")
    await expect(page.locator("#main")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_label("Status", exact=True)).to_be_focused()
