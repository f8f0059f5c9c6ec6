"""structlog set-up, done once per entry point; context ids travel in contextvars.

Format: ``json`` (``ARCANA_LOG_JSON``) decides when set; unset, a terminal (stderr is a tty) or
``ARCANA_ENV=development`` gets readable ``key=value`` lines (coloured on a tty unless
``NO_COLOR`` is set) and everything else JSON lines.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from arcana import tracing


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``trace_id``/``span_id`` of the current span beside ``request_id`` (tracing on only)."""
    ids = tracing.log_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def _structlog_var(key: str) -> contextvars.ContextVar[Any]:
    """structlog's own context variable for ``key``: the one ``bind_contextvars`` sets and
    ``merge_contextvars`` reads (created here if it is not yet). Setting it directly costs one
    ``ContextVar.set``; ``bind_contextvars`` builds a dict and a key string on every call."""
    token = structlog.contextvars.bind_contextvars(**{key: None})[key]
    token.var.reset(token)
    return token.var


# ``REQUEST_ID.set(rid)`` is ``bind_contextvars(request_id=rid)``; ``REQUEST_ID.reset(token)``
# undoes it as ``unbind_contextvars`` would when nothing was bound before.
REQUEST_ID = _structlog_var("request_id")


def wants_json(json: bool | None, env: str | None, isatty: bool) -> bool:
    if json is not None:
        return json
    return not (isatty or env == "development")


def configure_logging(
    level: str = "INFO", json: bool | None = True, env: str | None = None
) -> None:
    tty = sys.stderr.isatty()
    json = wants_json(json, env, tty)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=tty and not os.environ.get("NO_COLOR"))
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ``extra={...}`` fields of standard-library log calls become keys of the line.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
