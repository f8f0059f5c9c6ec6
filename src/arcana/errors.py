"""The error tree every layer speaks. Transports map it to their own status codes.

    ArcanaError (INTERNAL)
    ├── ValidationFailed (VALIDATION_FAILED)
    │   └── InsufficientStock          gRPC says FAILED_PRECONDITION for this one
    ├── InvalidCredentials (INVALID_CREDENTIALS)
    ├── TokenExpired (TOKEN_EXPIRED)
    ├── Unauthorized (UNAUTHORIZED)
    ├── Forbidden (FORBIDDEN)
    ├── NotFound (NOT_FOUND)
    ├── Conflict (CONFLICT)
    │   └── InvalidState               e.g. retrying a job that is not dead
    ├── RateLimited (RATE_LIMITED)     carries retry_after seconds
    └── ServiceUnavailable (SERVICE_UNAVAILABLE)

No HTTP or gRPC codes here: ``api/errors.py`` and ``rpc/errors.py`` look the class up by MRO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ArcanaError(Exception):
    code: str = "INTERNAL"
    title: str = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


@dataclass(frozen=True)
class FieldProblem:
    """One rule an input field breaks: the field's name, what is wrong, and a short kind."""

    field: str
    message: str
    kind: str = "value_error"


class ValidationFailed(ArcanaError):
    """Bad input. ``ValidationFailed(field="price", message="must be a number")`` names the
    input field at fault (the detail is then ``"price: must be a number"``); ``problems=[...]``
    lists several. Each transport says where a field sits in its own terms (HTTP:
    ``loc: ["body", "price"]``, built by ``api/errors.py``): no layer below the API speaks of
    request locations. ``errors`` is for the API itself, whose errors already have one (a
    body that is not JSON at all)."""

    code = "VALIDATION_FAILED"
    title = "Validation failed"

    def __init__(
        self,
        detail: str | None = None,
        *,
        field: str | None = None,
        message: str | None = None,
        kind: str = "value_error",
        problems: list[FieldProblem] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        if detail is None and field is not None:
            detail = f"{field}: {message}" if message else field
        super().__init__(detail)
        self.field = field
        self.message = message or self.detail
        if problems is None and field is not None:
            problems = [FieldProblem(field, self.message, kind)]
        self.problems: list[FieldProblem] = problems or []
        self.errors = errors or []


class InsufficientStock(ValidationFailed):
    title = "Insufficient stock"


class InvalidCredentials(ArcanaError):
    code = "INVALID_CREDENTIALS"
    title = "Invalid credentials"


class TokenExpired(ArcanaError):
    code = "TOKEN_EXPIRED"
    title = "Token expired or revoked"


class Unauthorized(ArcanaError):
    code = "UNAUTHORIZED"
    title = "Authentication required"


class Forbidden(ArcanaError):
    code = "FORBIDDEN"
    title = "Forbidden"


class NotFound(ArcanaError):
    code = "NOT_FOUND"
    title = "Not found"


class Conflict(ArcanaError):
    code = "CONFLICT"
    title = "Conflict"


class InvalidState(Conflict):
    title = "Invalid state"


class RateLimited(ArcanaError):
    code = "RATE_LIMITED"
    title = "Too many requests"

    def __init__(self, detail: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class ServiceUnavailable(ArcanaError):
    code = "SERVICE_UNAVAILABLE"
    title = "Service unavailable"


class PayloadTooLarge(ValidationFailed):
    """Request body over the configured limit (HTTP 413)."""

    title = "Payload too large"
