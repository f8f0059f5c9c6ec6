"""The composition root puts doubles in place at construction, and builds each area after
what it uses (nothing is looked up late)."""

from __future__ import annotations

from pathlib import Path

from arcana.bootstrap import Overrides, build_app, close_resources
from tests.conftest import base_settings
from tests.events_support import InMemoryJobs
from tests.fakes import RecordingAuditSink, RecordingMailer


async def test_overrides_reach_every_service_that_uses_them(tmp_path: Path) -> None:
    settings = base_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/a.db", var_dir=tmp_path)
    audit, queue, mailer = RecordingAuditSink(), InMemoryJobs(), RecordingMailer()
    app = build_app(settings, Overrides(audit=audit, queue=queue, mailer=mailer))
    try:
        assert app.audit is audit
        assert app.plugins.audit is audit
        assert app.products._audit is audit
        assert app.queue is queue
        assert app.jobs.queue is queue
        assert app.events.relay._jobs is queue  # the relay holds the queue itself
        assert app.jobs_area.mailer is mailer
        # The plugin host is built all the same: its service still lists and reloads plugins.
        assert app.plugins.registry is app.plugins_area.sink.registry
    finally:
        await close_resources(app)
