"""Users, sessions (refresh-token families) and password-reset tokens, with the ports the
auth services need. Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from arcana.domain.ports import UnitOfWork
from arcana.domain.timestamps import iso_z
from arcana.errors import ValidationFailed

USER_NAME_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def user_name(value: str) -> str:
    """A user's display name as stored, or ``ValidationFailed`` naming ``name``: the one rule
    for every way in (the API's schema publishes the same limit). Surrounding whitespace is
    dropped; control characters are refused (U+0000 cannot be stored in PostgreSQL text, and
    the others have no place in a name shown in mails and the console)."""
    name = value.strip()
    problem = None
    if not name:
        problem = "must not be empty"
    elif len(value) > USER_NAME_MAX:
        problem = f"must be at most {USER_NAME_MAX} characters"
    elif _CONTROL.search(value):
        problem = "must not contain control characters"
    if problem is not None:
        raise ValidationFailed(field="name", message=problem)
    return name


class SyncStatus(StrEnum):
    SYNCED = "SYNCED"
    PENDING = "PENDING"
    FAILED = "FAILED"


@dataclass(slots=True)
class User:
    id: str
    name: str
    email: str
    password_hash: str
    roles: frozenset[str]
    generation: int
    sync_status: SyncStatus
    created_at: datetime
    updated_at: datetime

    def to_public_dict(self) -> dict[str, Any]:
        """The user as other systems see it (no secrets): webhook sync, job payloads."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "roles": sorted(self.roles),
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
        }


@dataclass(slots=True)
class Session:
    """One refresh-token family: created by a login, rotated by /refresh, ended by logout."""

    id: str
    user_id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    """Absolute end of the family (login + refresh_token_ttl); rotation never extends it."""
    user_agent: str | None = None
    ip: str | None = None
    revoked_at: datetime | None = None

    def is_live(self, now: datetime, idle_seconds: int) -> bool:
        return (
            self.revoked_at is None
            and now < self.expires_at
            and (now - self.last_used_at).total_seconds() < idle_seconds
        )


@dataclass(slots=True)
class RefreshToken:
    id: str
    session_id: str
    user_id: str
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None = None
    """Set when rotated away (or the family ended); a later presentation is reuse."""


@dataclass(slots=True)
class ResetToken:
    id: str
    user_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    synced: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


# -- ports ------------------------------------------------------------------------------------
class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises ``Conflict`` when the email is taken."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def get_with_session_state(
        self, user_id: str, session_id: str | None
    ) -> tuple[User, bool] | None:
        """The user and whether the session ``session_id`` has ended (``False`` without one),
        in one read: a bearer's token state and the user's row in one round trip."""
        ...

    async def delete(self, user_id: str) -> bool:
        """Remove the user with their sessions and tokens; False when there was none."""
        ...

    async def get_by_email(self, email: str) -> User | None: ...

    async def list_all(self, limit: int = 1000, offset: int = 0) -> list[User]: ...

    async def list_with_role(self, role: str) -> list[User]: ...

    async def search(self, text: str | None, limit: int, offset: int) -> tuple[list[User], int]:
        """Users whose name or email contains ``text`` (case-insensitive; all when None),
        newest first, with the total count of matches."""
        ...

    async def set_password(self, user_id: str, password_hash: str, now: datetime) -> None: ...

    async def set_roles(self, user_id: str, roles: frozenset[str], now: datetime) -> None: ...

    async def bump_generation(self, user_id: str, now: datetime) -> int | None:
        """Atomically increment and return the user's token generation (None: no such user)."""
        ...

    async def generation(self, user_id: str) -> int | None: ...

    async def list_by_sync_status(self, status: SyncStatus, limit: int) -> list[User]: ...

    async def set_sync_status(self, user_id: str, status: SyncStatus, now: datetime) -> None: ...


class SessionRepository(Protocol):
    """Sessions and the refresh tokens of each."""

    async def add_session(self, session: Session) -> None: ...

    async def add_session_if_generation(self, session: Session, generation: int) -> bool:
        """Insert only while the user's token generation is still ``generation``, atomically
        with respect to a concurrent password reset or change; False when it moved on."""
        ...

    async def last_rotated_token_id(self, session_id: str) -> str | None:
        """The family's most recently issued token that is no longer current: the immediate
        predecessor of its live token."""
        ...

    async def recently_revoked(self, user_id: str, since: datetime, limit: int) -> list[str]:
        """Ids of the user's sessions ended at or after ``since`` (newest first)."""
        ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def list_live_sessions(
        self, user_id: str, now: datetime, idle_seconds: int
    ) -> list[Session]: ...

    async def touch_session(self, session_id: str, now: datetime) -> None: ...

    async def revoke_session(self, session_id: str, now: datetime) -> bool:
        """End a family: the session and all its tokens. True when it was live."""
        ...

    async def revoke_all_sessions(self, user_id: str, now: datetime) -> int: ...

    async def add_token(self, token: RefreshToken) -> None: ...

    async def get_token_by_hash(self, token_hash: str) -> RefreshToken | None: ...

    async def consume_token(self, token_id: str, now: datetime) -> bool:
        """Mark a live token rotated, atomically: exactly one concurrent caller gets True."""
        ...

    async def delete_dead(
        self, now: datetime, idle_seconds: int, batch_size: int, keep_revoked_seconds: int = 0
    ) -> int:
        """Delete up to ``batch_size`` ended sessions (revoked more than
        ``keep_revoked_seconds`` ago, expired or idle) with their tokens; returns how many
        rows went. Recently revoked sessions stay: they are what kills their access tokens."""
        ...


class SessionStarts(Protocol):
    """A login's writes in one step: the new session and its first refresh token, only while
    the user's token generation is still ``generation`` (atomically with respect to a
    concurrent password reset or change). False, and nothing written, when it moved on.

    A port of its own, beside ``SessionRepository``, so a backend can run the whole step in
    one go (the SQLite group commit) instead of a unit of work's statements one by one."""

    async def start(self, session: Session, token: RefreshToken, generation: int) -> bool: ...


class ResetTokenRepository(Protocol):
    async def add(self, token: ResetToken) -> None: ...

    async def get_by_hash(self, token_hash: str) -> ResetToken | None: ...

    async def use(self, token_id: str, now: datetime) -> bool:
        """Mark used if unused and unexpired, atomically; True for the one caller that did."""
        ...

    async def invalidate_for_user(self, user_id: str, now: datetime) -> None: ...

    async def delete_dead(self, now: datetime, batch_size: int) -> int: ...


class AuthUnitOfWork(UnitOfWork, Protocol):
    @property
    def users(self) -> UserRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def reset_tokens(self) -> ResetTokenRepository: ...


class PasswordHasher(Protocol):
    """Argon2 behind a fixed number of hashing slots. ``hash`` and ``verify`` run off the event
    loop; when no slot frees within a short wait they raise ``ServiceUnavailable`` (with
    ``retry_after``) instead of queueing without bound."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """False on mismatch or an unreadable hash; never raises for a wrong password."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...

    def dummy_hash(self) -> str:
        """A hash with the current parameters that matches no password: verifying against it
        costs exactly what a real verification costs (no user enumeration by timing)."""
        ...


class LoginLimiter(Protocol):
    """Failed-login budget per account and per client address in a fixed window. An attempt is
    reserved (counted) before the password is checked and given back on success, in one
    atomic step with the check, so parallel guesses cannot outrun the limit."""

    async def reserve(self, account: str, address: str) -> int:
        """0: the attempt is counted and may proceed; else seconds until it may be retried."""
        ...

    async def release(self, account: str, address: str) -> None:
        """The attempt succeeded: the account's count clears, the address gets it back."""
        ...

    async def refund(self, account: str, address: str) -> None:
        """The attempt never reached the password check (no hashing slot): both get it back."""
        ...


class AttemptQuota(Protocol):
    """Fixed-window quotas shared by every process (registrations per address, reset mails
    per email and per address)."""

    async def hit(self, bucket: str, key: str, limit: int, window_seconds: int) -> int:
        """0: counted and allowed; else seconds until the window frees (nothing counted)."""
        ...


class SecretSealer(Protocol):
    """Authenticated encryption of secrets that must rest somewhere (job payloads)."""

    def seal(self, plaintext: str) -> str: ...

    def unseal(self, sealed: str) -> str:
        """Raises ``ValueError`` for anything not sealed by this key."""
        ...


class UserSync(Protocol):
    """Pushes a user to an external system; raises on failure."""

    async def push(self, user: dict[str, Any]) -> None: ...
