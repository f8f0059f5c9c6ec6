"""``/api/v1/auth``: registration, login, token rotation, sessions, password change and reset."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from arcana.api.deps import ContainerDep, CurrentPrincipal
from arcana.api.schemas_auth import (
    ChangePasswordRequest,
    ForgotPasswordRequest,
    LoginRequest,
    MeResponse,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    SessionList,
    SessionRead,
    TokenResponse,
    UserCreated,
)
from arcana.services.auth import ClientInfo, TokenPair

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def _client(request: Request) -> ClientInfo:
    # The peer address as the server sees it. Behind a proxy listed in
    # ARCANA_FORWARDED_ALLOW_IPS, uvicorn's proxy-headers support has already replaced it with
    # the right-most X-Forwarded-For entry not added by a trusted proxy (never the left-most,
    # which the client writes itself); the limits key on it.
    host = request.client.host if request.client is not None else "unknown"
    return ClientInfo(ip=host, user_agent=request.headers.get("user-agent"))


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserCreated)
async def register(body: RegisterRequest, request: Request, container: ContainerDep) -> UserCreated:
    user = await container.auth.register(body.name, body.email, body.password, _client(request))
    return UserCreated(id=user.id, name=user.name, email=user.email)


@router.post("/login", response_model=TokenResponse)
async def login(body: LoginRequest, request: Request, container: ContainerDep) -> TokenResponse:
    pair = await container.auth.login(body.email, body.password, _client(request))
    return _tokens(pair)


@router.post("/refresh", response_model=TokenResponse)
async def refresh(body: RefreshRequest, request: Request, container: ContainerDep) -> TokenResponse:
    return _tokens(await container.auth.refresh(body.refresh_token, _client(request)))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: RefreshRequest, container: ContainerDep) -> Response:
    await container.auth.logout(body.refresh_token)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(principal: CurrentPrincipal, container: ContainerDep) -> Response:
    await container.auth.logout_all(principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/change-password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    principal: CurrentPrincipal,
    body: ChangePasswordRequest,
    request: Request,
    container: ContainerDep,
) -> Response:
    await container.auth.change_password(
        principal, body.current_password, body.new_password, _client(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MeResponse)
async def me(principal: CurrentPrincipal, container: ContainerDep) -> MeResponse:
    user = await container.auth.me(principal)
    return MeResponse(
        id=user.id,
        name=user.name,
        email=user.email,
        roles=sorted(user.roles),
        created_at=user.created_at,
    )


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED)
async def forgot_password(
    body: ForgotPasswordRequest, request: Request, container: ContainerDep
) -> Response:
    await container.auth.forgot_password(body.email, _client(request))
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/reset-password", status_code=status.HTTP_204_NO_CONTENT)
async def reset_password(body: ResetPasswordRequest, container: ContainerDep) -> Response:
    await container.auth.reset_password(body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=SessionList)
async def sessions(principal: CurrentPrincipal, container: ContainerDep) -> SessionList:
    views = await container.auth.list_sessions(principal)
    return SessionList(
        data=[
            SessionRead(
                id=v.session.id,
                created_at=v.session.created_at,
                last_used_at=v.session.last_used_at,
                user_agent=v.session.user_agent,
                ip=v.session.ip,
                current=v.current,
            )
            for v in views
        ]
    )


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, container: ContainerDep
) -> Response:
    await container.auth.end_session(principal, str(session_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
