"""Who is calling: the verified contents of an access token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    roles: frozenset[str]
    token_id: str
    issued_at: datetime
    generation: int
    """Per-user token generation at issue time; logout-all and password changes bump the
    user's generation, which kills every access token carrying an older one."""
    session_id: str | None = None
    expires_at: datetime | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


class AccessTokens(Protocol):
    """Signs and verifies access tokens. ``verify`` raises ``Unauthorized`` for anything
    forged, expired or malformed."""

    def issue(
        self, user_id: str, roles: frozenset[str], generation: int, session_id: str | None = None
    ) -> IssuedToken: ...

    def verify(self, token: str) -> Principal: ...


@dataclass(frozen=True, slots=True)
class TokenState:
    """What decides whether a user's access tokens still work: the user's token generation
    (bumped by logout-all, password changes, role revocation) and the sessions ended within
    the last access-token lifetime (logout, ending a session, refresh-token reuse)."""

    generation: int
    revoked_sessions: frozenset[str] = frozenset()

    def admits(self, principal: Principal) -> bool:
        if principal.generation < self.generation:
            return False
        return principal.session_id is None or principal.session_id not in self.revoked_sessions


class TokenGenerations(Protocol):
    """Current token state of a user (cached; see the auth service)."""

    async def current(self, user_id: str) -> int | None:
        """None when the user does not exist any more."""
        ...

    async def state(self, user_id: str) -> TokenState | None:
        """None when the user does not exist any more."""
        ...
