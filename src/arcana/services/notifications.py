"""The mails that jobs send: welcome, password reset, security notice, stock alerts to admins.

Each use case takes the job's payload (its shape is in the catalogue of ``domain/jobs.py``)
and an idempotency key, the job id: a job re-run after a crash renders the same Message-ID and
the file sender writes one mail per key, so nobody is mailed twice by a redelivery.
"""

from __future__ import annotations

import logging

from arcana.domain.jobs import (
    PasswordResetEmail,
    SecurityNotice,
    StockAlert,
    WelcomeEmail,
)
from arcana.domain.mail import Mailer
from arcana.domain.users import SecretSealer
from arcana.services.users import UserService

log = logging.getLogger(__name__)


class NotificationService:
    def __init__(
        self, mailer: Mailer, users: UserService, sealer: SecretSealer, reset_token_ttl: int
    ) -> None:
        self._mailer = mailer
        self._users = users
        self._sealer = sealer
        self._reset_minutes = max(reset_token_ttl // 60, 1)

    async def welcome(self, payload: WelcomeEmail, key: str) -> None:
        await self._mailer.send_template(
            "welcome",
            payload["email"],
            {
                "name": payload.get("name") or "",
                "email": payload["email"],
                "user_id": payload.get("user_id"),
            },
            idempotency_key=key,
        )

    async def password_reset(self, payload: PasswordResetEmail, key: str) -> None:
        await self._mailer.send_template(
            "password_reset",
            payload["email"],
            {
                "email": payload["email"],
                # Sealed at rest; opened only here, on its way into the mail.
                "reset_token": self._sealer.unseal(payload["reset_token"]),
                "minutes": self._reset_minutes,
            },
            idempotency_key=key,
        )

    async def security_notice(self, payload: SecurityNotice, key: str) -> None:
        """The event reaction sends only the user id: the address is looked up when the mail
        goes out, so a user deleted meanwhile gets nothing (and that is not a failure)."""
        email, name = payload.get("email"), payload.get("name") or ""
        user_id = payload.get("user_id")
        if not email and user_id:
            user = await self._users.get_user(str(user_id))
            if user is None:
                log.info("security notice skipped: user %s no longer exists", user_id)
                return
            email, name = user.email, user.name
        if not email:
            raise ValueError("email.security_notice needs user_id or email")
        await self._mailer.send_template(
            "security_notice",
            str(email),
            {"email": email, "name": name},
            idempotency_key=key,
        )

    async def stock_alert_to_admins(self, payload: StockAlert, key: str) -> int:
        """One mail per admin, each with its own key; returns how many admins were mailed."""
        admins = await self._users.list_with_role("admin")
        context = {"product_id": payload.get("productId"), "stock": int(payload.get("stock") or 0)}
        for admin in admins:
            await self._mailer.send_template(
                "stock_alert",
                admin.email,
                {**context, "name": admin.name},
                idempotency_key=f"{key}:{admin.id}",
            )
        log.info("stock alert for %s sent to %d admin(s)", context["product_id"], len(admins))
        return len(admins)
