from __future__ import annotations

from pathlib import Path

import pytest

from arcana.config import ConfigError, Settings


def make(**kw: object) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


def test_production_requires_a_jwt_secret() -> None:
    with pytest.raises(ConfigError, match="ARCANA_JWT_SECRET is required"):
        make(env="production")


def test_production_refuses_a_short_secret() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        make(env="production", jwt_secret="short")


def test_development_generates_a_secret_once_and_keeps_it(tmp_path: Path) -> None:
    first = make(var_dir=tmp_path).jwt_key()
    second = make(var_dir=tmp_path).jwt_key()
    assert first == second
    assert len(first) >= 32
    assert (tmp_path / "jwt_secret").read_text().strip() == first


def test_embedded_is_the_default() -> None:
    s = make()
    assert s.embedded
    assert s.database_url.startswith("sqlite+aiosqlite")
    assert s.effective_queue_backend == "database"
    assert make(redis_url="redis://x:6379/0").effective_queue_backend == "redis"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCANA_HTTP_PORT", "9123")
    monkeypatch.setenv("ARCANA_GRPC_PORT", "0")
    s = make()
    assert s.http_port == 9123
    assert s.grpc_port == 0
