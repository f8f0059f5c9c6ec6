"""HS256 access tokens (RFC 9068 ``typ: at+jwt``), verified per RFC 8725: the algorithm and
the ``typ`` header are pinned, ``exp``/``iss``/``aud`` are required and checked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import jwt

from arcana.domain.identity import IssuedToken, Principal
from arcana.domain.timestamps import utcnow
from arcana.errors import Unauthorized

ALGORITHM = "HS256"
TOKEN_TYPE = "at+jwt"


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


# PyJWT's header for these tokens: its keys sorted, compact separators.
_HEADER = _b64(
    json.dumps(
        {"alg": ALGORITHM, "typ": TOKEN_TYPE}, separators=(",", ":"), sort_keys=True
    ).encode()
)


class JwtAccessTokens:
    VERIFIED_MAX = 4096

    def __init__(
        self,
        key: str,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._mac = hmac.new(key.encode(), digestmod=hashlib.sha256)
        """Keyed once: ``copy()`` per token skips the key schedule."""
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._now = now
        self._verified: dict[str, tuple[Principal, float]] = {}
        """Tokens that passed ``verify`` (exact strings) -> principal and ``exp``: a client
        sends the same bearer on every request, and checking it again (base64, JSON, HMAC and
        the claim checks) is most of the CPU of a short authenticated request. Only the
        expiry can change its verdict, so a hit checks that alone; revocation is the
        generation check's business, which runs on every request either way."""

    def issue(
        self, user_id: str, roles: frozenset[str], generation: int, session_id: str | None = None
    ) -> IssuedToken:
        now = int(utcnow().timestamp())
        claims: dict[str, object] = {
            "sub": user_id,
            "roles": sorted(roles),
            "gen": generation,
            "iat": now,
            "exp": now + self._ttl,
            "iss": self._issuer,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
        }
        if session_id is not None:
            claims["sid"] = session_id
        return IssuedToken(token=self._sign(claims), expires_in=self._ttl)

    def _sign(self, claims: dict[str, object]) -> str:
        """What ``jwt.encode(claims, key, algorithm="HS256", headers={"typ": "at+jwt"})``
        returns, byte for byte (pinned by a test), written out because PyJWT re-checks and
        re-prepares the key on every call (it looks for PEM, SSH and DER forms of a public
        key in it), which cost more than the signature itself on every login and refresh.
        Verification stays PyJWT's."""
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = _HEADER + b"." + payload
        mac = self._mac.copy()
        mac.update(signing_input)
        return (signing_input + b"." + _b64(mac.digest())).decode()

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            principal, exp = known
            if exp > self._now():
                return principal
            del self._verified[token]
            raise Unauthorized("Access token expired")
        principal = self._verify(token)
        assert principal.expires_at is not None
        if len(self._verified) >= self.VERIFIED_MAX:
            # Oldest first out (dicts keep insertion order): enough for tokens in steady use.
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, principal.expires_at.timestamp())
        return principal

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != TOKEN_TYPE or header.get("alg") != ALGORITHM:
                raise Unauthorized("Invalid access token")
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Access token expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("Invalid access token") from None
        roles = claims.get("roles", [])
        gen = claims.get("gen", 0)
        if (
            not isinstance(roles, list)
            or not isinstance(gen, int)
            or not isinstance(claims["sub"], str)
        ):
            raise Unauthorized("Invalid access token")
        return Principal(
            user_id=claims["sub"],
            roles=frozenset(str(r) for r in roles),
            token_id=str(claims["jti"]),
            issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
            generation=gen,
            session_id=claims.get("sid"),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
