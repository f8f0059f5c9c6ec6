"""Regression tests for findings of the fault suite: a job re-run after its worker was killed
must not mail twice; every job the event reactions enqueue has a handler."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from arcana.adapters.mail import FileSender, TemplateMailer
from arcana.bootstrap import App
from arcana.domain.jobs import Job, JobStatus, Priority
from arcana.services.events import ADMIN_STOCK_NOTICE_JOB, SECURITY_NOTICE_JOB, WELCOME_EMAIL_JOB
from arcana.worker.jobs import build_registry
from arcana.worker.registry import JobContext
from tests.auth_support import create_user

pytestmark = pytest.mark.reliability


def _mails(directory: Path) -> list[email.message.EmailMessage]:
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(directory.glob("*.eml"))
    ]


async def test_file_sender_writes_one_mail_per_idempotency_key(tmp_path: Path) -> None:
    mailer = TemplateMailer(FileSender(tmp_path, "Arcana <no-reply@arcana.local>"))
    ctx = {"name": "Ada", "email": "ada@example.com", "user_id": "1"}
    key = str(uuid.uuid4())
    await mailer.send_template("welcome", "ada@example.com", ctx, idempotency_key=key)
    await mailer.send_template("welcome", "ada@example.com", ctx, idempotency_key=key)
    mails = _mails(tmp_path)
    assert len(mails) == 1
    assert mails[0]["Message-ID"] == f"<{key}@arcana.local>"
    # Without a key (or with another) every send is a mail.
    await mailer.send_template("welcome", "ada@example.com", ctx)
    await mailer.send_template("welcome", "ada@example.com", ctx, idempotency_key="other")
    assert len(_mails(tmp_path)) == 3


def _job(job_type: str, payload: dict[str, object]) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=str(uuid.uuid4()),
        job_type=job_type,
        payload=dict(payload),
        priority=Priority.NORMAL,
        max_retries=3,
        retry_count=0,
        status=JobStatus.RUNNING,
        created_at=now,
        scheduled_at=now,
        started_at=now,
    )


async def _run(container: App, job: Job) -> None:
    handler = build_registry(container).resolve(job.job_type)
    assert handler is not None, f"no handler for {job.job_type}"
    await handler(JobContext(job=job, worker_id="test"))


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_rerun_welcome_job_mails_once(container: App) -> None:
    job = _job(WELCOME_EMAIL_JOB, {"user_id": "u1", "email": "ada@example.com", "name": "Ada"})
    await _run(container, job)
    await _run(container, job)  # the lease expired after the mail went out: run again
    assert len(_mails(container.settings.var_dir / "mail")) == 1


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_security_notice_from_password_changed_event(container: App) -> None:
    """``auth.password_changed`` carries only the user id; the notice still reaches the user."""
    user = await create_user(container, email="notice@example.com")
    await _run(container, _job(SECURITY_NOTICE_JOB, {"user_id": user.id}))
    mails = _mails(container.settings.var_dir / "mail")
    assert [str(m["To"]) for m in mails] == ["notice@example.com"]
    # A user deleted meanwhile: nothing to send, and not a failure.
    await _run(container, _job(SECURITY_NOTICE_JOB, {"user_id": "gone"}))


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_stock_alert_jobs_have_a_handler(container: App) -> None:
    """The job the stock reaction enqueues mails every admin, and only admins, once."""
    admin = await create_user(container, email="stock-admin@example.com", admin=True)
    await create_user(container, email="plain-user@example.com")
    job = _job(
        ADMIN_STOCK_NOTICE_JOB,
        {"productId": "p1", "stock": 0, "event_type": "product.out_of_stock"},
    )
    await _run(container, job)
    await _run(container, job)  # a re-run after a crash mails nobody twice
    mails = _mails(container.settings.var_dir / "mail")
    assert [str(m["To"]) for m in mails] == [admin.email]
    assert "out of stock" in str(mails[0]["Subject"])
    body = mails[0].get_body(preferencelist=("plain",))
    assert body is not None
    assert "Product p1 is out of stock" in body.get_content()
