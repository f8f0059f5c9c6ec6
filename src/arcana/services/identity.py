"""Turns a bearer token into a ``Principal``: signature and claims, then the user's current
token generation (so logout-all kills older access tokens at once)."""

from __future__ import annotations

from arcana.domain.identity import AccessTokens, Principal, TokenGenerations
from arcana.errors import Forbidden, Unauthorized


class IdentityService:
    def __init__(self, tokens: AccessTokens, generations: TokenGenerations | None = None) -> None:
        self._tokens = tokens
        self._generations = generations

    async def authenticate(self, bearer: str | None) -> Principal:
        if not bearer:
            raise Unauthorized("Missing bearer token")
        principal = self._tokens.verify(bearer)
        if self._generations is not None:
            current = await self._generations.current(principal.user_id)
            if current is None or principal.generation < current:
                raise Unauthorized("Access token revoked")
        return principal

    @staticmethod
    def require_role(principal: Principal, role: str) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"Requires role '{role}'")
        return principal
