"""Turns a bearer token into a ``Principal``: signature and claims, then the user's current
token generation (so logout-all kills older access tokens at once)."""

from __future__ import annotations

from arcana.domain.identity import AccessTokens, Principal, TokenGenerations
from arcana.domain.timestamps import utcnow
from arcana.errors import Forbidden, Unauthorized


class IdentityService:
    def __init__(self, tokens: AccessTokens, generations: TokenGenerations | None = None) -> None:
        self._tokens = tokens
        self._generations = generations

    async def authenticate(self, bearer: str | None) -> Principal:
        principal = self.verify(bearer)
        await self._check_state(principal)
        return principal

    def verify(self, bearer: str | None) -> Principal:
        """Signature, expiry and claims only, not whether the token was revoked: for a
        service call that checks the token state in its own read (``AuthService.me``)."""
        if not bearer:
            raise Unauthorized("Missing bearer token")
        return self._tokens.verify(bearer)

    async def _check_state(self, principal: Principal) -> None:
        # One cache read on the hot path: the generation and the recently ended sessions.
        if self._generations is not None:
            state = await self._generations.state(principal.user_id)
            if state is None or not state.admits(principal):
                raise Unauthorized("Access token revoked")

    async def revalidate(self, principal: Principal) -> None:
        """For long-lived connections (the SSE stream): raises ``Unauthorized`` once the token
        has expired, its session ended, the user's tokens were revoked (logout-all, password
        change, a role revoked) or the user is gone."""
        if principal.expires_at is not None and principal.expires_at <= utcnow():
            raise Unauthorized("Access token expired")
        await self._check_state(principal)

    @staticmethod
    def require_role(principal: Principal, role: str) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"Requires role '{role}'")
        return principal
