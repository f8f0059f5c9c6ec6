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
from arcana.domain.jobs import PASSWORD_RESET_EMAIL, PASSWORD_RESET_REQUEST
from arcana.domain.ports import Clock, SystemClock
from arcana.domain.users import (
    AttemptQuota,
    AuthUnitOfWork,
    LoginLimiter,
    PasswordHasher,
    RefreshToken,
    ResetToken,
    SecretSealer,
    Session,
    SessionStarts,
    User,
)
from arcana.errors import (
    InvalidCredentials,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenExpired,
    Unauthorized,
)
from arcana.metrics import AUTH_LOGINS, AUTH_REFRESH_REUSE
from arcana.services.completion import runs_to_completion
from arcana.services.passwords import check_password
from arcana.services.users import (
    AuthUowFactory,
    TokenGenerationCache,
    UserService,
    normalize_email,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    refresh_token_ttl: int
    refresh_idle_ttl: int
    reset_token_ttl: int
    reuse_grace_seconds: float = 0.0
    """0: strict, any rotated-away token presented again ends its family. Above 0 (an operator's
    choice for clients that refresh from two tabs at once), the family's *immediate
    predecessor* rotated away less than this long ago is answered 401 as a lost race; the
    risk: for that long, a thief who rotated a stolen token keeps the session when the victim
    replays the old one."""
    access_token_ttl: int = 900
    register_limit_per_ip: int = 20
    reset_limit_per_email: int = 3
    reset_limit_per_ip: int = 20
    limit_window_seconds: int = 3600


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
        quota: AttemptQuota,
        sealer: SecretSealer,
        clock: Clock | None = None,
        session_starts: SessionStarts | None = None,
    ) -> None:
        self._uow = uow
        self._session_starts = session_starts
        """A login's session and token in one step (else, and for a rehash, a unit of work)."""
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._generations = generations
        self._limiter = limiter
        self._audit = audit
        self._policy = policy
        self._quota = quota
        self._sealer = sealer
        # Reset requests of this process are issued one at a time, so a newer one always
        # supersedes the older (concurrent jobs for one email could otherwise both leave a
        # live token).
        self._reset_lock = asyncio.Lock()
        self._clock = clock or SystemClock()

    # -- registration and login ---------------------------------------------------------
    async def register(
        self, name: str, email: str, password: str, client: ClientInfo | None = None
    ) -> User:
        """Limited per client address (each registration costs a full Argon2 hash)."""
        if client is not None:
            wait = await self._quota.hit(
                "register",
                client.ip,
                self._policy.register_limit_per_ip,
                self._policy.limit_window_seconds,
            )
            if wait > 0:
                raise RateLimited("Too many registrations; try again later", retry_after=wait)
        return await self._users.create_user(email=email, name=name, password=password)

    async def login(self, email: str, password: str, client: ClientInfo) -> TokenPair:
        """Unknown email and wrong password take the same path: one user look-up, one Argon2
        verification (against a dummy hash when there is no user). The attempt is reserved
        against both limits *before* the verification and given back on success, so parallel
        guesses cannot outrun the limit."""
        email = normalize_email(email)
        wait = await self._limiter.reserve(email, client.ip)
        if wait > 0:
            AUTH_LOGINS.labels("rate_limited").inc()
            raise RateLimited("Too many failed logins; try again later", retry_after=wait)
        # A lone read (no writer lock on SQLite, no transaction round trips on PostgreSQL).
        user = await self._users.get_user_by_email(email)
        stored = user.password_hash if user is not None else self._hasher.dummy_hash()
        ok = await self._verify_reserved(stored, password, email, client.ip)
        if user is None or not ok:
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
        await self._limiter.release(email, client.ip)
        new_hash: str | None = None
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hasher.hash(password)
        now = self._clock.now()
        session = Session(
            id=str(uuid.uuid4()),
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=self._policy.refresh_token_ttl),
            user_agent=(client.user_agent or "")[:512] or None,
            ip=client.ip[:64] or None,
        )
        refresh, token = self._refresh_token_for(session)
        # Only while the generation read at the start still holds: a password reset or
        # change that committed meanwhile leaves this login without a session.
        if new_hash is None and self._session_starts is not None:
            started = await self._session_starts.start(session, token, user.generation)
        else:
            async with self._uow() as uow:
                started = await uow.sessions.add_session_if_generation(session, user.generation)
                if started:
                    if new_hash is not None:
                        await uow.users.set_password(user.id, new_hash, now)
                    await uow.sessions.add_token(token)
                    await uow.commit()
        if not started:
            AUTH_LOGINS.labels("failed").inc()
            raise InvalidCredentials("Invalid email or password")
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

    async def _verify_reserved(
        self, password_hash: str, password: str, account: str, address: str
    ) -> bool:
        """Verify under a reserved attempt; if no hashing slot frees (503), the attempt
        checked nothing, so it goes back to both budgets."""
        try:
            return await self._hasher.verify(password_hash, password)
        except ServiceUnavailable:
            await self._limiter.refund(account, address)
            raise

    async def _new_refresh_token(self, uow: AuthUnitOfWork, session: Session) -> str:
        raw, token = self._refresh_token_for(session)
        await uow.sessions.add_token(token)
        return raw

    def _refresh_token_for(self, session: Session) -> tuple[str, RefreshToken]:
        """A new refresh token of ``session``: the raw secret (for the client) and the row
        (which keeps only its digest)."""
        raw = new_secret()
        token = RefreshToken(
            id=str(uuid.uuid4()),
            session_id=session.id,
            user_id=session.user_id,
            token_hash=digest(raw),
            created_at=self._clock.now(),
        )
        return raw, token

    def _pair(self, user: User, session_id: str, refresh: str) -> TokenPair:
        access = self._tokens.issue(user.id, user.roles, user.generation, session_id=session_id)
        return TokenPair(
            access_token=access.token, refresh_token=refresh, expires_in=access.expires_in
        )

    # -- refresh tokens -----------------------------------------------------------------
    @runs_to_completion
    async def refresh(self, refresh_token: str, client: ClientInfo) -> TokenPair:
        """Rotate: the presented token is consumed (exactly one concurrent caller wins) and a
        new one of the same family is issued. A token that was already rotated away is
        reuse: the whole family ends."""
        now = self._clock.now()
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
                    and await uow.sessions.last_rotated_token_id(session.id) == token.id
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
        await self._generations.refresh(reused.user_id)
        log.warning(
            "refresh token reuse detected: session %s of user %s revoked (client %s)",
            reused.session_id,
            reused.user_id,
            client.ip,
        )
        raise TokenExpired("Refresh token revoked")

    @runs_to_completion
    async def logout(self, refresh_token: str) -> None:
        """Ends the token's session; an unknown token is not an error."""
        async with self._uow() as uow:
            token = await uow.sessions.get_token_by_hash(digest(refresh_token))
            if token is None:
                return
            await uow.sessions.revoke_session(token.session_id, self._clock.now())
            await uow.commit()
        # The session's access tokens die now, not when they expire.
        await self._generations.refresh(token.user_id)

    @runs_to_completion
    async def logout_all(self, principal: Principal) -> None:
        """Every session ends and every access token issued before now dies."""
        async with self._uow() as uow:
            now = self._clock.now()
            await uow.sessions.revoke_all_sessions(principal.user_id, now)
            await uow.users.bump_generation(principal.user_id, now)
            await uow.commit()
        await self._generations.refresh(principal.user_id)

    # -- the caller ----------------------------------------------------------------------
    async def me(self, principal: Principal) -> User:
        """The caller's user. ``principal`` needs only verified claims (``IdentityService.
        verify``): the token's state is checked here, in the same read as the user's row."""
        user = await self._users.get_admitted_user(principal)
        self._audit.emit(
            AuditEvent("user.data_access", user_id=user.id, resource="user", action="read")
        )
        return user

    async def list_sessions(self, principal: Principal) -> list[SessionView]:
        async with self._uow() as uow:
            sessions = await uow.sessions.list_live_sessions(
                principal.user_id, self._clock.now(), self._policy.refresh_idle_ttl
            )
        return [SessionView(s, s.id == principal.session_id) for s in sessions]

    @runs_to_completion
    async def end_session(self, principal: Principal, session_id: str) -> None:
        async with self._uow() as uow:
            session = await uow.sessions.get_session(session_id)
            if (
                session is None
                or session.user_id != principal.user_id
                or not session.is_live(self._clock.now(), self._policy.refresh_idle_ttl)
            ):
                raise NotFound("No such session")
            await uow.sessions.revoke_session(session_id, self._clock.now())
            await uow.commit()
        await self._generations.refresh(principal.user_id)

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
        wait = await self._limiter.reserve(user.email, address)
        if wait > 0:
            raise RateLimited("Too many failed attempts; try again later", retry_after=wait)
        if not await self._verify_reserved(
            user.password_hash, current_password, user.email, address
        ):
            raise InvalidCredentials("The current password is wrong")
        await self._limiter.release(user.email, address)
        new_hash = await self._hasher.hash(new_password)
        await self._set_password(user.id, new_hash)

    async def forgot_password(self, email: str, client: ClientInfo | None = None) -> None:
        """Always succeeds (after the per-address limit). The request only queues a
        ``auth.password_reset_request`` job — one write, the same for every email — so known
        and unknown emails answer in the same time; the job (``issue_reset``) looks the user
        up and sends the mail. Queued, not kept in memory: a crash or a database outage after
        the 202 loses nothing (during an outage the request itself answers 503)."""
        if client is not None:
            wait = await self._quota.hit(
                "reset-ip",
                client.ip,
                self._policy.reset_limit_per_ip,
                self._policy.limit_window_seconds,
            )
            if wait > 0:
                raise RateLimited("Too many reset requests; try again later", retry_after=wait)
        async with self._uow() as uow:
            uow.enqueue(PASSWORD_RESET_REQUEST.request({"email": normalize_email(email)}))
            await uow.commit()

    async def issue_reset(self, email: str) -> None:
        """The ``auth.password_reset_request`` job: past the per-email limit nothing happens
        (the requester saw the same 202 either way); for a known email a single-use token is
        stored and ``email.password_reset`` queued with it sealed."""
        email = normalize_email(email)
        wait = await self._quota.hit(
            "reset-email",
            email,
            self._policy.reset_limit_per_email,
            self._policy.limit_window_seconds,
        )
        if wait > 0:
            log.info("reset mail limit reached for an address; request ignored")
            return
        async with self._reset_lock:
            await self._issue_reset(email)

    async def _issue_reset(self, email: str) -> None:
        async with self._uow() as uow:
            user = await uow.users.get_by_email(email)
            if user is None:
                return
            now = self._clock.now()
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
                PASSWORD_RESET_EMAIL.request(
                    # Sealed: it rests in the outbox, the queue and maybe the dead letters.
                    {"email": user.email, "reset_token": self._sealer.seal(raw)}
                )
            )
            await uow.commit()

    async def reset_password(self, token: str, new_password: str) -> None:
        """Token checked first (401), then the password rules (422, token kept), then the token
        is used up atomically with the password change."""
        async with self._uow() as uow:
            reset = await uow.reset_tokens.get_by_hash(digest(token))
        if reset is None or reset.used_at is not None or reset.expires_at <= self._clock.now():
            raise TokenExpired("Reset token expired, used or unknown")
        check_password(new_password, "new_password")
        new_hash = await self._hasher.hash(new_password)
        await self._set_password(reset.user_id, new_hash, reset_token_id=reset.id)

    @runs_to_completion
    async def _set_password(
        self, user_id: str, new_hash: str, reset_token_id: str | None = None
    ) -> None:
        now = self._clock.now()
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
        await self._generations.refresh(user_id)

    # -- maintenance ---------------------------------------------------------------------
    async def cleanup_tokens(self, batch_size: int = 1000) -> int:
        """Delete ended sessions (revoked, expired, idle) with their refresh tokens, and used or
        expired reset tokens, one batch per transaction. Returns the number of rows deleted.
        Rotated tokens of live sessions stay: they are what reuse detection recognises."""
        total = 0
        while True:
            async with self._uow() as uow:
                n = await uow.sessions.delete_dead(
                    self._clock.now(),
                    self._policy.refresh_idle_ttl,
                    batch_size,
                    keep_revoked_seconds=self._policy.access_token_ttl,
                )
                await uow.commit()
            total += n
            if n == 0:
                break
        while True:
            async with self._uow() as uow:
                n = await uow.reset_tokens.delete_dead(self._clock.now(), batch_size)
                await uow.commit()
            total += n
            if n < batch_size:
                break
        return total
