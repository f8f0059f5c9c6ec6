"""``/api/v1/auth``: registration, login, token rotation, sessions, password change and reset.

Browser sessions (contract §2): with ``X-Arcana-Client: browser``, login and refresh also set
the refresh token as an ``HttpOnly; SameSite=Strict`` cookie scoped to this router's path, and
refresh/logout accept that cookie instead of a body. A cookie is sent by the browser on its own,
so a request that relies on it must carry the header too: a cross-site form cannot set one.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from arcana.api.deps import CurrentPrincipal, ServicesDep, VerifiedPrincipal
from arcana.api.errors import arcana_error_answer
from arcana.api.fast_path import plain_bearer, read_body, replay, route_of, send_json
from arcana.api.schemas_auth import (
    ChangePasswordRequest,
    ForgotPasswordRequest,
    LoginRequest,
    MeResponse,
    RefreshRequest,
    RegisterRequest,
    ResetPasswordRequest,
    SessionList,
    TokenResponse,
    UserCreated,
)
from arcana.domain.users import User
from arcana.errors import ArcanaError, Forbidden, TokenExpired, ValidationFailed
from arcana.services.app import Services
from arcana.services.auth import ClientInfo, TokenPair

AUTH_PREFIX = "/api/v1/auth"
router = APIRouter(prefix=AUTH_PREFIX, tags=["auth"])

CLIENT_HEADER = "X-Arcana-Client"
REFRESH_COOKIE = "arcana_refresh"
_BROWSER_DOC = (
    f" With `{CLIENT_HEADER}: browser` the refresh token may come from the `{REFRESH_COOKIE}` "
    "cookie instead of the body; the cookie without that header is refused (403)."
)


def _client(request: Request) -> ClientInfo:
    # The peer address as the server sees it. Behind a proxy listed in
    # ARCANA_FORWARDED_ALLOW_IPS, uvicorn's proxy-headers middleware (on either HTTP server,
    # see cli/http_server.py) has already replaced it with the right-most X-Forwarded-For
    # entry not added by a trusted proxy (never the left-most, which the client writes
    # itself); the limits key on it.
    host = request.client.host if request.client is not None else "unknown"
    return ClientInfo(ip=host, user_agent=request.headers.get("user-agent"))


def _is_browser(request: Request) -> bool:
    return request.headers.get(CLIENT_HEADER, "").strip().lower() == "browser"


def _set_refresh_cookie(
    request: Request, response: Response, services: Services, token: str
) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        token,
        max_age=services.settings.auth.refresh_token_ttl,
        path=AUTH_PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def _clear_refresh_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=AUTH_PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def _refresh_token(request: Request, body: RefreshRequest | None) -> str | None:
    """The body's token; else the cookie's, only from a browser client; None if neither."""
    if body is not None:
        return body.refresh_token
    cookie = request.cookies.get(REFRESH_COOKIE)
    if cookie and not _is_browser(request):
        raise Forbidden(f"The refresh token cookie is accepted only with {CLIENT_HEADER}: browser")
    if cookie:
        return cookie
    if _is_browser(request):
        return None
    raise ValidationFailed(field="refresh_token", message="Field required", kind="missing")


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserCreated)
async def register(body: RegisterRequest, request: Request, services: ServicesDep) -> UserCreated:
    user = await services.auth.register(body.name, body.email, body.password, _client(request))
    return UserCreated(id=user.id, name=user.name, email=user.email)


@router.post(
    "/login",
    response_model=TokenResponse,
    description=f"With `{CLIENT_HEADER}: browser` the refresh token is also set as a cookie.",
)
async def login(
    body: LoginRequest, request: Request, response: Response, services: ServicesDep
) -> TokenResponse:
    pair = await services.auth.login(body.email, body.password, _client(request))
    if _is_browser(request):
        _set_refresh_cookie(request, response, services, pair.refresh_token)
    return _tokens(pair)


_COOKIE_REFUSED: dict[int | str, dict[str, Any]] = {
    403: {"description": f"The refresh cookie was sent without `{CLIENT_HEADER}: browser`"}
}


@router.post(
    "/refresh",
    response_model=TokenResponse,
    description="Rotate the token pair." + _BROWSER_DOC,
    responses=_COOKIE_REFUSED,
)
async def refresh(
    request: Request,
    response: Response,
    services: ServicesDep,
    body: RefreshRequest | None = None,
) -> TokenResponse:
    token = _refresh_token(request, body)
    if token is None:
        raise TokenExpired("No refresh token")
    pair = await services.auth.refresh(token, _client(request))
    if _is_browser(request):
        _set_refresh_cookie(request, response, services, pair.refresh_token)
    return _tokens(pair)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    description="End the session of a refresh token (204 for an unknown one too)."
    + _BROWSER_DOC
    + " A browser client's cookie is cleared.",
    responses=_COOKIE_REFUSED,
)
async def logout(
    request: Request, services: ServicesDep, body: RefreshRequest | None = None
) -> Response:
    token = _refresh_token(request, body)
    if token is not None:
        await services.auth.logout(token)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if _is_browser(request):
        _clear_refresh_cookie(request, response)
    return response


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(principal: CurrentPrincipal, services: ServicesDep) -> Response:
    await services.auth.logout_all(principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/change-password", status_code=status.HTTP_204_NO_CONTENT)
async def change_password(
    principal: CurrentPrincipal,
    body: ChangePasswordRequest,
    request: Request,
    services: ServicesDep,
) -> Response:
    await services.auth.change_password(
        principal, body.current_password, body.new_password, _client(request)
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _me_json(user: User) -> bytes:
    """``/me``'s body, the same bytes whichever path answers (route or ``MeFastPath``)."""
    answer = MeResponse(
        id=user.id,
        name=user.name,
        email=user.email,
        roles=sorted(user.roles),
        created_at=user.created_at,
    )
    return MeResponse.__pydantic_serializer__.to_json(answer)


@router.get("/me", response_model=MeResponse)
async def me(principal: VerifiedPrincipal, services: ServicesDep) -> Response:
    user = await services.auth.me(principal)
    return Response(_me_json(user), media_type="application/json")


class MeFastPath:
    """``GET /api/v1/auth/me`` with a plain ``Bearer`` token, answered before FastAPI's routing
    and dependency solving (see ``arcana.api.fast_path``): the same claims check
    (``IdentityService.verify``), the same service call (``AuthService.me``: one read with the
    token's state, the audit event) and the same body. A token that does not verify, or any
    other form of the request, goes on to the route, which answers it (401 with its
    ``WWW-Authenticate``); once the read was made, its errors (a revoked token, an unreachable
    database) are answered here by the app's own error rendering, so the read is not repeated.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.path = f"{AUTH_PREFIX}/me"
        self._route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == self.path:
            token = plain_bearer(scope["headers"])
            if token is not None:
                services: Services = scope["app"].state.services
                try:
                    principal = services.identity.verify(token)
                except ArcanaError:
                    principal = None
                if principal is not None:
                    if self._route is None:
                        self._route = route_of(router, me)
                    scope["route"] = self._route
                    try:
                        user = await services.auth.me(principal)
                    except ArcanaError as exc:
                        await arcana_error_answer(exc, Request(scope))(scope, receive, send)
                        return
                    await send_json(send, _me_json(user))
                    return
        await self.app(scope, receive, send)


@router.post("/forgot-password", status_code=status.HTTP_202_ACCEPTED)
async def forgot_password(
    body: ForgotPasswordRequest, request: Request, services: ServicesDep
) -> Response:
    await services.auth.forgot_password(body.email, _client(request))
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/reset-password", status_code=status.HTTP_204_NO_CONTENT)
async def reset_password(body: ResetPasswordRequest, services: ServicesDep) -> Response:
    await services.auth.reset_password(body.token, body.new_password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/sessions", response_model=SessionList)
async def sessions(principal: CurrentPrincipal, services: ServicesDep) -> SessionList:
    views = await services.auth.list_sessions(principal)
    return SessionList.of(views)


@router.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(
    session_id: uuid.UUID, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    await services.auth.end_session(principal, str(session_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


_JSON_CONTENT_TYPE = b"application/json"


class LoginFastPath:
    """``POST /api/v1/auth/login`` without FastAPI's routing, dependency solving and response
    serialization: on a login those cost about as much CPU as everything else the server does
    besides the Argon2 hash, and on a machine whose cores the hashes need every such
    millisecond is a verification not done (``bench/login.py``, ``bench/RESULTS.md``).

    Taken only by a request the route would accept as it is: a ``Content-Length`` body sent as
    ``application/json`` that ``LoginRequest`` validates (the same model, so the same rules),
    from a client without ``X-Arcana-Client`` (a browser login, which also sets the cookie,
    stays on the route). It makes the same service call with the same ``ClientInfo`` and
    answers the same body; errors raised by the service are rendered by the app's own error
    rendering, as the route's handler would. Everything else (a 422, a chunked body, a
    browser) goes on to the route with the body replayed, so those answers are the route's.
    It sits inside ``RequestContextMiddleware``: request ids, the body limit and the HTTP
    metrics (the route is put in the scope) apply as on the route.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._path = f"{AUTH_PREFIX}/login"
        self._route: BaseRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != self._path
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        content_length = -1
        content_type: bytes | None = None
        user_agent: str | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
            elif name == b"content-type":
                content_type = value
            elif name == b"user-agent":
                # Starlette's ``Headers.get``: the first one, as latin-1.
                if user_agent is None:
                    user_agent = value.decode("latin-1")
            elif name == b"x-arcana-client":
                content_length = -1  # any value: the route decides (cookie, browser rules)
                break
        if content_length < 0 or content_type != _JSON_CONTENT_TYPE:
            await self.app(scope, receive, send)
            return
        read = await read_body(scope, receive, send)
        if read is None:  # refused by the body limit, and answered
            return
        raw, pending = read
        body = self._valid(raw) if pending is None else None
        if body is None:
            await self.app(scope, replay(raw, pending, receive), send)
            return
        scope["route"] = self._find_route()
        services: Services = scope["app"].state.services
        client = scope.get("client")
        # ``_client``'s rule, from the scope instead of a ``Request``.
        info = ClientInfo(ip=client[0] if client else "unknown", user_agent=user_agent)
        try:
            pair = await services.auth.login(body.email, body.password, info)
        except ArcanaError as exc:
            await arcana_error_answer(exc, Request(scope))(scope, receive, send)
            return
        await send_json(send, _tokens(pair).model_dump_json().encode())

    @staticmethod
    def _valid(raw: bytes) -> LoginRequest | None:
        """The body as the route would take it (``json.loads``, then the model), or None."""
        try:
            data = json.loads(raw)
            return LoginRequest.model_validate(data) if isinstance(data, dict) else None
        except (ValueError, ValidationError, RecursionError):  # nested too deep: the route's
            return None

    def _find_route(self) -> BaseRoute | None:
        if self._route is None:
            self._route = route_of(router, login)
        return self._route
