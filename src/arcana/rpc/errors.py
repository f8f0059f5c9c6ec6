"""``ArcanaError`` → gRPC status (contract §2 table), looked up by MRO like the HTTP side."""

from __future__ import annotations

import grpc

from arcana import errors

GRPC_STATUS: dict[type[errors.ArcanaError], grpc.StatusCode] = {
    errors.ArcanaError: grpc.StatusCode.INTERNAL,
    errors.ValidationFailed: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InsufficientStock: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InvalidCredentials: grpc.StatusCode.UNAUTHENTICATED,
    errors.TokenExpired: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.ALREADY_EXISTS,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ServiceUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: errors.ArcanaError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in GRPC_STATUS:
            return GRPC_STATUS[cls]
    return grpc.StatusCode.INTERNAL


def message_for(exc: errors.ArcanaError) -> str:
    """``CODE: detail`` — the contract code keeps clients able to tell 401 kinds apart."""
    return f"{exc.code}: {exc.detail}"
