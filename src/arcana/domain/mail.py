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


class EmailSender(Protocol):
    """Delivers a rendered message (SMTP, or ``.eml`` files in development)."""

    async def send(self, message: EmailMessage) -> None: ...


class Mailer(Protocol):
    """Renders a named template (``welcome``, ``password_reset``, ``security_notice``) and
    sends it."""

    async def send_template(self, template: str, to: str, context: Mapping[str, Any]) -> None: ...
