"""``arcana serve --workers N``: N processes share the HTTP port, stop together on SIGTERM, and
embedded mode (whose cache and events live in one process) refuses more than one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.process import ArcanaProcess, arcana_bin, free_port

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/arcana.db",
        "ARCANA_JWT_SECRET": "workers-secret-" + "w" * 40,
        "ARCANA_GRPC_PORT": "0",
        "ARCANA_VAR_DIR": str(tmp_path / "var"),
        **extra,
    }


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (IPv4), from /proc/net/tcp."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_embedded_mode_refuses_several_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARCANA_REDIS_URL"}
    result = subprocess.run(
        [arcana_bin(), "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env, **_env(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 1
    assert "--workers needs ARCANA_REDIS_URL" in result.stderr


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_two_workers_share_the_port_and_stop_together(tmp_path: Path, server: str) -> None:
    port = free_port()
    env = _env(
        tmp_path,
        ARCANA_HTTP_SERVER=server,
        ARCANA_REDIS_URL=REDIS_URL,
        ARCANA_REDIS_PREFIX=f"arcana-workers-{uuid.uuid4().hex[:8]}",
        ARCANA_HTTP_PORT=str(port),
    )
    migrated = subprocess.run(
        [arcana_bin(), "migrate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    proc = ArcanaProcess(["serve", "--workers", "2"], env, tmp_path).start()
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90)
        assert proc.proc is not None
        children = _children(proc.proc.pid)
        assert len(children) == 2

        # Each child listens on the port with its own socket (SO_REUSEPORT).
        def both_listen() -> bool:
            listening = _listening_inodes(port)
            owned = [_socket_inodes(child) & listening for child in children]
            return len(listening) == 2 and all(len(o) == 1 for o in owned)

        assert wait_until(both_listen, 60)
        with httpx.Client() as client:
            codes = {client.get(f"http://127.0.0.1:{port}/healthz").status_code for _ in range(20)}
        assert codes == {200}
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(60) == 0
        for child in children:
            assert (
                not Path(f"/proc/{child}").exists()
                or "Z" in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]
            )
    finally:
        proc.kill()
