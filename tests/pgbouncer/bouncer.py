"""A private PgBouncer (Debian's ``/usr/sbin/pgbouncer``) in transaction mode on a free
loopback port, in front of the test PostgreSQL."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.process import free_port

PGBOUNCER = "/usr/sbin/pgbouncer"


class PgBouncer:
    def __init__(self, pg_host: str = "127.0.0.1", pg_port: int = 5432) -> None:
        self.pg_host, self.pg_port = pg_host, pg_port
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # Its own world-readable directory: PgBouncer refuses to run as root, and as the
        # ``postgres`` user it must read the config and write its log here.
        self.dir = Path(tempfile.mkdtemp(prefix="arcana-pgbouncer-"))
        self.dir.chmod(0o777)

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql+asyncpg://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PgBouncer:
        if not Path(PGBOUNCER).exists():
            raise RuntimeError(f"{PGBOUNCER} is needed (scripts/system-deps.sh)")
        (self.dir / "userlist.txt").write_text('"postgres" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            f"""[databases]
* = host={self.pg_host} port={self.pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "userlist.txt"}
pool_mode = transaction
; prepared statements left by a transaction are dropped before the next one
server_reset_query = DISCARD ALL
server_reset_query_always = 1
max_client_conn = 500
default_pool_size = 20
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
"""
        )
        for f in self.dir.iterdir():
            f.chmod(0o666)
        args = [PGBOUNCER, str(ini)]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited: {err}{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
