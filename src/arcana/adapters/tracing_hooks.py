"""Spans for SQL statements and Redis commands, attached only when tracing is on, and made
only inside a recorded span (see ``tracing.recording``).

Written here instead of adding ``opentelemetry-instrumentation-sqlalchemy`` / ``-redis``: each
is a few lines on hooks the client libraries already offer (SQLAlchemy's dialect execution
hooks, and the one ``execute_command`` every redis-py command goes through), while the packages
would bring ``wrapt`` and the instrumentation framework for the same spans. Statement text
is recorded (parameters are bound, so values such as password hashes never appear); Redis spans
carry the command name only, never keys or values.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from arcana import tracing


def instrument_engine(engine: AsyncEngine, system: str) -> None:
    """SQL spans through the dialect's execution hooks (``do_execute`` and its two siblings).

    Why not the usual ``before_cursor_execute`` / ``after_cursor_execute`` pair: any
    connection-level listener on the engine makes every ``Connection`` build its own event
    dispatcher and run the begin / execute / commit dispatch loops for every statement, sampled
    or not (about 2,500 instructions per no-op job, counted with ``bench/tracing.py
    --callgrind``). A dialect hook is one function call per statement; unsampled, it returns
    ``False`` after ``tracing.recording()`` and SQLAlchemy executes the statement itself.
    Sampled, the hook executes the statement inside its span and returns ``True`` ("done"),
    which is what these hooks are for; an error propagates unchanged after being recorded."""
    dialect = engine.sync_engine.dialect

    def traced(execute: Any, *args: Any) -> bool:
        statement: str = args[1]
        operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
        current = tracing.start_span(
            f"sql {operation}",
            {
                "db.system": system,
                "db.operation.name": operation,
                "db.query.text": statement[:2000],
            },
            kind="client",
        )
        try:
            execute(*args)
        except BaseException as exc:
            tracing.end_span(current, exc)
            raise
        tracing.end_span(current)
        return True

    def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if not tracing.recording():
            return False
        return traced(dialect.do_execute, cursor, statement, parameters, context)

    def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if not tracing.recording():
            return False
        return traced(dialect.do_executemany, cursor, statement, parameters, context)

    def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        if not tracing.recording():
            return False
        return traced(dialect.do_execute_no_params, cursor, statement, context)

    event.listen(engine.sync_engine, "do_execute", _do_execute)
    event.listen(engine.sync_engine, "do_executemany", _do_executemany)
    event.listen(engine.sync_engine, "do_execute_no_params", _do_execute_no_params)


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
