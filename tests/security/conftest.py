"""Fixtures of the security suite: a client on the test's backend with settings changed, and
a private Redis a test may break."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.app_support import ClientFactory, make_client, private_redis

__all__ = ["AUTH", "ClientFactory", "hashes", "make_client", "private_redis"]

AUTH = "/api/v1/auth"


def hashes(op: str) -> float:
    """Argon2 operations started in this process so far (``arcana_password_hashes_total``)."""
    return REGISTRY.get_sample_value("arcana_password_hashes_total", {"op": op}) or 0.0
