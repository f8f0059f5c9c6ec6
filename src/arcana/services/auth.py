"""Authentication use cases: login, rotating refresh tokens (one family = one session),
logout, password change and reset, and the clean-up of dead tokens.

Secrets never touch the database in clear: refresh and reset tokens are stored as SHA-256
digests (they are 256-bit random, so a fast hash is enough), passwords as Argon2id.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from arcana.domain.audit import AuditEvent, AuditSink
from arcana.domain.events import DomainEvent
from arcana.domain.identity import AccessTokens, Principal
from arcana.domain.jobs import JobRequest, Priority
from arcana.domain.users import (
    AuthUnitOfWork,
    LoginLimiter,
    PasswordHasher,
    RefreshToken,
    ResetToken,
    Session,
    User,
)
from arcana.errors import (
    InvalidCredentials,
    NotFound,
    RateLimited,
    TokenExpired,
    Unauthorized,
)
from arcana.metrics import AUTH_LOGINS, AUTH_REFRESH_REUSE
from arcana.services.passwords import check_password
from arcana.services.users import (
    AuthUowFactory,
    TokenGenerationCache,
    UserService,
    normalize_email,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    refresh_token_ttl: int
    refresh_idle_ttl: int
    reset_token_ttl: int
    reuse_grace_seconds: float = 2.0
    """Two tabs refreshing at once must not end their own session: a token rotated away
    less than this long ago is answered 401 as a lost race; after it, presenting it is reuse."""


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


@dataclass(frozen=True, slots=True)
class SessionView:
    session: Session
    current: bool


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class AuthService:
    def __init__(
        self,
        uow: AuthUowFactory,
        users: UserService,
        hasher: PasswordHasher,
        tokens: AccessTokens,
        generations: TokenGenerationCache,
        limiter: LoginLimiter,
        audit: AuditSink,
        policy: AuthPolicy,
    ) -> None:
        self._uow = uow
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._generations = generations
        self._limiter = limiter
        self._audit = audit
        self._policy = policy

    # -- registration and login ---------------------------------------------------------
    async def register(self, name: str, email: str, password: str) -> User:
        return await self._users.create_user(email=email, name=name, password=password)

    async def login(self, email: str, password: str, client: ClientInfo) -> TokenPair:
        """Unknown email and wrong password take the same path: one user look-up, one Argon2
        verification (against a dummy hash when there is no user), one failure count."""
        email = normalize_email(email)
        wait = await self._limiter.check(email, client.ip)
        if wait > 0:
            AUTH_LOGINS.labels("rate_limited").inc()
            raise RateLimited("Too many failed logins; try again later", retry_after=wait)
        async with self._uow() as uow:
            user = await uow.users.get_by_email(email)
        stored = user.password_hash if user is not None else self._hasher.dummy_hash()
        ok = await asyncio.to_thread(self._hasher.verify, stored, password)
        if user is None or not ok:
            await self._limiter.record_failure(email, client.ip)
            AUTH_LOGINS.labels("failed").inc()
            self._audit.emit(
                AuditEvent(
                    "user.login_failed",
                    user_id=user.id if user is not None else "",
                    resource="auth",
                    action="login",
                    metadata={"email": email, "ip": client.ip, "user_agent": client.user_agent},
                )
            )
            raise InvalidCredentials("Invalid email or password")
        await self._limiter.reset_account(email)
        new_hash: str | None = None
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(self._hasher.hash, password)
        now = utcnow()
        async with self._uow() as uow:
            if new_hash is not None:
                await uow.users.set_password(user.id, new_hash, now)
            session = Session(
                id=str(uuid.uuid4()),
                user_id=user.id,
                created_at=now,
                last_used_at=now,
                expires_at=now + timedelta(seconds=self._policy.refresh_token_ttl),
                user_agent=(client.user_agent or "")[:512] or None,
                ip=client.ip[:64] or None,
            )
            await uow.sessions.add_session(session)
            refresh = await self._new_refresh_token(uow, session)
            await uow.commit()
        AUTH_LOGINS.labels("succeeded").inc()
        self._audit.emit(
            AuditEvent(
                "user.login",
                user_id=user.id,
                resource="auth",
                action="login",
                metadata={"ip": client.ip, "user_agent": client.user_agent},
            )
        )
        return self._pair(user, session.id, refresh)

    async def _new_refresh_token(self, uow: AuthUnitOfWork, session: Session) -> str:
        raw = new_secret()
        token = RefreshToken(
            id=str(uuid.uuid4()),
            session_id=session.id,
            user_id=session.user_id,
            token_hash=digest(raw),
            created_at=utcnow(),
        )
        await uow.sessions.add_token(token)
        return raw

    def _pair(self, user: User, session_id: str, refresh: str) -> TokenPair:
        access = self._tokens.issue(user.id, user.roles, user.generation, session_id=session_id)
        return TokenPair(
            access_token=access.token, refresh_token=refresh, expires_in=access.expires_in
        )

    # -- refresh tokens -----------------------------------------------------------------
    async def refresh(self, refresh_token: str, client: ClientInfo) -> TokenPair:
        """Rotate: the presented token is consumed (exactly one concurrent caller wins) and a
        new one of the same family is issued. A token that was already rotated away is
        reuse: the whole family ends."""
        now = utcnow()
        reused: RefreshToken | None = None
        async with self._uow() as uow:
            token = await uow.sessions.get_token_by_hash(digest(refresh_token))
            if token is None:
                raise TokenExpired("Unknown refresh token")
            session = await uow.sessions.get_session(token.session_id)
            if token.revoked_at is not None:
                lost_race = (
                    session is not None
                    and session.revoked_at is None
                    and (now - token.revoked_at).total_seconds() < self._policy.reuse_grace_seconds
                )
                if lost_race:
                    raise TokenExpired("Refresh token already used")
                if session is not None and session.revoked_at is None:
                    await uow.sessions.revoke_session(session.id, now)
                    await uow.commit()
                    reused = token
                if reused is None:
                    raise TokenExpired("Refresh token revoked")
            elif session is None or not session.is_live(now, self._policy.refresh_idle_ttl):
                raise TokenExpired("Refresh token expired")
            elif not await uow.sessions.consume_token(token.id, now):
                # A concurrent refresh of the same token won; this one simply loses.
                raise TokenExpired("Refresh token already used")
            else:
                user = await uow.users.get(token.user_id)
                if user is None:
                    raise TokenExpired("Refresh token revoked")
                await uow.sessions.touch_session(session.id, now)
                raw = await self._new_refresh_token(uow, session)
                await uow.commit()
                return self._pair(user, session.id, raw)
        AUTH_REFRESH_REUSE.inc()
        log.warning(
            "refresh token reuse detected: session %s of user %s revoked (client %s)",
            reused.session_id,
            reused.user_id,
            client.ip,
        )
        raise TokenExpired("Refresh token revoked")

    async def logout(self, refresh_token: str) -> None:
        """Ends the token's session; an unknown token is not an error."""
        async with self._uow() as uow:
            token = await uow.sessions.get_token_by_hash(digest(refresh_token))
            if token is None:
                return
            await uow.sessions.revoke_session(token.session_id, utcnow())
            await uow.commit()

    async def logout_all(self, principal: Principal) -> None:
        """Every session ends and every access token issued before now dies."""
        async with self._uow() as uow:
            now = utcnow()
            await uow.sessions.revoke_all_sessions(principal.user_id, now)
            generation = await uow.users.bump_generation(principal.user_id, now)
            await uow.commit()
        await self._generations.store(principal.user_id, generation)

    # -- the caller ----------------------------------------------------------------------
    async def me(self, principal: Principal) -> User:
        user = await self._users.get_user(principal.user_id)
        if user is None:
            raise Unauthorized("Unknown user")
        self._audit.emit(
            AuditEvent("user.data_access", user_id=user.id, resource="user", action="read")
        )
        return user

    async def list_sessions(self, principal: Principal) -> list[SessionView]:
        async with self._uow() as uow:
            sessions = await uow.sessions.list_live_sessions(
                principal.user_id, utcnow(), self._policy.refresh_idle_ttl
            )
        return [SessionView(s, s.id == principal.session_id) for s in sessions]

    async def end_session(self, principal: Principal, session_id: str) -> None:
        async with self._uow() as uow:
            session = await uow.sessions.get_session(session_id)
            if (
                session is None
                or session.user_id != principal.user_id
                or not session.is_live(utcnow(), self._policy.refresh_idle_ttl)
            ):
                raise NotFound("No such session")
            await uow.sessions.revoke_session(session_id, utcnow())
            await uow.commit()

    # -- passwords ----------------------------------------------------------------------
    async def change_password(
        self,
        principal: Principal,
        current_password: str,
        new_password: str,
        client: ClientInfo | None = None,
    ) -> None:
        """Wrong current passwords count against the same limits as failed logins, so a
        stolen access token cannot be used to guess the password."""
        check_password(new_password, "new_password")
        async with self._uow() as uow:
            user = await uow.users.get(principal.user_id)
        if user is None:
            raise Unauthorized("Unknown user")
        address = client.ip if client is not None else ""
        wait = await self._limiter.check(user.email, address)
        if wait > 0:
            raise RateLimited("Too many failed attempts; try again later", retry_after=wait)
        if not await asyncio.to_thread(self._hasher.verify, user.password_hash, current_password):
            await self._limiter.record_failure(user.email, address)
            raise InvalidCredentials("The current password is wrong")
        await self._limiter.reset_account(user.email)
        new_hash = await asyncio.to_thread(self._hasher.hash, new_password)
        await self._set_password(user.id, new_hash)

    async def forgot_password(self, email: str) -> None:
        """Always succeeds; a known email gets a single-use reset token by mail (job)."""
        email = normalize_email(email)
        async with self._uow() as uow:
            user = await uow.users.get_by_email(email)
            if user is None:
                return
            now = utcnow()
            raw = new_secret()
            await uow.reset_tokens.invalidate_for_user(user.id, now)
            await uow.reset_tokens.add(
                ResetToken(
                    id=str(uuid.uuid4()),
                    user_id=user.id,
                    token_hash=digest(raw),
                    created_at=now,
                    expires_at=now + timedelta(seconds=self._policy.reset_token_ttl),
                )
            )
            uow.enqueue(
                JobRequest(
                    "email.password_reset",
                    {"email": user.email, "reset_token": raw},
                    priority=Priority.HIGH,
                )
            )
            await uow.commit()

    async def reset_password(self, token: str, new_password: str) -> None:
        """Token checked first (401), then the password rules (422, token kept), then the token
        is used up atomically with the password change."""
        async with self._uow() as uow:
            reset = await uow.reset_tokens.get_by_hash(digest(token))
        if reset is None or reset.used_at is not None or reset.expires_at <= utcnow():
            raise TokenExpired("Reset token expired, used or unknown")
        check_password(new_password, "new_password")
        new_hash = await asyncio.to_thread(self._hasher.hash, new_password)
        await self._set_password(reset.user_id, new_hash, reset_token_id=reset.id)

    async def _set_password(
        self, user_id: str, new_hash: str, reset_token_id: str | None = None
    ) -> None:
        now = utcnow()
        async with self._uow() as uow:
            if reset_token_id is not None and not await uow.reset_tokens.use(reset_token_id, now):
                raise TokenExpired("Reset token expired, used or unknown")
            await uow.users.set_password(user_id, new_hash, now)
            await uow.sessions.revoke_all_sessions(user_id, now)
            await uow.reset_tokens.invalidate_for_user(user_id, now)
            generation = await uow.users.bump_generation(user_id, now)
            if generation is None:
                raise TokenExpired("Unknown user")
            uow.record(
                DomainEvent("auth.password_changed", {"userId": user_id}, aggregate_id=user_id)
            )
            await uow.commit()
        await self._generations.store(user_id, generation)

    # -- maintenance ---------------------------------------------------------------------
    async def cleanup_tokens(self, batch_size: int = 1000) -> int:
        """Delete ended sessions (revoked, expired, idle) with their refresh tokens, and used or
        expired reset tokens, one batch per transaction. Returns the number of rows deleted.
        Rotated tokens of live sessions stay: they are what reuse detection recognises."""
        total = 0
        while True:
            async with self._uow() as uow:
                n = await uow.sessions.delete_dead(
                    utcnow(), self._policy.refresh_idle_ttl, batch_size
                )
                await uow.commit()
            total += n
            if n == 0:
                break
        while True:
            async with self._uow() as uow:
                n = await uow.reset_tokens.delete_dead(utcnow(), batch_size)
                await uow.commit()
            total += n
            if n < batch_size:
                break
        return total
