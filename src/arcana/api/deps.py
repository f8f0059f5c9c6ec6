"""``Annotated`` dependency aliases that keep routes short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from arcana.domain.identity import Principal, Role
from arcana.services.app import Services
from arcana.services.identity import IdentityService

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")


async def get_services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop (and a
    # wait for a free worker thread) on every request that takes the services.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return await services.identity.authenticate(token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_verified_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return services.identity.verify(token)


VerifiedPrincipal = Annotated[Principal, Depends(get_verified_principal)]
"""A bearer whose claims are verified but whose revocation is not checked yet: only for routes
whose service checks the token state in the same read as its own data (``/auth/me``)."""


def require_role(role: str) -> Callable[[Principal], Awaitable[Principal]]:
    """401 without a valid bearer (from ``get_principal``), then 403 without ``role``."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        return IdentityService.require_role(principal, role)

    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_role(Role.ADMIN))]
