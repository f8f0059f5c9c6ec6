"""Audit plugin calls: one span per plugin in the trace of the request that emitted the
event, and a call-duration histogram per plugin."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from arcana import tracing
from arcana.bootstrap import App
from arcana.config import Settings
from arcana.domain.audit import AuditEvent
from arcana.lifecycle import Lifecycle
from tests.conftest import wait_for
from tests.observability.tracing_support import named

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    d = tmp_path / "plugins"
    d.mkdir()
    shutil.copy(ROOT / "plugins" / "audit.wasm", d / "audit.wasm")
    return settings.replace(plugins_dir=d)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_plugin_calls_are_spans_in_the_emitting_trace(
    spans: InMemorySpanExporter, process: Lifecycle, container: App
) -> None:
    before = REGISTRY.get_sample_value(
        "arcana_plugin_call_duration_seconds_count", {"plugin": "audit"}
    )
    process.start_api_loops()
    with tracing.span("request") as request:
        assert request is not None
        container.audit.emit(AuditEvent("user.login", "user-1", "auth", "login"))
    [call] = await wait_for(lambda: named(spans.get_finished_spans(), "plugin.call"), 20)
    assert call.attributes is not None
    assert call.attributes["arcana.plugin"] == "audit"
    [batch] = await wait_for(lambda: named(spans.get_finished_spans(), "audit.plugins"), 20)
    assert call.parent is not None
    assert call.parent.span_id == batch.context.span_id
    assert batch.parent is not None
    assert batch.parent.span_id == request.get_span_context().span_id
    after = REGISTRY.get_sample_value(
        "arcana_plugin_call_duration_seconds_count", {"plugin": "audit"}
    )
    assert (after or 0) == (before or 0) + 1
