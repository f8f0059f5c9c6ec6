"""Reactions to domain events (contract §5). The registry that routes events to them,
``EventHandlers``, is a domain port (``domain/delivery.py``) so delivery adapters need no service.

Every handler is idempotent: the jobs it enqueues carry a ``job_id`` derived from the event
id, so a redelivered event finds its job already queued and nothing happens twice.
"""

from __future__ import annotations

import logging
import uuid

from arcana.domain.delivery import Envelope, EventHandlers, JobEnqueuer
from arcana.domain.jobs import ADMIN_STOCK_NOTICE, SECURITY_NOTICE, WELCOME_EMAIL, JobRequest

log = logging.getLogger(__name__)

# Job type names as earlier callers import them; the catalogue in domain/jobs.py is the source.
WELCOME_EMAIL_JOB = WELCOME_EMAIL.name
SECURITY_NOTICE_JOB = SECURITY_NOTICE.name
ADMIN_STOCK_NOTICE_JOB = ADMIN_STOCK_NOTICE.name

_JOB_NAMESPACE = uuid.UUID("6f3c1a52-8d0e-4d4b-9a51-0b7f7f2a9e10")


def job_id_for(event_id: str, job_type: str) -> str:
    """The one job an event may cause of a given type; stable across redeliveries."""
    return str(uuid.uuid5(_JOB_NAMESPACE, f"{event_id}/{job_type}"))


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
            WELCOME_EMAIL.request(
                {"user_id": data["userId"], "email": data["email"], "name": data.get("name", "")}
            ),
        )

    async def password_changed(self, envelope: Envelope) -> None:
        data = envelope.get("data") or {}
        log.info("password changed", extra={"user_id": data.get("userId")})
        await self._enqueue(envelope, SECURITY_NOTICE.request({"user_id": data["userId"]}))

    async def stock_alert(self, envelope: Envelope) -> None:
        data = envelope.get("data") or {}
        event_type = str(envelope["event_type"])
        stock = 0 if event_type == "product.out_of_stock" else int(data.get("stock") or 0)
        log.warning(
            "product stock alert",
            extra={"event_type": event_type, "product_id": data.get("productId"), "stock": stock},
        )
        await self._enqueue(
            envelope,
            ADMIN_STOCK_NOTICE.request(
                {"productId": data.get("productId"), "stock": stock, "event_type": event_type}
            ),
        )


def build_event_handlers(jobs: JobEnqueuer) -> EventHandlers:
    return EventReactions(jobs).register(EventHandlers())
