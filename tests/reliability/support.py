"""Helpers of the reliability suite: real ``arcana`` processes in a fresh directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.auth_support import PASSWORD
from tests.process import ArcanaProcess, arcana_bin, free_port

TEST_SECRET = "reliability-secret-" + "x" * 40

# Cheap Argon2 and no gRPC: the suite measures behaviour, not hashing cost.
BASE_ENV: dict[str, str] = {
    "ARCANA_ENV": "test",
    "ARCANA_JWT_SECRET": TEST_SECRET,
    "ARCANA_ARGON2_MEMORY_KIB": "1024",
    "ARCANA_ARGON2_TIME_COST": "1",
    "ARCANA_GRPC_PORT": "0",
    "ARCANA_LOG_JSON": "false",
}

_INHERITED_ARCANA = [k for k in os.environ if k.startswith("ARCANA_")]


def arcana_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """Environment for an ``arcana`` process rooted at ``tmp`` (var dir, plugins dir)."""
    (tmp / "plugins").mkdir(parents=True, exist_ok=True)
    env = {
        **BASE_ENV,
        "ARCANA_VAR_DIR": str(tmp / "var"),
        "ARCANA_PLUGINS_DIR": str(tmp / "plugins"),
    }
    env.update(overrides)
    return env


def process(args: list[str], env: dict[str, str], cwd: Path, log_name: str) -> ArcanaProcess:
    proc = ArcanaProcess(args, env=env, cwd=cwd, log_name=log_name)
    for key in _INHERITED_ARCANA:
        if key not in env:
            proc.env.pop(key, None)
    if "ARCANA_REDIS_URL" not in env:
        proc.env.pop("ARCANA_REDIS_URL", None)
    return proc


def run_cli(args: list[str], env: dict[str, str], cwd: Path, stdin: str = "") -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ARCANA_")}
    full_env.update(env)
    out = subprocess.run(
        [arcana_bin(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=60,
    )
    assert out.returncode == 0, f"arcana {' '.join(args)}: {out.stderr}"
    return out.stdout


def create_admin(env: dict[str, str], cwd: Path, email: str = "admin@example.com") -> str:
    run_cli(
        ["users", "create", "--email", email, "--name", "Admin", "--admin", "--password-stdin"],
        env,
        cwd,
        stdin=PASSWORD + "\n",
    )
    return email


def login(base_url: str, email: str, password: str = PASSWORD) -> dict[str, Any]:
    resp = httpx.post(
        f"{base_url}/api/v1/auth/login", json={"email": email, "password": password}, timeout=10
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def is_problem(resp: httpx.Response, status: int | None = None) -> bool:
    if status is not None and resp.status_code != status:
        return False
    if not resp.headers.get("content-type", "").startswith("application/problem+json"):
        return False
    body = resp.json()
    return (
        all(k in body for k in ("type", "title", "status", "detail", "code"))
        and body["status"] == resp.status_code
    )


class EmbeddedServer:
    """``arcana serve`` in embedded mode (SQLite under ``tmp/var``), with an admin logged in."""

    def __init__(self, tmp: Path, **env_overrides: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.env = arcana_env(tmp, ARCANA_HTTP_PORT=str(self.port), **env_overrides)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc = process(["serve"], self.env, tmp, "serve.log")
        self.admin_token = ""

    def start(self) -> EmbeddedServer:
        # ``users create`` migrates the embedded database on its way.
        email = create_admin(self.env, self.tmp)
        self.proc.start()
        self.proc.wait_http(f"{self.base_url}/healthz", timeout=60)
        self.admin_token = login(self.base_url, email)["access_token"]
        return self

    def stop(self) -> int | None:
        return self.proc.stop()
