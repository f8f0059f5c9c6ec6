"""``arcana serve`` behaves the same on either HTTP server (``ARCANA_HTTP_SERVER``): the
background runtime and gRPC in the same process, a graceful drain on SIGTERM and SIGINT
(requests in flight finish, exit 0), client addresses from trusted proxies only, a port in use
refused, and malformed requests answered 4xx, never 5xx. Real processes, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.process import ArcanaProcess, arcana_bin, free_port

pytestmark = pytest.mark.slow

SERVERS = ["uvicorn", "granian"]
PASSWORD = "Servers-Pass-42"


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def _env(root: Path, server: str, http_port: int, grpc_port: int) -> dict[str, str]:
    return {
        "ARCANA_HTTP_SERVER": server,
        "ARCANA_HTTP_PORT": str(http_port),
        "ARCANA_GRPC_PORT": str(grpc_port),
        "ARCANA_DATABASE_URL": f"sqlite+aiosqlite:///{root}/arcana.db",
        "ARCANA_VAR_DIR": str(root / "var"),
        "ARCANA_PLUGINS_DIR": str(root / "plugins"),
        "ARCANA_JWT_SECRET": "servers-secret-" + "s" * 40,
        "ARCANA_ARGON2_MEMORY_KIB": "1024",
        "ARCANA_ARGON2_TIME_COST": "1",
        "ARCANA_FORWARDED_ALLOW_IPS": "127.0.0.1",
        "ARCANA_LOG_JSON": "true",
    }


@dataclass
class Served:
    server: str
    proc: ArcanaProcess
    root: Path
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _start(root: Path, server: str) -> Served:
    (root / "plugins").mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = free_port(), free_port()
    proc = ArcanaProcess(["serve"], env=_env(root, server, http_port, grpc_port), cwd=root)
    proc.env.pop("ARCANA_REDIS_URL", None)  # embedded: the job worker runs in this process
    proc.start()
    proc.wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=90)
    return Served(server, proc, root, http_port, grpc_port)


@pytest.fixture(scope="module", params=SERVERS)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    s = _start(tmp_path_factory.mktemp(f"serve-{request.param}"), request.param)
    try:
        yield s
    finally:
        assert s.proc.stop() == 0, s.proc.log()


def _raw(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection and read until the server closes it or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    s.settimeout(0.5)  # the rest of a short body, if any
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def test_the_named_server_runs_with_grpc_and_the_background_runtime_in_one_process(
    served: Served,
) -> None:
    assert f'"server": "{served.server}"' in served.proc.log()
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="arcana.product.v1.ProductService"), timeout=10
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # Registration → outbox relay → event handler → job worker → mail: every loop of the
    # embedded runtime, in the serving process.
    email = f"bg-{served.server}@example.com"
    r = httpx.post(
        f"{served.url}/api/v1/auth/register",
        json={"name": "Bg", "email": email, "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    mail = served.root / "var" / "mail"
    wait_until(
        lambda: mail.exists() and any(email in p.read_text() for p in mail.glob("*.eml")), 30
    )


def test_x_forwarded_for_is_believed_from_trusted_proxies_only(served: Served) -> None:
    email = f"xff-{served.server}@example.com"
    r = httpx.post(
        f"{served.url}/api/v1/auth/register",
        json={"name": "X", "email": email, "password": PASSWORD},
        timeout=10,
    )
    assert r.status_code == 201, r.text

    def login_ip(source: str, forwarded_for: str) -> str:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(base_url=served.url, transport=transport, timeout=10) as c:
            tokens = c.post(
                "/api/v1/auth/login",
                json={"email": email, "password": PASSWORD},
                headers={"X-Forwarded-For": forwarded_for},
            ).json()
            sessions = c.get(
                "/api/v1/auth/sessions",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
            ).json()["data"]
        return str(next(s["ip"] for s in sessions if s["current"]))

    # 127.0.0.1 is the trusted proxy: the right-most entry it did not add is the client.
    assert login_ip("127.0.0.1", "198.51.100.1, 203.0.113.9") == "203.0.113.9"
    # Any other peer writes the header itself: ignored.
    assert login_ip("127.0.0.2", "203.0.113.9") == "127.0.0.2"


BAD_REQUESTS = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "bad content-length": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: abc\r\n\r\n",
    "two content-lengths": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad chunk size": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "not JSON": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope",
    "bad UTF-8 in path": b"GET /api/v1/products/\xff\xfe HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\n\r\n",
    "body over the limit": b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n{",
    "HTTP/1.1 without Host": b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_a_malformed_request_gets_a_4xx_or_a_closed_connection_never_a_5xx(
    served: Served, name: str
) -> None:
    answer = _raw(served.http_port, BAD_REQUESTS[name])
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
        status = int(status_line.split()[1])
        assert status < 500, answer[:500]
        assert status >= 400 or name == "HTTP/1.1 without Host", answer[:500]
    assert b"Traceback" not in answer
    assert httpx.get(f"{served.url}/healthz", timeout=10).status_code == 200  # still serving


def test_a_port_in_use_fails_the_start(served: Served) -> None:
    other = served.root / "second"
    other.mkdir(exist_ok=True)
    env = _env(other, served.server, served.http_port, 0)
    result = subprocess.run(
        [arcana_bin(), "serve"],
        env={k: v for k, v in {**os.environ, **env}.items() if k != "ARCANA_REDIS_URL"},
        cwd=other,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode != 0, result.stdout + result.stderr  # uvicorn: 3, granian: 1
    assert "in use" in (result.stdout + result.stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_stop_signal_lets_the_request_in_flight_finish_and_exits_0(
    tmp_path: Path, server: str, sig: signal.Signals
) -> None:
    s = _start(tmp_path, server)
    try:
        body = b'{"name": "Late", "email": "late@example.com", "password": "' + PASSWORD.encode()
        body += b'"}'
        head = (
            b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", s.http_port), timeout=30) as conn:
            conn.sendall(head)
            # "100 Continue": the app is running this request and waits for its body.
            assert conn.recv(4096).startswith(b"HTTP/1.1 100 Continue"), s.proc.log()
            s.proc.signal(sig)

            def refusing() -> bool:
                try:
                    socket.create_connection(("127.0.0.1", s.http_port), timeout=1).close()
                except OSError:
                    return True
                return False

            # The listener is closed: the server is draining, with our request in flight.
            wait_until(refusing, 30)
            conn.sendall(body)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:500]
        assert b"late@example.com" in answer
        assert s.proc.proc is not None
        assert s.proc.proc.wait(60) == 0, s.proc.log()
    finally:
        s.proc.kill()


@pytest.mark.parametrize("server", SERVERS)
def test_a_request_that_never_ends_holds_the_stop_no_longer_than_the_shutdown_timeout(
    tmp_path: Path, server: str
) -> None:
    root = tmp_path / "run"
    (root / "plugins").mkdir(parents=True)
    http_port = free_port()
    env = {**_env(root, server, http_port, 0), "ARCANA_SHUTDOWN_TIMEOUT": "1"}
    proc = ArcanaProcess(["serve"], env=env, cwd=root)
    proc.env.pop("ARCANA_REDIS_URL", None)
    proc.start()
    try:
        proc.wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=90)
        head = (
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 100\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", http_port), timeout=30) as conn:
            conn.sendall(head)
            assert conn.recv(4096).startswith(b"HTTP/1.1 100 Continue"), proc.log()
            proc.signal(signal.SIGTERM)  # the body never comes
            assert proc.proc is not None
            assert proc.proc.wait(60) == 0, proc.log()
    finally:
        proc.kill()


@pytest.mark.parametrize("server", SERVERS)
def test_an_open_event_stream_ends_on_sigterm_and_the_process_exits_0(
    tmp_path: Path, server: str
) -> None:
    root = tmp_path / "run"
    (root / "plugins").mkdir(parents=True)
    http_port = free_port()
    # A long grace period: only the drain, not the timeout, can end the stream in time.
    env = {**_env(root, server, http_port, 0), "ARCANA_SHUTDOWN_TIMEOUT": "120"}
    base_env = {k: v for k, v in {**os.environ, **env}.items() if k != "ARCANA_REDIS_URL"}
    created = subprocess.run(
        [
            arcana_bin(),
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "Ops",
            "--admin",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        env=base_env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    proc = ArcanaProcess(["serve"], env=env, cwd=root)
    proc.env.pop("ARCANA_REDIS_URL", None)
    proc.start()
    try:
        proc.wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=90)
        url = f"http://127.0.0.1:{http_port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            token = http.post(
                "/api/v1/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
            ).json()["access_token"]
            with http.stream(
                "GET", "/api/v1/events/stream", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                lines = resp.iter_lines()
                assert next(lines) == ": connected"
                proc.signal(signal.SIGTERM)
                rest = list(lines)  # ends: the server closed the stream
        assert all(not line.startswith("data:") for line in rest)
        assert proc.proc is not None
        assert proc.proc.wait(60) == 0, proc.log()
    finally:
        proc.kill()
