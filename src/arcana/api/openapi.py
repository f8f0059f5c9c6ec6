"""The OpenAPI document as the API really answers: every error is RFC 9457 problem+json.

FastAPI documents a ``422 HTTPValidationError`` body that the service never sends (validation
errors are rendered as problems by ``api/errors.py``) and documents no other error at all. This
post-processor, installed once by the app factory, rewrites the generated document:

- a ``Problem`` schema (``type``, ``title``, ``status``, ``detail``, ``code``, optional
  ``errors``) under ``components.schemas``;
- every documented 4xx/5xx response of every operation carries ``application/problem+json``
  with that schema, and every operation declares ``4XX`` and ``5XX`` as problems;
- FastAPI's ``HTTPValidationError`` / ``ValidationError`` schemas are dropped;
- responses that carry no body (204, 202) declare no content.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from arcana.api.problems import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `code` is the stable machine-readable error code.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "URI reference naming the problem type"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {
            "type": "string",
            "examples": [
                "VALIDATION_FAILED",
                "INVALID_CREDENTIALS",
                "TOKEN_EXPIRED",
                "UNAUTHORIZED",
                "FORBIDDEN",
                "NOT_FOUND",
                "CONFLICT",
                "RATE_LIMITED",
                "SERVICE_UNAVAILABLE",
                "INTERNAL",
            ],
        },
        "errors": {
            "type": "array",
            "description": "Per-field validation errors (422 only)",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_DROPPED_SCHEMAS = ("HTTPValidationError", "ValidationError")
_GENERIC = {"4XX": "Client error (problem details)", "5XX": "Server error (problem details)"}
_BODYLESS = {"202", "204"}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}}}


def _is_error(code: str) -> bool:
    return code[:1] in {"4", "5"}


def rewrite(document: dict[str, Any]) -> dict[str, Any]:
    """Apply the rules above to a generated OpenAPI document (in place; also returned)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _DROPPED_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses: dict[str, Any] = operation["responses"]
            for code, response in list(responses.items()):
                if _is_error(code):
                    description = response.get("description") or "Error"
                    if description == "Validation Error":
                        description = "Validation failed (problem details)"
                    responses[code] = _problem_response(description)
                elif code in _BODYLESS and _has_empty_json(response):
                    response.pop("content", None)
            for code, description in _GENERIC.items():
                responses.setdefault(code, _problem_response(description))
    return document


def _has_empty_json(response: dict[str, Any]) -> bool:
    content = response.get("content")
    if not content:
        return False
    return set(content) == {"application/json"} and not content["application/json"].get("schema")


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with a cached generator that applies ``rewrite``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = rewrite(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
