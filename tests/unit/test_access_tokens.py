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


@pytest.mark.parametrize("session_id", ["s1", None])
@pytest.mark.parametrize("key", [KEY, "ключ-é-" + "k" * 48])
def test_issued_tokens_are_what_pyjwt_encodes(key: str, session_id: str | None) -> None:
    """Tokens are signed by hand (see ``JwtAccessTokens._sign``): byte for byte PyJWT's."""
    issued = codec(key=key).issue("u1", frozenset({"user", "admin"}), 7, session_id=session_id)
    claims = jwt.decode(
        issued.token, key, algorithms=["HS256"], audience="arcana-api", issuer="arcana"
    )
    assert issued.token == jwt.encode(claims, key, algorithm="HS256", headers={"typ": "at+jwt"})


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


def test_a_token_verified_before_is_answered_from_memory_until_it_expires() -> None:
    clock = [1_000.0]
    tokens = codec(ttl_seconds=60, now=lambda: clock[0])
    issued = tokens.issue("u1", frozenset({"user"}), generation=1)
    exp = tokens.verify(issued.token).expires_at
    assert exp is not None
    clock[0] = exp.timestamp() - 1
    assert tokens.verify(issued.token).user_id == "u1"  # a hit: no signature check needed
    clock[0] = exp.timestamp()  # PyJWT's rule: expired once exp <= now
    with pytest.raises(Unauthorized, match="expired"):
        tokens.verify(issued.token)


def test_only_the_exact_token_is_remembered() -> None:
    tokens = codec()
    issued = tokens.issue("u1", frozenset({"user"}), generation=1)
    tokens.verify(issued.token)
    head, payload, signature = issued.token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthorized):
        tokens.verify(tampered)


def test_the_memory_of_verified_tokens_is_bounded() -> None:
    tokens = codec()
    tokens.VERIFIED_MAX = 3  # type: ignore[misc]
    for i in range(10):
        tokens.verify(tokens.issue(f"u{i}", frozenset(), generation=0).token)
    assert len(tokens._verified) == 3
