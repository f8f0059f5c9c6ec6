from __future__ import annotations

import pytest

from arcana import errors
from arcana.api.errors import status_for


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.ValidationFailed(), 422, "VALIDATION_FAILED"),
        (errors.InsufficientStock(), 422, "VALIDATION_FAILED"),
        (errors.InvalidCredentials(), 401, "INVALID_CREDENTIALS"),
        (errors.TokenExpired(), 401, "TOKEN_EXPIRED"),
        (errors.Unauthorized(), 401, "UNAUTHORIZED"),
        (errors.Forbidden(), 403, "FORBIDDEN"),
        (errors.NotFound(), 404, "NOT_FOUND"),
        (errors.Conflict(), 409, "CONFLICT"),
        (errors.InvalidState(), 409, "CONFLICT"),
        (errors.RateLimited(retry_after=3), 429, "RATE_LIMITED"),
        (errors.ServiceUnavailable(), 503, "SERVICE_UNAVAILABLE"),
        (errors.ArcanaError(), 500, "INTERNAL"),
    ],
)
def test_each_domain_error_maps_to_its_contract_status(
    exc: errors.ArcanaError, status: int, code: str
) -> None:
    assert status_for(exc) == status
    assert exc.code == code
