"""End to end through the REST API: plugins listed and reloaded by an admin, flagged events in
the audit log, and a slow plugin never holding up a request. Both backends."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.audit import AuditEvent
from arcana.lifecycle import Lifecycle
from tests.conftest import wait_for
from tests.process import arcana_bin

# Tokens below are minted for the stored users of this fixture.
pytestmark = pytest.mark.usefixtures("seeded_principals")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin_files() -> list[str]:
    return ["audit.wasm", "audit-as.wasm", "testdata/trapper.wat", "testdata/envimport.wat"]


@pytest.fixture
def plugin_settings() -> dict[str, object]:
    return {}


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, plugin_files: list[str], plugin_settings: dict[str, object]
) -> Settings:
    d = tmp_path / "plugins"
    d.mkdir()
    for name in plugin_files:
        shutil.copy(ROOT / "plugins" / name, d / Path(name).name)
    return settings.replace(plugins_dir=d, **plugin_settings)


def admin_headers(container: App) -> dict[str, str]:
    token = container.auth_area.tokens.issue(
        "admin-1", frozenset({"user", "admin"}), generation=0
    ).token
    return {"Authorization": f"Bearer {token}"}


def user_headers(container: App) -> dict[str, str]:
    token = container.auth_area.tokens.issue("user-1", frozenset({"user"}), generation=0).token
    return {"Authorization": f"Bearer {token}"}


async def test_admin_routes_need_an_admin(client: httpx.AsyncClient, container: App) -> None:
    for method, url in [
        ("GET", "/api/v1/admin/plugins"),
        ("POST", "/api/v1/admin/plugins/reload"),
        ("GET", "/api/v1/admin/audit?flagged=true"),
    ]:
        r = await client.request(method, url)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        r = await client.request(method, url, headers=user_headers(container))
        assert r.status_code == 403
    r = await client.get("/api/v1/admin/audit?size=0", headers=admin_headers(container))
    assert r.status_code == 422


async def test_reload_is_audited_and_flagged_end_to_end(
    client: httpx.AsyncClient, process: Lifecycle, container: App
) -> None:
    process.start_api_loops()
    headers = admin_headers(container)
    r = await client.get("/api/v1/admin/plugins", headers=headers)
    assert r.status_code == 200
    plugins = {p["name"]: p for p in r.json()["plugins"]}
    assert set(plugins) == {"audit", "audit-as", "trapper", "envimport"}
    assert plugins["audit"]["state"] == "active"
    assert plugins["audit"]["version"] == 1
    assert len(plugins["audit"]["digest"]) == 64
    assert plugins["envimport"]["state"] == "failed"
    assert set(plugins["audit"]) >= {
        "name", "file", "digest", "version", "state", "calls", "flags", "errors", "p50_us", "p99_us"
    }  # fmt: skip

    r = await client.post("/api/v1/admin/plugins/reload", headers=headers)
    assert r.status_code == 200
    container.audit.emit(AuditEvent("user.login", "user-1", "auth", "login"))
    container.audit.emit(
        AuditEvent("user.data_access", "user-1", "products", "export", {"format": "csv"})
    )

    async def flagged() -> list[dict[str, object]] | None:
        r = await client.get("/api/v1/admin/audit?flagged=true&page=0&size=10", headers=headers)
        assert r.status_code == 200
        body = r.json()
        return body["data"] if body["total"] == 2 else None

    entries = await wait_for(flagged)
    kinds = {e["event_type"]: e for e in entries}
    config = kinds["admin.config_change"]
    assert config["user_id"] == "admin-1"
    assert config["resource"] == "plugins"
    assert config["flagged"] is True
    assert {(x["plugin"], x["code"]) for x in config["results"]} == {
        ("audit", 1),
        ("audit-as", 1),
        ("trapper", -1000),
    }
    export = kinds["user.data_access"]
    assert export["metadata"] == {"format": "csv"}
    assert export["action"] == "export"
    assert str(export["timestamp"]).endswith("Z")

    r = await client.get("/api/v1/admin/plugins", headers=headers)
    trapper = next(p for p in r.json()["plugins"] if p["name"] == "trapper")
    assert trapper["errors"] >= 3
    metrics = (await client.get("/metrics")).text
    assert 'arcana_plugin_calls_total{outcome="flag",plugin="audit"}' in metrics


@pytest.mark.parametrize("plugin_files", [["testdata/looper.wat"]])
@pytest.mark.parametrize("plugin_settings", [{"plugin_fuel": 10**15, "plugin_timeout_ms": 1500}])
async def test_a_slow_plugin_never_slows_a_request(
    client: httpx.AsyncClient, process: Lifecycle, container: App
) -> None:
    # A plugin that spins until its deadline: requests answer while it is still running.
    host = container.plugins_area.sink.registry.host
    process.start_api_loops()
    sink = container.plugins_area.sink
    container.audit.emit(AuditEvent("user.login", "user-1", "auth", "login"))
    await wait_for(lambda: sink._queue.empty())
    r = await client.get("/api/v1/admin/plugins", headers=admin_headers(container))
    assert r.status_code == 200
    assert sink.processed == 0  # the plugin call is still running
    await wait_for(lambda: sink.processed == 1)
    assert host.statuses()[0].errors == 1


def test_cli_check_and_list(tmp_path: Path) -> None:
    ok = subprocess.run(
        [arcana_bin(), "plugins", "check", str(ROOT / "plugins" / "audit.wasm")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ARCANA_VAR_DIR": str(tmp_path / "var")},
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "-> 1" in ok.stdout
    assert "fuel" in ok.stdout
    bad = subprocess.run(
        [arcana_bin(), "plugins", "check", str(ROOT / "plugins" / "testdata" / "envimport.wat")],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ARCANA_VAR_DIR": str(tmp_path / "var")},
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0
    assert "env.log" in bad.stderr
    listed = subprocess.run(
        [arcana_bin(), "plugins", "list"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "ARCANA_VAR_DIR": str(tmp_path / "var"),
            "ARCANA_PLUGINS_DIR": str(ROOT / "plugins"),
        },
        cwd=tmp_path,
    )
    assert listed.returncode == 0, listed.stderr
    assert "audit-as" in listed.stdout
    assert "active" in listed.stdout


@pytest.mark.parametrize("plugin_files", [["testdata/leaky.wat", "testdata/chatty.wat"]])
@pytest.mark.parametrize("plugin_settings", [{"plugin_memory_mb": 1, "plugin_workers": 1}])
async def test_recycling_and_dropped_output_are_in_the_plugin_list(
    client: httpx.AsyncClient, process: Lifecycle, container: App
) -> None:
    """A plugin without dealloc at a 1 MiB cap is renewed while events keep flowing; what a
    plugin writes past the per-call bound is counted. Both show in the admin list."""
    process.start_api_loops()
    headers = admin_headers(container)
    event = AuditEvent("user.data_access", "user-1", "products", "read", {"pad": "x" * 2000})
    for _ in range(600):  # ~1.3 MB of never-freed buffers: more than one 1 MiB instance holds
        container.audit.emit(event)

    async def settled() -> dict[str, dict[str, object]] | None:
        r = await client.get("/api/v1/admin/plugins", headers=headers)
        assert r.status_code == 200
        plugins = {p["name"]: p for p in r.json()["plugins"]}
        return plugins if plugins["leaky"]["calls"] == 600 else None

    plugins = await wait_for(settled, timeout=60)
    assert plugins["leaky"]["errors"] == 0
    assert plugins["leaky"]["recycled"] >= 1
    assert plugins["chatty"]["errors"] == 0
    assert plugins["chatty"]["output_dropped"] > 0
