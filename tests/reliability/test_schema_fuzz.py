"""Schemathesis against the OpenAPI document of a real ``arcana serve`` (embedded mode).

Every operation, positive and negative data, with an admin bearer token; bounded examples so the
run stays within about a minute. Checks: no 5xx, status codes and content types as documented,
bodies match their schema, and every error is problem+json.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from arcana.api.app import create_app
from tests.auth_support import PASSWORD
from tests.conftest import base_settings
from tests.reliability.support import EmbeddedServer

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.timeout(600)]

MAX_EXAMPLES = 25

# Operations that end the caller's own sessions, or never end (server-sent events): run with a
# throw-away user's token (below) or not at all.
SELF_REVOKING = {
    ("POST", "/api/v1/auth/logout-all"),
    ("POST", "/api/v1/auth/change-password"),
    ("DELETE", "/api/v1/auth/sessions/{session_id}"),
}
STREAMING = {("GET", "/api/v1/events/stream")}


def problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is RFC 9457 problem+json with the five members the contract names."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    assert content_type.startswith("application/problem+json"), (
        f"{response.status_code} with content type {content_type!r}"
    )
    body = response.json()
    missing = [k for k in ("type", "title", "status", "detail", "code") if k not in body]
    assert not missing, f"problem without {missing}: {body}"
    assert body["status"] == response.status_code
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    problem_json,
]


@pytest.fixture(scope="session")
def server(embedded_server: EmbeddedServer) -> EmbeddedServer:
    return embedded_server


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "deterministic": True,
            },
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    )


def _document() -> dict[str, Any]:
    """The document ``arcana serve`` publishes, built at collection time (the server is only
    started by a fixture); ``test_served_document_is_the_fuzzed_one`` proves they are equal."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings=base_settings(var_dir=Path(tmp)))
        return app.openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=_config())
token_holding = schema.exclude(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in SELF_REVOKING | STREAMING
)
self_revoking = schema.include(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in SELF_REVOKING
)


def test_served_document_is_the_fuzzed_one(server: EmbeddedServer) -> None:
    served = httpx.get(f"{server.base_url}/openapi.json").json()
    assert served == DOCUMENT


@token_holding.parametrize()
def test_operations_with_admin_token(case: Any, server: EmbeddedServer) -> None:
    case.call_and_validate(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        checks=CHECKS,
    )


def _throwaway_token(base_url: str) -> str:
    email = f"fuzz-{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(base_url=base_url, timeout=10) as c:
        reg = c.post(
            "/api/v1/auth/register", json={"name": "Fuzz", "email": email, "password": PASSWORD}
        )
        assert reg.status_code == 201, reg.text
        resp = c.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        token: str = resp.json()["access_token"]
        return token


@self_revoking.parametrize()
def test_self_revoking_operations(case: Any, server: EmbeddedServer) -> None:
    token = _throwaway_token(server.base_url)
    case.call_and_validate(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )


def test_openapi_documents_problem_details(server: EmbeddedServer) -> None:
    doc = httpx.get(f"{server.base_url}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail", "code"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        code,
                    )
            assert {"4XX", "5XX"} <= set(op["responses"]), (method, path)
