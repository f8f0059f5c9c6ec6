"""Behind nginx: the client address is the right-most X-Forwarded-For entry that a trusted
proxy did not add, so a client cannot pick its own address (and escape a per-address limit)
by sending the header itself. Reuses the cluster harness: a real ``arcana serve`` behind a
real nginx that appends to the header as ``deploy/nginx.conf`` does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth_support import PASSWORD
from tests.cluster.harness import Cluster, nginx_bin
from tests.process import free_port


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def behind_nginx(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if nginx_bin() is None:
        pytest.fail("nginx is required: apt-get install nginx-light")
    root = tmp_path_factory.mktemp("proxy")
    env = {
        "ARCANA_ENV": "test",
        "ARCANA_HTTP_SERVER": request.param,
        "ARCANA_JWT_SECRET": "proxy-secret-" + "k" * 40,
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{root}/arcana.db",
        "ARCANA_VAR_DIR": str(root / "var"),
        "ARCANA_PLUGINS_DIR": str(root / "plugins"),
        "ARCANA_LOG_LEVEL": "WARNING",
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_FORWARDED_ALLOW_IPS": "127.0.0.1",  # nginx's address
        "ARCANA_REGISTER_LIMIT_PER_IP": "2",
    }
    (root / "plugins").mkdir()
    cluster = Cluster(root=root, env=env, api_ports=[free_port()])
    try:
        cluster.start_api(0)
        cluster.start_nginx(forwarded_for="$proxy_add_x_forwarded_for")  # as deploy/nginx.conf
        yield cluster.lb_url
    finally:
        cluster.stop()


def _client(url: str, source: str) -> httpx.Client:
    """A client connecting from ``source`` (another loopback address than nginx's own)."""
    return httpx.Client(
        base_url=url, transport=httpx.HTTPTransport(local_address=source), timeout=10
    )


def test_deploy_nginx_appends_to_x_forwarded_for(project_root: Path) -> None:
    conf = (project_root / "deploy" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in conf


def test_spoofed_x_forwarded_for_through_nginx_does_not_change_the_client_address(
    behind_nginx: str,
) -> None:
    with _client(behind_nginx, "127.0.0.2") as client:
        codes = []
        for i in range(3):
            resp = client.post(
                "/api/v1/auth/register",
                json={"name": "N", "email": f"spoof{i}@example.com", "password": PASSWORD},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},  # a new address each time
            )
            codes.append(resp.status_code)
        assert codes == [201, 201, 429]  # all counted against 127.0.0.2
        tokens = client.post(
            "/api/v1/auth/login",
            json={"email": "spoof0@example.com", "password": PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.7"},
        ).json()
        sessions = client.get(
            "/api/v1/auth/sessions", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        ).json()
        assert [s["ip"] for s in sessions["data"]] == ["127.0.0.2"]
    with _client(behind_nginx, "127.0.0.3") as other:
        resp = other.post(
            "/api/v1/auth/register",
            json={"name": "N", "email": "other@example.com", "password": PASSWORD},
        )
        assert resp.status_code == 201  # another real address has its own budget
