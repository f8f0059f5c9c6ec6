"""``Annotated`` dependency aliases that keep routes short."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from arcana.bootstrap import Container
from arcana.domain.identity import Principal, Role
from arcana.services.identity import IdentityService

_bearer = HTTPBearer(auto_error=False, description="Access token from /api/v1/auth/login")


async def get_container(request: Request) -> Container:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop (and a
    # wait for a free worker thread) on every request that takes the container.
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_principal(
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    return await container.identity.authenticate(token)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_role(role: str) -> Callable[[Principal], Awaitable[Principal]]:
    """401 without a valid bearer (from ``get_principal``), then 403 without ``role``."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        return IdentityService.require_role(principal, role)

    return dependency


AdminPrincipal = Annotated[Principal, Depends(require_role(Role.ADMIN))]
