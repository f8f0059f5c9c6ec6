"""Outgoing mail as the jobs see it: a template name, a recipient and a context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str
    idempotency_key: str | None = None
    """Stable across redeliveries of the same job (its id): the Message-ID is derived from it
    and the file sender writes one mail per key, so a job re-run after a crash does not mail
    twice. SMTP stays at least once; receivers can drop duplicates by Message-ID."""


class EmailSender(Protocol):
    """Delivers a rendered message (SMTP, or ``.eml`` files in development)."""

    async def send(self, message: EmailMessage) -> None: ...


class Mailer(Protocol):
    """Renders a named template (``welcome``, ``password_reset``, ``security_notice``) and
    sends it."""

    async def send_template(
        self,
        template: str,
        to: str,
        context: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> None: ...
