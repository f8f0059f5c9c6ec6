"""A small Arcana cluster on this machine: N ``arcana serve`` + M ``arcana worker`` processes
on one PostgreSQL database and one Redis key prefix, behind nginx (Debian package, started
by the test with its own configuration and prefix directory)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.process import ArcanaProcess, arcana_bin, free_port

NGINX_CONF = """
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream arcana {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://arcana;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For {forwarded_for};
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def nginx_bin() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    apis: list[ArcanaProcess] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)
    workers: list[ArcanaProcess] = field(default_factory=list)
    nginx: subprocess.Popen[bytes] | None = None
    lb_port: int = 0

    def api_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.api_ports[i]}"

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.lb_port}"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [arcana_bin(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, "PATH": "/usr/bin:/bin"},
            cwd=self.root,
            timeout=60,
        )

    def start_api(self, i: int) -> None:
        port = self.api_ports[i]
        proc = ArcanaProcess(
            ["serve", "--port", str(port), "--grpc-port", "0"],
            env=self.env,
            cwd=self.root,
            log_name=f"api{i}.log",
        )
        proc.start()
        proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        if i < len(self.apis):
            self.apis[i] = proc
        else:
            self.apis.append(proc)

    def start_worker(self, i: int) -> None:
        proc = ArcanaProcess(
            ["worker", "--concurrency", "8"], env=self.env, cwd=self.root, log_name=f"worker{i}.log"
        )
        proc.start()
        if i < len(self.workers):
            self.workers[i] = proc
        else:
            self.workers.append(proc)

    def start_nginx(self, forwarded_for: str = "$remote_addr") -> None:
        """nginx in front of the API processes; ``forwarded_for`` is the value it sets as
        ``X-Forwarded-For`` (``$proxy_add_x_forwarded_for`` appends, as ``deploy/nginx.conf``)."""
        binary = nginx_bin()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        prefix = self.root / "nginx"
        prefix.mkdir(exist_ok=True)
        self.lb_port = free_port()
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in self.api_ports
        )
        conf = prefix / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                prefix=prefix, servers=servers, port=self.lb_port, forwarded_for=forwarded_for
            )
        )
        with (prefix / "stdout.log").open("ab") as log:
            self.nginx = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(conf)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.lb_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nginx did not come up: " + (prefix / "error.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(10)
        for p in [*self.workers, *self.apis]:
            p.stop()
