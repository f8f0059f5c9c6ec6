"""Hostile plugins: a module asking for network access is refused at load with a message naming
the import (the WASI preview 1 functions toolchains emit link, with nothing granted); one that
allocates past its memory cap, loops, sleeps or traps is stopped and reported while requests go
on and the well-behaved plugin keeps working."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from arcana.api.app import create_app
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.errors import ValidationFailed
from arcana.lifecycle import Lifecycle
from tests.auth_support import bearer, user_token
from tests.conftest import truncate_all, wait_for

pytestmark = pytest.mark.reliability

TESTDATA = Path(__file__).resolve().parents[2] / "plugins" / "testdata"

# Grows its memory until the cap refuses, then aborts (as a real allocator does on OOM).
GREEDY = """
(module
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32)
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))
"""


def _wasi_importer(name: str, params: str, results: str = "(result i32)") -> str:
    return f"""
(module
  (import "wasi_snapshot_preview1" "{name}" (func $f {params} {results}))
  (memory (export "memory") 1)
  (func (export "on_audit_event") (param i32 i32) (result i32) (i32.const 0)))
"""


# Contract §6: these link (no preopens, so the file functions find nothing; a real clock; a
# sleep bounded by the call's deadline).
LINKED = {
    "opens_file": _wasi_importer("path_open", "(param i32 i32 i32 i32 i32 i64 i64 i32 i32)"),
    "lists_preopens": _wasi_importer("fd_prestat_get", "(param i32 i32)"),
    "reads_dir": _wasi_importer("fd_readdir", "(param i32 i32 i32 i64 i32)"),
    "reads_clock": _wasi_importer("clock_time_get", "(param i32 i64 i32)"),
    "sleeps": _wasi_importer("poll_oneoff", "(param i32 i32 i32 i32)"),
}
UNGRANTED = {
    "opens_socket": (_wasi_importer("sock_accept", "(param i32 i32 i32)"), "sock_accept"),
    "receives": (_wasi_importer("sock_recv", "(param i32 i32 i32 i32 i32 i32)"), "sock_recv"),
}


@pytest.fixture
async def plugin_container(settings: Settings, tmp_path: Path) -> AsyncIterator[App]:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name in ("bump", "looper", "trapper", "hog", "sleeper"):
        shutil.copy(TESTDATA / f"{name}.wat", plugins / f"{name}.wat")
    (plugins / "greedy.wat").write_text(GREEDY)
    for name, (wat, _) in UNGRANTED.items():
        (plugins / f"{name}.wat").write_text(wat)
    for name, wat in LINKED.items():
        (plugins / f"{name}.wat").write_text(wat)
    s = settings.replace(plugins_dir=plugins, plugin_memory_mb=2, plugin_max_failures=1000)
    if not s.is_sqlite:
        await truncate_all(s.database.url.get_secret_value())
    c_process = Lifecycle.build(s)
    c = c_process.app
    await c_process.start(migrate_embedded=False)
    c_process.start_audit_plugins()
    try:
        yield c
    finally:
        await c_process.stop()


@pytest.fixture
async def plugin_client(plugin_container: App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(plugin_container), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def _loaded_plugins(client: httpx.AsyncClient, token: str) -> dict[str, dict[str, object]]:
    async def loaded() -> dict[str, dict[str, object]] | None:
        resp = await client.get("/api/v1/admin/plugins", headers=bearer(token))
        assert resp.status_code == 200
        return {p["name"]: p for p in resp.json()["plugins"]} or None

    result: dict[str, dict[str, object]] = await wait_for(loaded, timeout=30)
    return result


async def test_socket_imports_are_refused_at_load_and_other_wasi_links(
    plugin_container: App, plugin_client: httpx.AsyncClient
) -> None:
    _, token = await user_token(plugin_container, admin=True)
    by_name = await _loaded_plugins(plugin_client, token)
    for name, (_, function) in UNGRANTED.items():
        assert by_name[name]["state"] == "failed", by_name[name]
        message = by_name[name].get("error") or ""
        assert f"wasi_snapshot_preview1.{function}; network access is not allowed" in message
        # The same check answers `arcana plugins check` (one clear line).
        with pytest.raises(ValidationFailed, match=f"{function}; network access"):
            await plugin_container.plugins.check(
                plugin_container.settings.plugins.dir / f"{name}.wat"
            )
    for name in LINKED:
        assert by_name[name]["state"] == "active", by_name[name]
    assert by_name["bump"]["state"] == "active"


async def test_hostile_plugins_are_stopped_and_reported_while_requests_go_on(
    plugin_container: App, plugin_client: httpx.AsyncClient
) -> None:
    _, token = await user_token(plugin_container, admin=True)
    await _loaded_plugins(plugin_client, token)
    n = 4
    for i in range(n):
        resp = await plugin_client.post(
            "/api/v1/products", json={"name": f"P{i}", "price": 1}, headers=bearer(token)
        )
        assert resp.status_code == 201, resp.text  # every request answered, none held up

    async def entries() -> list[dict[str, object]] | None:
        resp = await plugin_client.get(
            "/api/v1/admin/audit", params={"size": 100}, headers=bearer(token)
        )
        data: list[dict[str, object]] = resp.json()["data"]
        writes = [e for e in data if e["event_type"] != "user.login"]
        return writes if len(writes) >= n else None

    found = await wait_for(entries, timeout=60, interval=0.1)
    for entry in found:
        codes = {r["plugin"]: r["code"] for r in entry["results"]}  # type: ignore[index, union-attr]
        assert codes["bump"] == 1  # the good plugin still runs (and flags)
        for hostile in ("looper", "trapper", "greedy", "sleeper"):
            assert codes[hostile] < 0, (hostile, codes)
        # hog stops growing when the cap refuses: it holds at most the cap (2 MiB = 32 pages).
        assert 0 <= codes["hog"] <= 32, codes
    resp = await plugin_client.get("/api/v1/admin/plugins", headers=bearer(token))
    stats = {p["name"]: p for p in resp.json()["plugins"]}
    for hostile in ("looper", "trapper", "greedy", "sleeper"):
        assert stats[hostile]["errors"] >= n, stats[hostile]
    assert stats["bump"]["errors"] == 0
    assert stats["bump"]["state"] == "active"
