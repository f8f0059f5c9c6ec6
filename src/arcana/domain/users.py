"""Users, sessions (refresh-token families) and password-reset tokens, with the ports the
auth services need. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from arcana.domain.ports import UnitOfWork


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
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "updated_at": self.updated_at.isoformat().replace("+00:00", "Z"),
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

    async def delete_dead(self, now: datetime, idle_seconds: int, batch_size: int) -> int:
        """Delete up to ``batch_size`` ended sessions (revoked, expired or idle) with their
        tokens; returns how many rows went."""
        ...


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
    """Blocking (CPU-bound) calls: services run them in a thread."""

    def hash(self, password: str) -> str: ...

    def verify(self, password_hash: str, password: str) -> bool:
        """False on mismatch or an unreadable hash; never raises for a wrong password."""
        ...

    def needs_rehash(self, password_hash: str) -> bool: ...

    def dummy_hash(self) -> str:
        """A hash with the current parameters that matches no password: verifying against it
        costs exactly what a real verification costs (no user enumeration by timing)."""
        ...


class LoginLimiter(Protocol):
    """Counts failed logins per account and per client address in a fixed window."""

    async def check(self, account: str, address: str) -> int:
        """Seconds until the caller may try again (0: allowed)."""
        ...

    async def record_failure(self, account: str, address: str) -> None: ...

    async def reset_account(self, account: str) -> None: ...


class UserSync(Protocol):
    """Pushes a user to an external system; raises on failure."""

    async def push(self, user: dict[str, Any]) -> None: ...
