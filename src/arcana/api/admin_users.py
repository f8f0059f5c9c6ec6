"""Admin routes over users: search, roles, a user's sessions, deletion (used by the console).

Users are addressed by id here (the CLI addresses them by email); the services take an email,
so each route loads the user first, which also gives the 404 for an unknown id.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel

from arcana.api.deps import AdminPrincipal, ServicesDep
from arcana.api.schemas_auth import SessionList
from arcana.domain.identity import Principal, Role
from arcana.domain.timestamps import utcnow
from arcana.domain.users import User
from arcana.errors import Conflict, NotFound
from arcana.services.app import Services

router = APIRouter(
    prefix="/api/v1/admin/users",
    tags=["admin: users"],
    responses={404: {"description": "No such user"}},
)
_SELF: dict[int | str, dict[str, Any]] = {409: {"description": "The admin's own account"}}

RoleName = Literal["user", "admin"]


class UserRead(BaseModel):
    id: str
    name: str
    email: str
    roles: list[str]
    created_at: str
    updated_at: str


class UserPage(BaseModel):
    data: list[UserRead]
    page: int
    size: int
    total: int


def _read(user: User) -> UserRead:
    return UserRead(**user.to_public_dict())


async def _load(services: Services, user_id: uuid.UUID) -> User:
    user = await services.users.get_user(str(user_id))
    if user is None:
        raise NotFound("No such user")
    return user


def _acting_as(user: User) -> Principal:
    """The auth service's session operations act for a principal: the admin acts as the
    target user here, with no current session of its own."""
    return Principal(
        user_id=user.id,
        roles=user.roles,
        token_id="",
        issued_at=utcnow(),
        generation=user.generation,
    )


@router.get("", response_model=UserPage, summary="Users, newest first; q searches name and email")
async def list_users(
    _admin: AdminPrincipal,
    services: ServicesDep,
    q: Annotated[str | None, Query(max_length=254)] = None,
    page: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> UserPage:
    users, total = await services.users.search_users(q, page, size)
    return UserPage(data=[_read(u) for u in users], page=page, size=size, total=total)


@router.get("/{user_id}", response_model=UserRead, summary="One user")
async def get_user(_admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID) -> UserRead:
    return _read(await _load(services, user_id))


@router.put("/{user_id}/roles/{role}", response_model=UserRead, summary="Grant a role")
async def grant_role(
    _admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID, role: RoleName
) -> UserRead:
    user = await _load(services, user_id)
    return _read(await services.users.grant_role(user.email, role))


@router.delete(
    "/{user_id}/roles/{role}",
    response_model=UserRead,
    summary="Revoke a role (the user's access tokens end; an admin cannot drop their own admin)",
    responses=_SELF,
)
async def revoke_role(
    admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID, role: RoleName
) -> UserRead:
    user = await _load(services, user_id)
    if user.id == admin.user_id and role == Role.ADMIN.value:
        raise Conflict("An admin cannot revoke their own admin role")
    return _read(await services.users.revoke_role(user.email, role))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user with their sessions (an admin cannot delete themselves)",
    responses=_SELF,
)
async def delete_user(admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID) -> Response:
    user = await _load(services, user_id)
    if user.id == admin.user_id:
        raise Conflict("An admin cannot delete their own account")
    await services.users.delete_user(user.email)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}/sessions", response_model=SessionList, summary="A user's live sessions")
async def list_sessions(
    _admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID
) -> SessionList:
    user = await _load(services, user_id)
    views = await services.auth.list_sessions(_acting_as(user))
    return SessionList.of(views, mark_current=False)


@router.delete(
    "/{user_id}/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End one of a user's sessions (its refresh family and access tokens, at once)",
)
async def end_session(
    _admin: AdminPrincipal, services: ServicesDep, user_id: uuid.UUID, session_id: uuid.UUID
) -> Response:
    user = await _load(services, user_id)
    await services.auth.end_session(_acting_as(user), str(session_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
