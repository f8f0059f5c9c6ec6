"""The Redis Cluster suite: tests here run on PostgreSQL + the private local Redis Cluster
(``redis_cluster`` in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def backend() -> str:
    return "cluster"
