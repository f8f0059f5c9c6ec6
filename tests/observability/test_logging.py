"""Log lines carry the ids of the current span; the format follows ARCANA_LOG_JSON, the
terminal and ARCANA_ENV."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from arcana import tracing
from arcana.log import add_trace_ids, configure_logging, wants_json


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.mark.parametrize(
    ("json_setting", "env", "tty", "expected"),
    [
        (None, "production", False, True),
        (None, "production", True, False),
        (None, "development", False, False),
        (True, "development", True, True),
        (False, "production", False, False),
    ],
)
def test_format_choice(json_setting: bool | None, env: str, tty: bool, expected: bool) -> None:
    assert wants_json(json_setting, env, tty) is expected


def test_json_lines_carry_trace_and_span_ids_next_to_request_id(
    spans: InMemorySpanExporter, restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True, env="production")
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        with tracing.span("work") as current:
            assert current is not None
            logging.getLogger("arcana.test").info("inside")
        logging.getLogger("arcana.test").info("outside")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    inside = next(line for line in lines if line["event"] == "inside")
    outside = next(line for line in lines if line["event"] == "outside")
    ctx = current.get_span_context()
    assert inside["request_id"] == "req-1"
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in outside


def test_readable_lines_are_key_value(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=None, env="development")
    logging.getLogger("arcana.test").info("hello", extra={"job_type": "system.noop"})
    err = capsys.readouterr().err
    assert "hello" in err
    assert "job_type=system.noop" in err
    assert not err.lstrip().startswith("{")


def test_no_ids_when_tracing_is_off() -> None:
    assert not tracing.ENABLED
    assert add_trace_ids(None, "info", {"event": "x"}) == {"event": "x"}
