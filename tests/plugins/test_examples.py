"""The example plugins: the committed modules implement the audit policy, building them from
source gives modules with the same behaviour, and every one of them flags exactly the events
the Rust plugin flags."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from arcana.adapters.plugins.host import PluginHost, PluginLimits
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
EXAMPLES = ["audit.wasm", "audit-as.wasm", "audit-c.wasm", "audit-wasip1.wasm"]

# Edge cases of reading the event, beyond CASES: the other plugins must answer as the Rust one
# (serde_json into a struct of five strings) does.
_FIELDS = rb'"user_id":"u","resource":"r","action":"export","timestamp":"t"'


def _event(extra: bytes = b"", *, event_type: bytes = rb'"user.data_access"', user: bytes = b'"u"',
           tail: bytes = b"") -> bytes:  # fmt: skip
    fields = _FIELDS.replace(b'"u"', user)
    return b'{"event_type":' + event_type + b"," + fields + extra + b"}" + tail


EDGES: list[bytes] = [
    b"",
    b"   ",
    b"{}",
    b"null",
    b"1",
    b'"user.data_access"',
    _event(),
    _event(tail=b"  \n"),
    _event(tail=b"x"),
    _event(b',"event_type":"x"'),
    _event(b',"metadata":{"a":[1,2.5e3,-0,true,null,"\\u00e9"]}'),
    _event(b',"metadata":{"a":01}'),
    _event(b',"metadata":[1,]'),
    _event(b',"metadata":{"a":1.}'),
    _event(b',"metadata":{"a":tru}'),
    _event(event_type=b"1"),
    _event(event_type=b"null"),
    _event(event_type=b'"admin.config_change"'),
    b'{"event_type":"admin.config_change","user_id":"u","resource":"r","action":"a"}',
    _event(event_type=b'"admin.config_chang\\u0065"'),
    _event().replace(b'"event_type"', b'"event\\u005ftype"'),
    _event().replace(b'"export"', b'"exp\\/ort"'),
    _event(user=b'"\\ud83d\\ude00"'),
    _event(user=b'"\\ud83d"'),
    _event(user=b'"tab\\tok"'),
    _event(user=b'"raw\ttab"'),
    _event(user=b'"bad\\x"'),
    _event(user=b'"\xff"'),
    _event(user=b'"\xc3\xa9"'),
    _event(user=b'"\xc3"'),
    _event(user=b'"\xed\xa0\x80"'),
    _event(b',"m":' + b"[" * 126 + b"]" * 126),
    _event(b',"m":' + b"[" * 127 + b"]" * 127),
    _event(b',"m":' + b"[" * 200 + b"]" * 200),
    b'["user.data_access","u","r","export","t"]',
    b'["admin.config_change","u","r","a","t"]',
    b'["user.data_access","u","r","export"]',
    b'["user.data_access","u","r","export","t","extra"]',
    b"[]",
    _event()[:-1],
]


def policy_results(path: Path, tmp_path: Path, payloads: list[bytes] | None = None) -> list[int]:
    d = tmp_path / "one"
    d.mkdir(exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    shutil.copy(path, d / path.name)
    host = PluginHost(d, PluginLimits(max_failures=10**9))  # -1 is an answer here
    host.start()
    try:
        [status] = host.load_all()
        assert status.state == "active", status.error
        assert status.version == 1
        return [host.run(p)[0][1] for p in (payloads or [p for p, _ in CASES])]
    finally:
        host.close()


@pytest.mark.parametrize("name", EXAMPLES)
def test_committed_example_follows_the_policy(name: str, tmp_path: Path) -> None:
    assert policy_results(PLUGINS / name, tmp_path) == [code for _, code in CASES]


def test_every_example_flags_exactly_what_the_rust_plugin_flags(tmp_path: Path) -> None:
    payloads = [p for p, _ in CASES] + EDGES
    expected = policy_results(PLUGINS / "audit.wasm", tmp_path, payloads)
    assert expected.count(1) >= 10  # the edge cases do reach the policy
    for name in ("audit-c.wasm", "audit-wasip1.wasm"):
        got = policy_results(PLUGINS / name, tmp_path, payloads)
        assert [(p, g) for p, g, e in zip(payloads, got, expected, strict=True) if g != e] == []


def test_example_output_reaches_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The C and Rust std plugins report an event they cannot read on stderr."""
    with caplog.at_level(logging.INFO, logger="arcana.plugins.output"):
        policy_results(PLUGINS / "audit-c.wasm", tmp_path, [b"{not json"])
        policy_results(PLUGINS / "audit-wasip1.wasm", tmp_path, [b"{not json"])
    messages = [r.getMessage() for r in caplog.records if r.name == "arcana.plugins.output"]
    assert messages == [
        "plugin audit-c stderr: unreadable audit event (9 bytes) at byte 1",
        "plugin audit-wasip1 stderr: unreadable audit event (9 bytes): "
        "key must be a string at line 1 column 2",
    ]


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
    not _have("/usr/bin/cargo", "/usr/lib/rustlib/wasm32-wasi"),
    reason="Debian Rust toolchain for wasm32-wasi not installed (see .ci/run)",
)
def test_rust_wasip1_std_plugin_builds_from_source(tmp_path: Path) -> None:
    """Debian's rustc 1.63 names the WASI preview 1 target wasm32-wasi (wasm32-wasip1 since
    rustc 1.78); build.sh uses that name."""
    out = tmp_path / "audit-wasip1.wasm"
    subprocess.run([str(PLUGINS / "audit-wasip1" / "build.sh"), str(out)], check=True)
    assert policy_results(out, tmp_path) == [code for _, code in CASES]


@pytest.mark.slow
@pytest.mark.skipif(
    not _have("clang", "/usr/lib/wasm32-wasi/libc.a"),
    reason="clang with wasi-libc not installed (see scripts/system-deps.sh)",
)
def test_c_plugin_builds_from_source(tmp_path: Path) -> None:
    out = tmp_path / "audit-c.wasm"
    subprocess.run([str(PLUGINS / "audit-c" / "build.sh"), str(out)], check=True)
    payloads = [p for p, _ in CASES] + EDGES
    assert policy_results(out, tmp_path, payloads) == policy_results(
        PLUGINS / "audit.wasm", tmp_path, payloads
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not (PLUGINS / "audit-as" / "node_modules" / ".bin" / "asc").exists() and not _have("npm"),
    reason="neither the AssemblyScript compiler nor npm is installed (see .ci/run)",
)
def test_assemblyscript_plugin_builds_from_source(tmp_path: Path) -> None:
    out = tmp_path / "audit-as.wasm"
    subprocess.run([str(PLUGINS / "audit-as" / "build.sh"), str(out)], check=True)
    assert policy_results(out, tmp_path) == [code for _, code in CASES]
