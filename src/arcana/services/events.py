"""Reactions to domain events (contract §5) and the registry that routes events to them.

Every handler is idempotent: the jobs it enqueues carry a ``job_id`` derived from the event
id, so a redelivered event finds its job already queued and nothing happens twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from arcana.domain.delivery import Envelope, EventHandler, JobEnqueuer
from arcana.domain.jobs import JobRequest
from arcana.errors import ServiceUnavailable

log = logging.getLogger(__name__)

WELCOME_EMAIL_JOB = "email.welcome"
SECURITY_NOTICE_JOB = "email.security_notice"
ADMIN_STOCK_NOTICE_JOB = "notify.admins_stock"

_JOB_NAMESPACE = uuid.UUID("6f3c1a52-8d0e-4d4b-9a51-0b7f7f2a9e10")


def job_id_for(event_id: str, job_type: str) -> str:
    """The one job an event may cause of a given type; stable across redeliveries."""
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{event_id}/{job_type}"))


class EventHandlers:
    """Handlers by event type. ``dispatch`` runs every handler of the event's type in order
    and lets the first failure propagate (the caller retries the whole event)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}

    def register(self, event_type: str, handler: EventHandler) -> None:
        self._handlers.setdefault(event_type, []).append(handler)

    def handles(self, event_type: str) -> bool:
        return bool(self._handlers.get(event_type))

    @property
    def event_types(self) -> list[str]:
        return sorted(self._handlers)

    async def dispatch(self, envelope: Envelope) -> None:
        for handler in self._handlers.get(str(envelope.get("event_type")), ()):
            await handler(envelope)


class DeferredJobs:
    """A ``JobEnqueuer`` looked up at call time, so handlers can be built before the queue."""

    def __init__(self, provider: Callable[[], JobEnqueuer | None]) -> None:
        self._provider = provider

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> object:
        queue = self._provider()
        if queue is None:
            raise ServiceUnavailable("no job queue is configured")
        return await queue.enqueue(request, job_id=job_id)


class EventReactions:
    """The handlers of contract §5."""

    def __init__(self, jobs: JobEnqueuer) -> None:
        self._jobs = jobs

    def register(self, handlers: EventHandlers) -> EventHandlers:
        handlers.register("auth.user_registered", self.user_registered)
        handlers.register("auth.password_changed", self.password_changed)
        handlers.register("product.low_stock", self.stock_alert)
        handlers.register("product.out_of_stock", self.stock_alert)
        return handlers

    async def _enqueue(self, envelope: Envelope, request: JobRequest) -> None:
        await self._jobs.enqueue(request, job_id=job_id_for(str(envelope["id"]), request.job_type))

    async def user_registered(self, envelope: Envelope) -> None:
        data = envelope.get("data") or {}
        await self._enqueue(
            envelope,
            JobRequest(
                WELCOME_EMAIL_JOB,
                {"user_id": data["userId"], "email": data["email"], "name": data.get("name", "")},
            ),
        )

    async def password_changed(self, envelope: Envelope) -> None:
        data = envelope.get("data") or {}
        log.info("password changed", extra={"user_id": data.get("userId")})
        await self._enqueue(envelope, JobRequest(SECURITY_NOTICE_JOB, {"user_id": data["userId"]}))

    async def stock_alert(self, envelope: Envelope) -> None:
        data = envelope.get("data") or {}
        event_type = str(envelope["event_type"])
        stock = 0 if event_type == "product.out_of_stock" else data.get("stock")
        log.warning(
            "product stock alert",
            extra={"event_type": event_type, "product_id": data.get("productId"), "stock": stock},
        )
        await self._enqueue(
            envelope,
            JobRequest(
                ADMIN_STOCK_NOTICE_JOB,
                {"productId": data.get("productId"), "stock": stock, "event_type": event_type},
            ),
        )


def build_event_handlers(jobs: JobEnqueuer) -> EventHandlers:
    return EventReactions(jobs).register(EventHandlers())
