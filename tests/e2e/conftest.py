"""Fixtures of the end-to-end suite beyond the project-wide ones."""

from __future__ import annotations

from tests.app_support import make_client, private_redis

__all__ = ["make_client", "private_redis"]
