"""Spans for SQL statements and Redis commands, attached only when tracing is on, and made
only inside a recorded span (see ``tracing.recording``).

Written here instead of adding ``opentelemetry-instrumentation-sqlalchemy`` / ``-redis``: each
is a few lines on hooks the client libraries already offer (SQLAlchemy cursor events, and the
one ``execute_command`` every redis-py command goes through), while the packages would bring
``wrapt`` and the instrumentation framework for the same spans. Statement text is recorded
(parameters are bound, so values such as password hashes never appear); Redis spans carry the
command name only, never keys or values.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana import tracing

_SPAN_KEY = "arcana.span"


def instrument_engine(engine: AsyncEngine, system: str) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
    ) -> None:
        if context is None or not tracing.recording():
            return
        operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
        setattr(
            context,
            _SPAN_KEY,
            tracing.start_span(
                f"sql {operation}",
                {
                    "db.system": system,
                    "db.operation.name": operation,
                    "db.query.text": statement[:2000],
                },
                kind="client",
                parent=None,
            ),
        )

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
    ) -> None:
        current = getattr(context, _SPAN_KEY, None)  # None unless _before made a span
        if current is not None:
            tracing.end_span(current)
            setattr(context, _SPAN_KEY, None)

    @event.listens_for(sync_engine, "handle_error")
    def _error(exception_context: Any) -> None:
        context = exception_context.execution_context
        if context is not None:
            tracing.end_span(
                getattr(context, _SPAN_KEY, None), exception_context.original_exception
            )
            setattr(context, _SPAN_KEY, None)


def instrument_redis(redis: Redis) -> None:
    """Wrap this client's ``execute_command`` and its pipelines' ``execute``."""
    execute_command: Any = redis.execute_command
    make_pipeline = redis.pipeline

    async def traced_command(*args: Any, **options: Any) -> Any:
        if not tracing.recording():
            return await execute_command(*args, **options)
        name = str(args[0]).split(" ", 1)[0].upper() if args else "?"
        with tracing.span(
            f"redis {name}", {"db.system": "redis", "db.operation.name": name}, kind="client"
        ):
            return await execute_command(*args, **options)

    def traced_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        execute = pipe.execute

        async def traced_execute(*a: Any, **kw: Any) -> Any:
            if not tracing.recording():
                return await execute(*a, **kw)
            with tracing.span(
                "redis pipeline",
                {
                    "db.system": "redis",
                    "db.operation.name": "PIPELINE",
                    "db.operation.batch.size": len(pipe.command_stack),
                },
                kind="client",
            ):
                return await execute(*a, **kw)

        pipe.execute = traced_execute  # type: ignore[method-assign]
        return pipe

    redis.execute_command = traced_command  # type: ignore[method-assign]
    redis.pipeline = traced_pipeline  # type: ignore[method-assign]
