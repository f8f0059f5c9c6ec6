"""Maps ``ArcanaError`` (by MRO) and framework errors to problem+json responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from arcana import errors
from arcana.api.problems import problem_response

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[errors.ArcanaError], int] = {
    errors.ArcanaError: 500,
    errors.ValidationFailed: 422,
    errors.PayloadTooLarge: 413,
    errors.InvalidCredentials: 401,
    errors.TokenExpired: 401,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
}

_STATUS_CODES = {
    400: ("VALIDATION_FAILED", "Bad request"),
    401: ("UNAUTHORIZED", "Authentication required"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    406: ("NOT_ACCEPTABLE", "Not acceptable"),
    409: ("CONFLICT", "Conflict"),
    413: ("PAYLOAD_TOO_LARGE", "Payload too large"),
    415: ("VALIDATION_FAILED", "Unsupported media type"),
    422: ("VALIDATION_FAILED", "Validation failed"),
    429: ("RATE_LIMITED", "Too many requests"),
    503: ("SERVICE_UNAVAILABLE", "Service unavailable"),
}


def status_for(exc: errors.ArcanaError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def field_errors(exc: errors.ValidationFailed, request: Request | None) -> list[dict[str, Any]]:
    """The ``errors`` member of a 422, one entry per problem the error names. A field's
    location is where the request carries it: a path parameter, a query parameter, or else the
    JSON body (``loc: ["body", field]``). Errors the API raised itself come located."""
    if exc.errors:
        return exc.errors

    def where(field: str) -> str:
        if request is not None:
            if field in request.path_params:
                return "path"
            if field in request.query_params:
                return "query"
        return "body"

    return [
        {"loc": [where(p.field), p.field], "msg": p.message, "type": p.kind} for p in exc.problems
    ]


def arcana_error_response(exc: errors.ArcanaError, request: Request | None = None) -> Response:
    status = status_for(exc)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = dict(exc.extra)
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="arcana"'
    elif isinstance(exc, errors.TokenExpired | errors.InvalidCredentials):
        headers["WWW-Authenticate"] = 'Bearer realm="arcana", error="invalid_token"'
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, errors.ServiceUnavailable) and "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    if isinstance(exc, errors.ValidationFailed):
        located = field_errors(exc, request)
        if located:
            extra["errors"] = located
    code = "PAYLOAD_TOO_LARGE" if isinstance(exc, errors.PayloadTooLarge) else exc.code
    return problem_response(status, code, exc.title, exc.detail, headers=headers, extra=extra)


def _clean_validation_errors(raw: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in raw:
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


def arcana_error_answer(exc: errors.ArcanaError, request: Request | None) -> Response:
    """The answer to an ``ArcanaError`` raised by a route (or a fast path standing in for one),
    logged when it is an internal error."""
    if status_for(exc) >= 500 and not isinstance(exc, errors.ServiceUnavailable):
        log.error("internal error: %s", exc, exc_info=exc)
    return arcana_error_response(exc, request)


async def _on_arcana_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ArcanaError)
    return arcana_error_answer(exc, request)


async def _on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = _clean_validation_errors(list(exc.errors()))
    if any(d["type"] == "json_invalid" for d in details):
        summary = "The request body is not valid JSON"
    else:
        summary = (
            "; ".join(f"{'.'.join(d['loc'][1:] or d['loc'])}: {d['msg']}" for d in details[:10])
            or "Invalid request"
        )
    return problem_response(
        422, "VALIDATION_FAILED", "Validation failed", summary, extra={"errors": details}
    )


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, errors.ArcanaError):
        return arcana_error_response(exc.__cause__, request)
    code, title = _STATUS_CODES.get(
        exc.status_code, ("INTERNAL" if exc.status_code >= 500 else "VALIDATION_FAILED", "Error")
    )
    detail = exc.detail if isinstance(exc.detail, str) else title
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(exc.status_code, code, title, detail, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ArcanaError, _on_arcana_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
