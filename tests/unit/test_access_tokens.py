from __future__ import annotations

import jwt
import pytest

from arcana.adapters.jwt_tokens import JwtAccessTokens
from arcana.errors import Unauthorized

KEY = "k" * 48


def codec(**kw: object) -> JwtAccessTokens:
    args: dict[str, object] = {
        "key": KEY,
        "issuer": "arcana",
        "audience": "arcana-api",
        "ttl_seconds": 900,
    }
    args.update(kw)
    return JwtAccessTokens(**args)  # type: ignore[arg-type]


def test_round_trip() -> None:
    issued = codec().issue("u1", frozenset({"user", "admin"}), generation=3, session_id="s1")
    p = codec().verify(issued.token)
    assert (p.user_id, p.roles, p.generation, p.session_id) == (
        "u1",
        frozenset({"user", "admin"}),
        3,
        "s1",
    )
    assert jwt.get_unverified_header(issued.token)["typ"] == "at+jwt"


@pytest.mark.parametrize(
    "forge",
    [
        lambda: jwt.encode({"sub": "u1"}, None, algorithm="none"),
        lambda: codec(key="x" * 48).issue("u1", frozenset(), 0).token,
        lambda: codec(ttl_seconds=-10).issue("u1", frozenset(), 0).token,
        lambda: codec(audience="other").issue("u1", frozenset(), 0).token,
        lambda: codec(issuer="other").issue("u1", frozenset(), 0).token,
        lambda: jwt.encode({"sub": "u1", "exp": 2**40}, KEY, algorithm="HS256"),
        lambda: "not-a-jwt",
    ],
    ids=[
        "alg-none",
        "wrong-key",
        "expired",
        "wrong-aud",
        "wrong-iss",
        "no-typ-no-claims",
        "garbage",
    ],
)
def test_forged_tokens_are_rejected(forge: object) -> None:
    with pytest.raises(Unauthorized):
        codec().verify(forge())  # type: ignore[operator]
