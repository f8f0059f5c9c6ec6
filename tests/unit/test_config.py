from __future__ import annotations

import logging
import re
import typing
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from arcana.config import ConfigError, Settings, reveal

README = Path(__file__).resolve().parents[2] / "README.md"


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
    assert s.database.url.get_secret_value().startswith("sqlite+aiosqlite")
    assert s.effective_queue_backend == "database"
    assert make(redis_url="redis://x:6379/0").effective_queue_backend == "redis"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCANA_HTTP_PORT", "9123")
    monkeypatch.setenv("ARCANA_GRPC_PORT", "0")
    s = make()
    assert s.http.port == 9123
    assert s.grpc.port == 0


# -- variable names ---------------------------------------------------------------------------
def documented_variables() -> set[str]:
    """Every ``ARCANA_*`` named in the first cell of a row of the README's tables."""
    names: set[str] = set()
    for line in README.read_text().splitlines():
        if line.startswith("| `ARCANA_"):
            names.update(re.findall(r"`(ARCANA_[A-Z0-9_]+)`", line.split("|")[1]))
    return names


def read(settings: Settings, path: tuple[str, ...]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


def other_value(default: Any, annotation: Any) -> str:
    """A valid value, as an environment string, that differs from the default."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return next(a for a in args if a not in (default, "production"))
    if annotation is bool or bool in args:
        return "false" if default is True else "true"
    if annotation is int:
        return str(default + 1)
    if annotation is float:
        return str(default + 0.5)
    if annotation is Path:
        return "/srv/elsewhere"
    if SecretStr in args or annotation is SecretStr:
        return "scheme://user:p4ss@host:1/x"
    return "some-other-value"


def test_every_documented_variable_is_a_setting() -> None:
    documented = documented_variables()
    assert len(documented) > 50
    assert documented == set(Settings.variables())


@pytest.mark.parametrize("name", sorted(Settings.variables()))
def test_each_variable_reaches_its_grouped_setting(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Settings.variables()[name]
    default = read(make(), path)
    owner: Any = Settings if len(path) == 1 else Settings.model_fields[path[0]].annotation
    annotation = owner.model_fields[path[-1]].annotation
    raw = other_value(default, annotation)
    monkeypatch.setenv(name, raw)
    value = read(make(), path)
    expected = TypeAdapter(annotation).validate_strings(raw)
    assert value != default
    if isinstance(value, SecretStr):
        assert reveal(value) == reveal(expected)
    else:
        assert value == expected


def test_flat_keywords_env_file_and_replace_agree(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ARCANA_DB_POOL_SIZE=3\nARCANA_SMTP_URL=smtp://u:pw@mail:25\n")
    s = Settings(_env_file=env_file, job_lease_seconds=2)  # type: ignore[call-arg]
    assert s.database.pool_size == 3
    assert s.mail.smtp_url is not None
    assert s.mail.smtp_url.get_secret_value() == "smtp://u:pw@mail:25"
    assert s.jobs.lease_seconds == 2
    changed = s.replace(job_lease_seconds=5, http_port=1)
    assert (changed.jobs.lease_seconds, changed.http.port, changed.database.pool_size) == (5, 1, 3)
    assert s.jobs.lease_seconds == 2
    with pytest.raises(ValidationError, match="pool_size"):
        s.replace(db_pool_size=0)


# -- secrets -----------------------------------------------------------------------------------
SECRETS = {
    "database_url": "postgresql+asyncpg://app:db-hunter2@db/arcana",
    "database_direct_url": "postgresql+asyncpg://app:direct-hunter2@db/arcana",
    "redis_url": "redis://:redis-hunter2@cache:6379/0",
    "jwt_secret": "jwt-hunter2-" + "x" * 40,
    "smtp_url": "smtp://mailer:smtp-hunter2@mail:587",
    "user_sync_url": "https://sync:sync-hunter2@crm/users",
    "otel_endpoint": "https://otel:otel-hunter2@collector:4318",
}


def test_secrets_never_print(caplog: pytest.LogCaptureFixture) -> None:
    s = make(**SECRETS)
    logging.getLogger("test").warning("settings %s %r", s, s)
    shown = [repr(s), str(s), s.model_dump_json(), caplog.text, repr(s.flat())]
    for text in shown:
        assert "hunter2" not in text
        assert "**********" in text
    # They are still there for the adapters that connect with them.
    assert s.redis.url is not None
    assert s.redis.url.get_secret_value() == SECRETS["redis_url"]
