"""The reactions to domain events, against an in-memory job queue."""

from __future__ import annotations

import logging

import pytest

from arcana.domain.delivery import EventHandlers
from arcana.domain.events import DomainEvent
from arcana.errors import ServiceUnavailable
from arcana.services.events import (
    ADMIN_STOCK_NOTICE_JOB,
    SECURITY_NOTICE_JOB,
    WELCOME_EMAIL_JOB,
    build_event_handlers,
    job_id_for,
)
from tests.events_support import InMemoryJobs


async def test_user_registered_enqueues_one_welcome_email_however_often_delivered() -> None:
    jobs = InMemoryJobs()
    handlers = build_event_handlers(jobs)
    event = DomainEvent(
        "auth.user_registered", {"userId": "u1", "email": "a@example.com", "name": "Ann"}
    )
    for _ in range(3):
        await handlers.dispatch(event.envelope())
    assert len(jobs.calls) == 3
    assert list(jobs.jobs) == [job_id_for(event.id, WELCOME_EMAIL_JOB)]
    job = jobs.jobs[job_id_for(event.id, WELCOME_EMAIL_JOB)]
    assert job.job_type == "email.welcome"
    assert job.payload == {"user_id": "u1", "email": "a@example.com", "name": "Ann"}


async def test_password_changed_enqueues_security_notice() -> None:
    jobs = InMemoryJobs()
    await build_event_handlers(jobs).dispatch(
        DomainEvent("auth.password_changed", {"userId": "u9"}).envelope()
    )
    [job] = jobs.of_type(SECURITY_NOTICE_JOB)
    assert job.payload == {"user_id": "u9"}


@pytest.mark.parametrize(
    ("event_type", "data", "stock"),
    [
        ("product.low_stock", {"productId": "p1", "stock": 4}, 4),
        ("product.out_of_stock", {"productId": "p1"}, 0),
    ],
)
async def test_stock_events_warn_and_notify_admins(
    event_type: str, data: dict[str, object], stock: int, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = InMemoryJobs()
    with caplog.at_level(logging.WARNING):
        await build_event_handlers(jobs).dispatch(DomainEvent(event_type, data).envelope())
    [job] = jobs.of_type(ADMIN_STOCK_NOTICE_JOB)
    assert job.payload == {"productId": "p1", "stock": stock, "event_type": event_type}
    assert any(r.levelno == logging.WARNING for r in caplog.records)


async def test_unhandled_types_are_ignored_and_registry_runs_in_order() -> None:
    seen: list[str] = []
    handlers = EventHandlers()

    async def first(envelope: dict[str, object]) -> None:
        seen.append("first")

    async def second(envelope: dict[str, object]) -> None:
        seen.append("second")

    handlers.register("x.happened", first)
    handlers.register("x.happened", second)
    await handlers.dispatch(DomainEvent("product.created", {"productId": "p"}).envelope())
    await handlers.dispatch(DomainEvent("x.happened", {}).envelope())
    assert seen == ["first", "second"]
    assert handlers.handles("x.happened")
    assert not handlers.handles("y")


def test_job_ids_are_stable_per_event_and_type() -> None:
    assert job_id_for("e1", WELCOME_EMAIL_JOB) == job_id_for("e1", WELCOME_EMAIL_JOB)
    assert job_id_for("e1", WELCOME_EMAIL_JOB) != job_id_for("e2", WELCOME_EMAIL_JOB)
    assert job_id_for("e1", WELCOME_EMAIL_JOB) != job_id_for("e1", SECURITY_NOTICE_JOB)


class _UnavailableJobs:
    async def enqueue(self, request: object, *, job_id: str | None = None) -> object:
        raise ServiceUnavailable("the job queue is down")


async def test_a_queue_that_is_down_fails_the_event_so_it_is_redelivered() -> None:
    handlers = build_event_handlers(_UnavailableJobs())
    with pytest.raises(ServiceUnavailable):
        await handlers.dispatch(DomainEvent("auth.password_changed", {"userId": "u"}).envelope())
