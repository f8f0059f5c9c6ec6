"""Fixtures of the observability tests."""

from __future__ import annotations

from tests.observability.tracing_support import spans

__all__ = ["spans"]
