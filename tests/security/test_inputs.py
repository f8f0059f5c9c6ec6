"""Inputs that cannot surprise (issue 13, fourth part)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from redis.asyncio import Redis

from arcana.bootstrap import App
from tests.auth_support import PASSWORD, register_and_login, run_reset_requests
from tests.conftest import REDIS_URL, insert_principals
from tests.process import arcana_bin
from tests.products_support import BASE, admin_headers, create_product
from tests.security.conftest import AUTH


async def _register(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(
        f"{AUTH}/register", json={"name": "N", "email": email, "password": PASSWORD}
    )


@pytest.mark.parametrize(
    "email",
    [
        "a,b@example.com",
        "a;b@example.com",
        '"a b"@example.com',
        "Ann <ann@example.com>",
        "ann@example.com\r\nBcc: x@example.com",
        "ann@example..com",
        "ann@",
        "x" * 64 + "@" + ("d" * 60 + ".") * 4 + "com",  # over 254
    ],
)
async def test_email_validation_refuses_addresses_that_could_surprise(
    client: httpx.AsyncClient, email: str
) -> None:
    resp = await _register(client, email)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "VALIDATION_FAILED"


async def test_email_is_nfc_lowercased_and_limited_after_normalisation(
    client: httpx.AsyncClient,
) -> None:
    decomposed = "Zoe\u0301@Example.COM"  # e + combining acute
    resp = await _register(client, decomposed)
    assert resp.status_code == 201, resp.text
    assert resp.json()["email"] == "zo\u00e9@example.com"
    assert (await _register(client, "ZO\u00c9@example.com")).status_code == 409
    # 254 characters as typed, longer once lowercased (İ → i̇ is two code points).
    grows = "\u0130" * 60 + "@" + "d" * 60 + "." + "e" * 60 + "." + "f" * 60 + ".com"
    assert len(grows) <= 254 < len(grows.lower())
    assert (await _register(client, grows)).status_code == 422


def test_cli_users_create_follows_the_same_email_rules(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        "ARCANA_JWT_SECRET": "cli-secret-" + "x" * 40,
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_ENV": "test",
    }

    def create(email: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [arcana_bin(), "users", "create", "--email", email, "--name", "N", "--password-stdin"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )

    bad = create("a,b@example.com")
    assert bad.returncode == 1, bad.stderr
    assert "email" in bad.stderr
    good = create("Ann@Example.com")
    assert good.returncode == 0, good.stderr
    assert "<ann@example.com>" in good.stdout


async def test_forgot_password_takes_the_same_time_for_known_and_unknown(
    client: httpx.AsyncClient, container: App
) -> None:
    """The request only queues a job (one write for any email); the look-up, the token and
    the mail happen in that job. Before, a known email cost three more writes and the
    look-up decided the work."""
    u = await register_and_login(client)

    async def timed(email: str) -> float:
        t0 = time.perf_counter()
        resp = await client.post(f"{AUTH}/forgot-password", json={"email": email})
        elapsed = time.perf_counter() - t0
        assert resp.status_code == 202
        await run_reset_requests(container)  # the worker's part, outside the measurement
        return elapsed

    for _ in range(3):
        await timed(u["email"])
        await timed("nobody@example.com")
    known, unknown = [], []
    for i in range(25):  # interleaved, so load changes on the machine hit both alike
        known.append(await timed(u["email"]))
        unknown.append(await timed(f"nobody{i}@example.com"))
    a, b = statistics.median(known), statistics.median(unknown)
    assert a < b * 1.5 + 0.001, (a, b)


async def test_csv_export_neutralises_formula_cells(
    client: httpx.AsyncClient, container: App
) -> None:
    await insert_principals(container)
    names = ["=HYPERLINK(1)", "+1+1", "-2", "@SUM(A1)", "\tTab", "\rCR", "Plain"]
    for name in names:
        await create_product(client, container, name=name, description="=cmd|' /C calc'!A0")
    r = await client.get(f"{BASE}/export", headers=admin_headers(container))
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.text, newline="")))
    got = {row[1] for row in rows[1:]}
    assert got == {"'" + n for n in names[:-1]} | {"Plain"}
    assert {row[2] for row in rows[1:]} == {"'=cmd|' /C calc'!A0"}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_missing_product_lookups_write_no_redis_key(
    client: httpx.AsyncClient, container: App
) -> None:
    redis = Redis.from_url(REDIS_URL)
    prefix = container.settings.redis.prefix
    try:

        async def keys() -> int:
            return len([k async for k in redis.scan_iter(match=f"{prefix}:cache:*", count=1000)])

        before = await keys()
        codes = await asyncio.gather(*(client.get(f"{BASE}/{uuid.uuid4()}") for _ in range(50)))
        assert {r.status_code for r in codes} == {404}
        assert await keys() == before
    finally:
        await redis.aclose()


def test_compose_bounds_redis_memory_and_trusts_only_nginx(project_root: Path) -> None:
    compose = yaml.safe_load((project_root / "docker-compose.yml").read_text())
    command = [str(c) for c in compose["services"]["redis"]["command"]]
    assert "--maxmemory" in command
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    nginx_ip = compose["services"]["nginx"]["networks"]["default"]["ipv4_address"]
    assert compose["x-arcana"]["environment"]["ARCANA_FORWARDED_ALLOW_IPS"] == nginx_ip
    assert os.path.exists(project_root / "deploy" / "nginx.conf")
