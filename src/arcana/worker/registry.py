"""Job handlers by type: exact (``email.welcome``) or prefix (``email.*``).

A handler is an async function taking a ``JobContext``, or an object (or a class, built once
with no arguments) with ``async def handle(self, ctx)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from arcana.domain.jobs import Job


@dataclass(slots=True)
class JobContext:
    job: Job
    worker_id: str
    log: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(logging.getLogger("arcana.jobs"))
    )

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        return self.job.attempt


HandlerFn = Callable[[JobContext], Awaitable[Any]]


class HandlerObject(Protocol):
    async def handle(self, ctx: JobContext) -> Any: ...


class HandlerRegistry:
    def __init__(self) -> None:
        self._exact: dict[str, HandlerFn] = {}
        self._prefix: list[tuple[str, HandlerFn]] = []

    def register(self, pattern: str, handler: HandlerFn | HandlerObject | type) -> None:
        fn = self._as_function(handler)
        if pattern.endswith("*"):
            self._prefix.append((pattern[:-1], fn))
            self._prefix.sort(key=lambda p: -len(p[0]))  # longest prefix wins
        else:
            self._exact[pattern] = fn

    def handler(self, pattern: str) -> Callable[[HandlerFn], HandlerFn]:
        def deco(fn: HandlerFn) -> HandlerFn:
            self.register(pattern, fn)
            return fn

        return deco

    @staticmethod
    def _as_function(handler: Any) -> HandlerFn:
        if isinstance(handler, type):
            handler = handler()
        method = getattr(handler, "handle", None)
        if method is not None and callable(method):
            return method  # type: ignore[no-any-return]
        if callable(handler):
            return handler  # type: ignore[no-any-return]
        raise TypeError(f"not a job handler: {handler!r}")

    def resolve(self, job_type: str) -> HandlerFn | None:
        fn = self._exact.get(job_type)
        if fn is not None:
            return fn
        for prefix, pfn in self._prefix:
            if job_type.startswith(prefix):
                return pfn
        return None
