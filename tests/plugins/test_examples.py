"""The example plugins: the committed modules implement the audit policy, and building them
from source gives modules with the same behaviour."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from arcana.adapters.plugins.host import PluginHost
from arcana.adapters.plugins.sink import encode_event
from arcana.domain.audit import AuditEvent

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"

CASES: list[tuple[bytes, int]] = [
    (encode_event(AuditEvent("user.login", "u", "auth", "login")), 0),
    (encode_event(AuditEvent("user.login_failed", "u", "auth", "login")), 0),
    (encode_event(AuditEvent("user.data_access", "u", "products", "export")), 1),
    (encode_event(AuditEvent("user.data_access", "u", "products", "read")), 0),
    (encode_event(AuditEvent("admin.config_change", "u", "plugins", "reload")), 1),
    (encode_event(AuditEvent("product.updated", "u", "products/1", "update", {"x": [1]})), 0),
    (b"{not json", -1),
    (b"[]", -1),
    (b'{"event_type":"user.login"}', -1),
]


def policy_results(path: Path, tmp_path: Path) -> list[int]:
    d = tmp_path / "one"
    d.mkdir(exist_ok=True)
    shutil.copy(path, d / path.name)
    host = PluginHost(d)
    host.start()
    try:
        [status] = host.load_all()
        assert status.state == "active", status.error
        assert status.version == 1
        return [host.run(payload)[0][1] for payload, _ in CASES]
    finally:
        host.close()


@pytest.mark.parametrize("name", ["audit.wasm", "audit-as.wasm"])
def test_committed_example_follows_the_policy(name: str, tmp_path: Path) -> None:
    assert policy_results(PLUGINS / name, tmp_path) == [code for _, code in CASES]


def _have(*tools: str) -> bool:
    return all(shutil.which(t) or Path(t).exists() for t in tools)


@pytest.mark.slow
@pytest.mark.skipif(
    not _have("/usr/bin/cargo", "/usr/lib/rustlib/wasm32-wasi"),
    reason="Debian Rust toolchain for wasm32-wasi not installed (see .ci/run)",
)
def test_rust_plugin_builds_from_source(tmp_path: Path) -> None:
    out = tmp_path / "audit.wasm"
    # The crate's own target/ directory (ignored by git) keeps rebuilds incremental.
    subprocess.run([str(PLUGINS / "audit" / "build.sh"), str(out)], check=True)
    assert policy_results(out, tmp_path) == [code for _, code in CASES]


@pytest.mark.slow
@pytest.mark.skipif(
    not (PLUGINS / "audit-as" / "node_modules" / ".bin" / "asc").exists() and not _have("npm"),
    reason="neither the AssemblyScript compiler nor npm is installed (see .ci/run)",
)
def test_assemblyscript_plugin_builds_from_source(tmp_path: Path) -> None:
    out = tmp_path / "audit-as.wasm"
    subprocess.run([str(PLUGINS / "audit-as" / "build.sh"), str(out)], check=True)
    assert policy_results(out, tmp_path) == [code for _, code in CASES]
