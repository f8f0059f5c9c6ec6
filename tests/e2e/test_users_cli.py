"""``arcana users …`` as a real subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.process import arcana_bin

pytestmark = pytest.mark.slow


def _run(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [arcana_bin(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        timeout=60,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    # SQLite only: each invocation pays the interpreter start-up, and the commands run the
    # same service code on PostgreSQL (covered by the HTTP tests on both backends).
    return {
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_LOG_JSON": "false",
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
    }


def test_users_create_grant_revoke_list(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = _run(
        [
            "users",
            "create",
            "--email",
            "Root@Example.com",
            "--name",
            "Root",
            "--admin",
            "--password-stdin",
        ],
        cli_env,
        tmp_path,
        stdin="Sup3r-Secret-Pass\n",
    )
    assert out.returncode == 0, out.stderr
    assert "root@example.com" in out.stdout
    assert "admin" in out.stdout

    out = _run(
        ["users", "create", "--email", "root@example.com", "--name", "Again", "--password-stdin"],
        cli_env,
        tmp_path,
        stdin="Sup3r-Secret-Pass\n",
    )
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    assert "already exists" in out.stderr

    out = _run(["users", "revoke-role", "ROOT@example.com", "admin"], cli_env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "admin" not in out.stdout
    out = _run(["users", "grant-role", "root@example.com", "admin"], cli_env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "roles=admin,user" in out.stdout

    out = _run(["users", "grant-role", "root@example.com", "wizard"], cli_env, tmp_path)
    assert out.returncode == 1
    assert "unknown role" in out.stderr
    out = _run(["users", "grant-role", "nobody@example.com", "admin"], cli_env, tmp_path)
    assert out.returncode == 1
    assert "unknown user" in out.stderr

    out = _run(["users", "list"], cli_env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "root@example.com" in out.stdout

    out = _run(["users", "create", "--name", "No email"], cli_env, tmp_path)
    assert out.returncode == 2
