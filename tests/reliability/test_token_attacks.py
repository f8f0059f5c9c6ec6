"""Token attacks through HTTP, on both backends, beyond those of tests/e2e/test_auth_http.py
(alg none, wrong key, expired, wrong aud/iss/typ, HS512, refresh reuse, reset replay/expiry):
algorithm confusion (RS256/ES256, HMAC keyed with a public key or guessable strings, HS384),
case variants of ``none``, claim type confusion, payload tampering under a genuine
signature, truncated tokens, and a user deleted through ``users delete``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from arcana.adapters.tables import outbox
from arcana.bootstrap import App
from tests.auth_support import bearer, register_and_login, run_reset_requests

pytestmark = pytest.mark.reliability

ME = "/api/v1/auth/me"
ADMIN_ROUTE = "/api/v1/admin/jobs"
NEW_PASSWORD = "Another-Horse-7"

# A public RSA key of the kind an attacker would feed to a server that confuses RS256 and HS256.
PUBLIC_KEY_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
    "kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n"
    "0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\n"
    "cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\n"
    "mwIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            _b64(json.dumps(header).encode()),
            _b64(json.dumps(claims).encode()),
            _b64(signature),
        ]
    )


def _claims(container: App, user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    s = container.settings
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": ["admin", "user"],
        "gen": 0,
        "iat": now,
        "exp": now + 600,
        "iss": s.auth.jwt_issuer,
        "aud": s.auth.jwt_audience,
        "jti": os.urandom(8).hex(),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _hs(key: str, claims: dict[str, Any], alg: str = "HS256", typ: str | None = "at+jwt") -> str:
    """HMAC-signed by hand, so any key (even an unsafe one) and any header can be used."""
    header: dict[str, Any] = {"alg": alg, **({"typ": typ} if typ else {})}
    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), signing_input.encode(), _DIGESTS[alg]).digest()
    return signing_input + "." + _b64(sig)


async def _assert_rejected(client: httpx.AsyncClient, token: str) -> None:
    for path in (ME, ADMIN_ROUTE):
        resp = await client.get(path, headers=bearer(token))
        assert resp.status_code == 401, (path, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.json()["code"] == "UNAUTHORIZED"
        assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.fixture
async def victim(client: httpx.AsyncClient) -> dict[str, Any]:
    return await register_and_login(client)


async def test_genuine_token_is_accepted(client: httpx.AsyncClient, victim: dict[str, Any]) -> None:
    """The baseline the attacks are measured against."""
    resp = await client.get(ME, headers=bearer(victim["access_token"]))
    assert resp.status_code == 200
    assert (
        await client.get(ADMIN_ROUTE, headers=bearer(victim["access_token"]))
    ).status_code == 403


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any], alg: str
) -> None:
    claims = _claims(container, victim["id"])
    await _assert_rejected(client, _raw_token({"alg": alg, "typ": "at+jwt"}, claims))
    # Also with the genuine signature left in place.
    genuine_sig = victim["access_token"].rsplit(".", 1)[1]
    forged = _raw_token({"alg": alg, "typ": "at+jwt"}, claims).rsplit(".", 1)[0]
    await _assert_rejected(client, f"{forged}.{genuine_sig}")


async def test_rs256_token_is_refused(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any]
) -> None:
    """Only HS256 is accepted: a token claiming RS256/ES256/PS256 is refused before any key is
    looked at (the server holds no public key an attacker could pair with)."""
    claims = _claims(container, victim["id"])
    for alg in ("RS256", "ES256", "PS256", "EdDSA"):
        await _assert_rejected(
            client, _raw_token({"alg": alg, "typ": "at+jwt"}, claims, os.urandom(256))
        )


@pytest.mark.parametrize(
    "key",
    [PUBLIC_KEY_PEM, "", "arcana", "arcana-api", "secret", "null"],
    ids=["public-key-as-hmac", "empty", "issuer", "audience", "secret", "null"],
)
async def test_hmac_with_guessable_keys(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any], key: str
) -> None:
    await _assert_rejected(client, _hs(key, _claims(container, victim["id"])))


async def test_other_hmac_algorithms_with_the_right_key(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any]
) -> None:
    """The algorithm is pinned: even the real key under HS384/HS512 is refused."""
    claims = _claims(container, victim["id"], roles=["user"])
    for alg in ("HS384", "HS512"):
        await _assert_rejected(client, _hs(container.auth_area.jwt_key, claims, alg=alg))


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": ["someone-else"]},
        {"iss": None},
        {"aud": None},
        {"exp": None},
        {"jti": None},
        {"sub": None},
        {"sub": 12345},
        {"roles": "admin"},
        {"gen": "0"},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
async def test_wrong_claims_signed_with_the_real_key(
    client: httpx.AsyncClient,
    container: App,
    victim: dict[str, Any],
    overrides: dict[str, Any],
) -> None:
    claims = _claims(container, victim["id"], roles=["user"])
    for k, v in overrides.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    await _assert_rejected(client, _hs(container.auth_area.jwt_key, claims))


async def test_tampered_payload(client: httpx.AsyncClient, victim: dict[str, Any]) -> None:
    """Promote yourself to admin in the payload and keep the genuine signature."""
    header, payload, sig = victim["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["roles"] == ["user"]
    for change in ({"roles": ["admin", "user"]}, {"exp": claims["exp"] + 86400}, {"gen": 99}):
        forged = _b64(json.dumps({**claims, **change}).encode())
        await _assert_rejected(client, f"{header}.{forged}.{sig}")
    # A flipped bit in the signature, a truncated token, garbage.
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    for token in (
        f"{header}.{payload}.{flipped}",
        f"{header}.{payload}",
        f"{header}.{payload}.",
        "x" * 5000,
        "...",
        "Bearer",
    ):
        await _assert_rejected(client, token)


async def test_token_of_a_deleted_user(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any]
) -> None:
    """The token was used (its generation is cached) before the user is deleted: it still dies
    at once, and so do the user's refresh tokens."""
    assert (await client.get(ME, headers=bearer(victim["access_token"]))).status_code == 200
    await container.users.delete_user(victim["email"])
    await _assert_rejected(client, victim["access_token"])
    resp = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": victim["refresh_token"]}
    )
    assert resp.status_code == 401
    assert resp.json()["code"] == "TOKEN_EXPIRED"


async def _reset_token(container: App, email: str) -> str:
    await run_reset_requests(container)
    async with container.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox.c.data).where(outbox.c.event_type == "email.password_reset")
            )
        ).all()
    tokens = [
        r.data["payload"]["reset_token"]
        for r in rows
        if r.data.get("payload", {}).get("email") == email
    ]
    assert tokens, rows
    token: str = container.auth_area.sealer.unseal(tokens[-1])
    return token


async def test_a_newer_reset_token_voids_the_older(
    client: httpx.AsyncClient, container: App, victim: dict[str, Any]
) -> None:
    await client.post("/api/v1/auth/forgot-password", json={"email": victim["email"]})
    older = await _reset_token(container, victim["email"])
    await client.post("/api/v1/auth/forgot-password", json={"email": victim["email"]})
    newer = await _reset_token(container, victim["email"])
    assert newer != older
    resp = await client.post(
        "/api/v1/auth/reset-password", json={"token": older, "new_password": NEW_PASSWORD}
    )
    assert resp.status_code == 401
