"""User accounts: creation, roles, look-ups for other areas, and the push to an external
system (``sync.pending_users``)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from arcana.domain.events import DomainEvent
from arcana.domain.identity import Principal, Role, TokenState
from arcana.domain.ports import Cache, Clock, SystemClock
from arcana.domain.timestamps import utcnow
from arcana.domain.users import (
    AuthUnitOfWork,
    PasswordHasher,
    SyncReport,
    SyncStatus,
    User,
    UserSync,
    user_name,
)
from arcana.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized, ValidationFailed
from arcana.services.completion import runs_to_completion
from arcana.services.emails import canonical_email, valid_email
from arcana.services.passwords import check_password

log = logging.getLogger(__name__)

AuthUowFactory = Callable[[], AuthUnitOfWork]

KNOWN_ROLES = frozenset(r.value for r in Role)


def normalize_email(email: str) -> str:
    """The stored and compared form of an address: see ``arcana.domain.emails``."""
    return canonical_email(email)


MAX_REVOKED_SESSIONS = 1000
"""Sessions ended per user within one access-token lifetime that the cache entry lists;
beyond it the oldest are left out (only a user ending sessions in a loop gets there)."""


class TokenGenerationCache:
    """Per-user token state — generation and the sessions ended within the last access-token
    lifetime — read through the cache (``TokenGenerations`` port).

    A hit costs no database round trip. Readers fill a miss with ``add`` (set-if-absent) and
    writers overwrite with ``set`` right after their commit, so a reader that loaded the old
    value before the commit cannot overwrite the newer one. With Redis the entry is shared
    by every process, so a revocation on one instance is seen by all at once; an evicted entry
    is reloaded from the database, so eviction never brings a revoked token back.

    Revocation must stay exact when the cache misbehaves: after writing, the writer reads the
    entry back; if it does not hold the new state (a failed or refused write, e.g. Redis out
    of memory) the entry is deleted, and if even that cannot be confirmed the request fails
    with ``ServiceUnavailable`` instead of answering as if the tokens were dead. A cache that
    does not answer at all is a miss for every reader, which then reads the database.
    """

    def __init__(
        self, uow: AuthUowFactory, cache: Cache, ttl: int, clock: Clock | None = None
    ) -> None:
        self._uow = uow
        self._cache = cache
        self._ttl = ttl
        self._clock = clock or SystemClock()

    @staticmethod
    def _key(user_id: str) -> str:
        return f"auth:gen:{user_id}"

    @staticmethod
    def _encode(state: TokenState | None) -> bytes:
        if state is None:
            return b"-"
        return json.dumps(
            {"g": state.generation, "r": sorted(state.revoked_sessions)}, separators=(",", ":")
        ).encode()

    @staticmethod
    def _decode(raw: bytes) -> TokenState | None:
        if raw == b"-":
            return None
        if raw.isdigit():  # written by an older version: a bare generation
            return TokenState(int(raw))
        data = json.loads(raw)
        return TokenState(int(data["g"]), frozenset(str(s) for s in data.get("r", ())))

    async def _load(self, user_id: str) -> TokenState | None:
        since = self._clock.now() - timedelta(seconds=self._ttl)
        async with self._uow() as uow:
            generation = await uow.users.generation(user_id)
            if generation is None:
                return None
            revoked = await uow.sessions.recently_revoked(user_id, since, MAX_REVOKED_SESSIONS)
        return TokenState(generation, frozenset(revoked))

    async def state(self, user_id: str) -> TokenState | None:
        raw = await self._cache.get(self._key(user_id))
        if raw is not None:
            return self._decode(raw)
        state = await self._load(user_id)
        await self._cache.add(self._key(user_id), self._encode(state), self._ttl)
        return state

    async def current(self, user_id: str) -> int | None:
        state = await self.state(user_id)
        return None if state is None else state.generation

    async def store(self, user_id: str, generation: int | None) -> None:
        """Older name of ``refresh`` (the state is reloaded whole, so the value is unused)."""
        await self.refresh(user_id)

    async def refresh(self, user_id: str) -> None:
        """Called after a commit that revoked something of the user (or deleted them)."""
        key = self._key(user_id)
        value = self._encode(await self._load(user_id))
        await self._cache.set(key, value, self._ttl)
        if await self._cache.get(key) in (value, None):
            return
        await self._cache.delete(key)
        if await self._cache.get(key) is None:
            return
        log.error("token state of user %s could not be updated in the cache", user_id)
        raise ServiceUnavailable("Could not record the revocation; try again", retry_after=1)


class UserService:
    def __init__(
        self,
        uow: AuthUowFactory,
        hasher: PasswordHasher,
        generations: TokenGenerationCache,
        clock: Clock | None = None,
        *,
        read_uow: AuthUowFactory | None = None,
    ) -> None:
        self._uow = uow
        self._read_uow = read_uow or uow  # for lone reads: no transaction needed
        self._hasher = hasher
        self._generations = generations
        self._clock = clock or SystemClock()

    async def get_user(self, user_id: str) -> User | None:
        async with self._read_uow() as uow:
            return await uow.users.get(user_id)

    async def get_admitted_user(self, principal: Principal) -> User:
        """The bearer's user, read together with the token's state in one statement: exact
        (every process sees a revocation committed by any other), and no separate token-state
        read. ``Unauthorized`` when the user is gone or the token was revoked."""
        async with self._read_uow() as uow:
            found = await uow.users.get_with_session_state(principal.user_id, principal.session_id)
        if found is None:
            raise Unauthorized("Unknown user")
        user, session_ended = found
        ended = {principal.session_id} if session_ended and principal.session_id else set()
        if not TokenState(user.generation, frozenset(ended)).admits(principal):
            raise Unauthorized("Access token revoked")
        return user

    async def get_user_by_email(self, email: str) -> User | None:
        async with self._read_uow() as uow:
            return await uow.users.get_by_email(normalize_email(email))

    async def list_users(self, limit: int = 1000, offset: int = 0) -> list[User]:
        async with self._read_uow() as uow:
            return await uow.users.list_all(limit, offset)

    async def search_users(self, text: str | None, page: int, size: int) -> tuple[list[User], int]:
        """A page of users (newest first) whose name or email contains ``text``."""
        async with self._read_uow() as uow:
            return await uow.users.search(text.strip() or None if text else None, size, page * size)

    async def list_with_role(self, role: str) -> list[User]:
        async with self._read_uow() as uow:
            return await uow.users.list_with_role(role)

    async def create_user(
        self, email: str, name: str, password: str, roles: frozenset[str] = frozenset({"user"})
    ) -> User:
        """Rules checked, password hashed off the event loop, ``auth.user_registered``
        recorded in the same transaction. ``Conflict`` when the email is taken. The email
        is validated here, so every way in (API, CLI) follows the same rules."""
        email = valid_email(email)
        name = user_name(name)
        check_password(password)
        async with self._uow() as uow:
            if await uow.users.get_by_email(email) is not None:
                raise Conflict("A user with this email already exists")
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user = User(
            id=str(uuid.uuid4()),
            name=name,
            email=email,
            password_hash=password_hash,
            roles=frozenset(roles) | {Role.USER.value},
            generation=0,
            sync_status=SyncStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            await uow.users.add(user)
            uow.record(
                DomainEvent(
                    "auth.user_registered",
                    {"userId": user.id, "email": user.email, "name": user.name},
                    aggregate_id=user.id,
                )
            )
            await uow.commit()
        return user

    async def grant_role(self, email: str, role: str) -> User:
        return await self._change_role(email, role, grant=True)

    async def revoke_role(self, email: str, role: str) -> User:
        """Also ends the user's access tokens, which still carry the role."""
        return await self._change_role(email, role, grant=False)

    @runs_to_completion
    async def _change_role(self, email: str, role: str, *, grant: bool) -> User:
        if role not in KNOWN_ROLES:
            known = ", ".join(sorted(KNOWN_ROLES))
            raise ValidationFailed(f"unknown role '{role}' (known: {known})")
        generation: int | None = None
        async with self._uow() as uow:
            user = await uow.users.get_by_email(normalize_email(email))
            if user is None:
                raise NotFound(f"unknown user '{email}'")
            roles = user.roles | {role} if grant else user.roles - {role}
            if roles != user.roles:
                now = self._clock.now()
                await uow.users.set_roles(user.id, roles, now)
                if not grant:
                    generation = await uow.users.bump_generation(user.id, now)
                await uow.commit()
                user.roles = roles
        if generation is not None:
            user.generation = generation
            await self._generations.refresh(user.id)
        return user

    @runs_to_completion
    async def delete_user(self, email: str) -> User:
        """Delete the user, their sessions and tokens; their access tokens die at once (the
        cached generation becomes "no such user"). ``NotFound`` for an unknown email."""
        async with self._uow() as uow:
            user = await uow.users.get_by_email(normalize_email(email))
            if user is None:
                raise NotFound(f"unknown user '{email}'")
            await uow.users.delete(user.id)
            await uow.commit()
        await self._generations.refresh(user.id)
        return user


class UserSyncService:
    """``sync.pending_users``: push every PENDING user through the ``UserSync`` port; SYNCED
    on success, FAILED after ``attempts`` tries."""

    def __init__(self, uow: AuthUowFactory, sync: UserSync) -> None:
        self._uow = uow
        self._sync = sync

    async def sync_pending_users(
        self, batch_size: int = 100, attempts: int = 3, retry_delay: float = 0.5
    ) -> SyncReport:
        async with self._uow() as uow:
            pending = await uow.users.list_by_sync_status(SyncStatus.PENDING, batch_size)
        synced = failed = 0
        errors: list[str] = []
        for user in pending:
            status = SyncStatus.FAILED
            for attempt in range(attempts):
                try:
                    await self._sync.push(user.to_public_dict())
                    status = SyncStatus.SYNCED
                    break
                except Exception as exc:
                    log.warning(
                        "user sync of %s failed (attempt %d/%d): %s",
                        user.id,
                        attempt + 1,
                        attempts,
                        exc,
                    )
                    if attempt + 1 < attempts:
                        await asyncio.sleep(retry_delay * (2**attempt))
                    else:
                        errors.append(f"{user.id}: {exc}")
            async with self._uow() as uow:
                await uow.users.set_sync_status(user.id, status, utcnow())
                await uow.commit()
            if status is SyncStatus.SYNCED:
                synced += 1
            else:
                failed += 1
        return SyncReport(synced=synced, failed=failed, errors=errors)
