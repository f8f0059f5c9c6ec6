"""The catalogue of job types and the use cases the worker runs for them."""

from __future__ import annotations

import pytest

from arcana.config import Settings
from arcana.domain.jobs import (
    ADMIN_STOCK_NOTICE,
    DEFAULT_PRIORITIES,
    JOB_TYPES,
    PASSWORD_RESET_EMAIL,
    Priority,
)
from arcana.services.jobs import periodic_schedule
from arcana.services.notifications import NotificationService
from arcana.services.users import TokenGenerationCache, UserService
from arcana.worker.scheduler import default_schedule
from tests.fakes import (
    FakeClock,
    InMemoryCache,
    InMemoryUnitOfWorkFactory,
    PlainPasswordHasher,
    RecordingMailer,
    ReversibleSealer,
)

PASSWORD = "Correct-Horse-9"


def test_requests_take_the_type_name_and_default_priority() -> None:
    request = PASSWORD_RESET_EMAIL.request({"email": "a@example.com", "reset_token": "t"})
    assert (request.job_type, request.priority) == ("email.password_reset", Priority.HIGH)
    assert request.payload == {"email": "a@example.com", "reset_token": "t"}
    assert {name: t.priority for name, t in JOB_TYPES.items()} == DEFAULT_PRIORITIES


def test_every_periodic_type_is_scheduled_with_its_setting() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        schedule_pending_users_seconds=7,
        schedule_cleanup_tokens_seconds=11,
    )
    schedule = {p.job_type: p.every_seconds for p in default_schedule(settings)}
    assert schedule == {"sync.pending_users": 7, "sync.cleanup_tokens": 11}
    assert periodic_schedule(settings.jobs) == schedule  # what the admin console shows
    assert set(schedule) == {name for name, t in JOB_TYPES.items() if t.periodic}


@pytest.fixture
def users() -> UserService:
    uow = InMemoryUnitOfWorkFactory()
    clock = FakeClock()
    return UserService(
        uow,
        PlainPasswordHasher(),
        TokenGenerationCache(uow, InMemoryCache(clock), 60, clock),
        clock,
    )


async def test_stock_alerts_go_to_every_admin_once(users: UserService) -> None:
    mailer = RecordingMailer()
    notices = NotificationService(mailer, users, ReversibleSealer(), reset_token_ttl=1800)
    ada = await users.create_user("ada@example.com", "Ada", PASSWORD, frozenset({"admin"}))
    bob = await users.create_user("bob@example.com", "Bob", PASSWORD, frozenset({"admin"}))
    await users.create_user("carl@example.com", "Carl", PASSWORD)
    payload = ADMIN_STOCK_NOTICE.payload(productId="p1", stock=0, event_type="product.out_of_stock")
    assert await notices.stock_alert_to_admins(payload, "job-1") == 2
    await notices.stock_alert_to_admins(payload, "job-1")  # a re-run mails nobody twice
    assert sorted(to for _, to, _ in mailer.sent) == [ada.email, bob.email]
    assert {ctx["product_id"] for _, _, ctx in mailer.sent} == {"p1"}


async def test_a_security_notice_is_looked_up_when_sent(users: UserService) -> None:
    mailer = RecordingMailer()
    notices = NotificationService(mailer, users, ReversibleSealer(), reset_token_ttl=1800)
    ada = await users.create_user("ada@example.com", "Ada", PASSWORD)
    await notices.security_notice({"user_id": ada.id}, "job-1")
    await notices.security_notice({"user_id": "gone"}, "job-2")  # deleted meanwhile: no mail
    assert mailer.sent == [("security_notice", ada.email, {"email": ada.email, "name": "Ada"})]
    with pytest.raises(ValueError, match="needs user_id or email"):
        await notices.security_notice({}, "job-3")
