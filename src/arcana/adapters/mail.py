"""Mail: Jinja2 templates shipped in ``mail_templates/``, sent over SMTP (aiosmtplib) or
written as ``.eml`` files when no ``ARCANA_SMTP_URL`` is set."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Mapping
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from arcana import tracing
from arcana.domain.mail import EmailMessage, EmailSender, Mailer

if TYPE_CHECKING:
    from jinja2 import Environment


def _mime(message: EmailMessage, sender: str) -> MimeMessage:
    mime = MimeMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=False)
    mime["Message-ID"] = (
        f"<{message.idempotency_key}@arcana.local>"
        if message.idempotency_key
        else make_msgid(domain="arcana.local")
    )
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


class SmtpSender(EmailSender):
    """``smtp://[user:pass@]host:port[?starttls=true]`` or ``smtps://…`` (implicit TLS)."""

    def __init__(self, url: str, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("ARCANA_SMTP_URL must look like smtp://[user:pass@]host:port")
        query = parse_qs(parts.query)
        self.host = parts.hostname
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 25)
        self.start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib  # here, not at the top: see ``TemplateMailer._env``

        await aiosmtplib.send(
            _mime(message, self.sender),
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls if not self.use_tls else False,
            timeout=self.timeout,
        )


class FileSender(EmailSender):
    """Development: each mail becomes ``<dir>/<time>-<id>.eml``; ``<id>`` is the message's
    idempotency key when it has one, and a key already written is not written again."""

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    async def send(self, message: EmailMessage) -> None:
        data = _mime(message, self.sender).as_bytes()
        key = _safe_key(message.idempotency_key) if message.idempotency_key else None
        name = f"{time.time_ns()}-{key or uuid.uuid4().hex[:8]}.eml"

        def write() -> None:
            self.directory.mkdir(parents=True, exist_ok=True)
            if key is not None and any(self.directory.glob(f"*-{key}.eml")):
                return  # a re-run of a job whose mail already went out
            tmp = self.directory / (name + ".tmp")
            tmp.write_bytes(data)
            tmp.rename(self.directory / name)

        await asyncio.to_thread(write)


def _safe_key(key: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)[:100]


class TemplateMailer(Mailer):
    def __init__(self, sender: EmailSender) -> None:
        self.sender = sender

    @functools.cached_property
    def _env(self) -> Environment:
        """Made (and Jinja2 imported) at the first mail: every process builds a mailer, and
        the CLI's commands, which send none, would pay for Jinja2 at every start."""
        from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

        return Environment(
            loader=PackageLoader("arcana.adapters", "mail_templates"),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            enable_async=False,
        )

    def render(
        self,
        template: str,
        to: str,
        context: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> EmailMessage:
        ctx = dict(context)
        subject = self._env.get_template(f"{template}.subject.txt").render(ctx).strip()
        text = self._env.get_template(f"{template}.txt").render(ctx)
        html = self._env.get_template(f"{template}.html").render(ctx)
        return EmailMessage(
            to=to, subject=subject, text=text, html=html, idempotency_key=idempotency_key
        )

    async def send_template(
        self,
        template: str,
        to: str,
        context: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> None:
        # Only the template name is recorded: addresses and context (reset tokens) never are.
        with tracing.span(
            f"mail.send {template}",
            {"arcana.mail.template": template, "arcana.mail.transport": type(self.sender).__name__},
            kind="client",
        ):
            await self.sender.send(self.render(template, to, context, idempotency_key))


def build_mailer(smtp_url: str | None, sender: str, var_dir: Path) -> TemplateMailer:
    if smtp_url:
        return TemplateMailer(SmtpSender(smtp_url, sender))
    return TemplateMailer(FileSender(var_dir / "mail", sender))
