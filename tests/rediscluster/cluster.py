"""A real local Redis Cluster: 6 ``redis-server`` processes in cluster mode on loopback
(3 masters + 3 replicas), private directories, free ports, no persistence.

``node_timeout_ms`` is how long a silent master has before its replica takes over: short for
the failover test (which measures that), longer by default so that a busy machine pausing a
process for a moment does not set off a failover in the middle of other tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.process import free_port

NODE_TIMEOUT_MS = 5000


@dataclass
class Node:
    port: int
    bus_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 5.0) -> str:
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return out.stdout.decode()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    root: Path
    size: int = 6
    node_timeout_ms: int = NODE_TIMEOUT_MS
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self, attempts: int = 3) -> LocalCluster:
        """Start the nodes and create the cluster; on failure (a free port taken meanwhile by
        another process, a slow machine) stop everything and try again on new ports."""
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            raise RuntimeError("redis-server and redis-cli are needed (scripts/system-deps.sh)")
        for attempt in range(1, attempts + 1):
            try:
                return self._start(self.root / f"try{attempt}")
            except (RuntimeError, subprocess.TimeoutExpired):
                self.stop()
                self.nodes = []
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start(self, root: Path) -> LocalCluster:
        for i in range(self.size):
            d = root / f"node{i}"
            d.mkdir(parents=True, exist_ok=True)
            node = Node(free_port(), free_port(), d)
            node.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--bind", "127.0.0.1",
                    "--port", str(node.port),
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(node.bus_port),
                    "--cluster-config-file", str(d / "nodes.conf"),
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    "--cluster-replica-validity-factor", "0",
                    "--dir", str(d),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "no",
                    "--logfile", str(d / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.nodes.append(node)
        for node in self.nodes:
            self._wait(lambda n=node: n.cli("PING").strip() == "PONG", "node start")
        out = subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *[n.address for n in self.nodes],
                "--cluster-replicas", "1", "--cluster-yes",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"cluster create failed: {out.stdout.decode()}{out.stderr.decode()}")
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says ``cluster_state:ok`` and agrees on 3 masters with a replica."""

        def ok() -> bool:
            for n in self.nodes:
                if not n.alive():
                    continue
                info = n.cli("CLUSTER", "INFO")
                if "cluster_state:ok" not in info:
                    return False
            return len(self.masters()) == 3

        self._wait(ok, "cluster state ok", timeout)

    def masters(self) -> list[Node]:
        """Live nodes that currently serve slots as masters."""
        live = next(n for n in self.nodes if n.alive())
        ports = set()
        for line in live.cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) >= 9 and "master" in parts[2] and "fail" not in parts[2]:
                ports.add(int(parts[1].split(":")[1].split("@")[0]))
        return [n for n in self.nodes if n.port in ports and n.alive()]

    def master_of_slot(self, slot: int) -> Node:
        live = next(n for n in self.nodes if n.alive())
        for line in live.cli("CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                continue
            for rng in parts[8:]:
                lo, _, hi = rng.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    port = int(parts[1].split(":")[1].split("@")[0])
                    return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no master serves slot {slot}")

    def wait_replicated(self, master: Node, timeout: float = 10.0) -> None:
        """Until a replica of ``master`` has every write the master had when called
        (replication is asynchronous: a write acknowledged just before a crash can be lost)."""
        info = dict(
            line.split(":", 1) for line in master.cli("INFO", "replication").split() if ":" in line
        )
        target = int(info["master_repl_offset"])

        def caught_up() -> bool:
            now = dict(
                line.split(":", 1)
                for line in master.cli("INFO", "replication").split()
                if ":" in line
            )
            offsets = [
                int(v.split("offset=")[1].split(",")[0])
                for k, v in now.items()
                if k.startswith("slave") and "offset=" in v
            ]
            return any(o >= target for o in offsets)

        self._wait(caught_up, "replica caught up", timeout)

    def kill(self, node: Node) -> None:
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(10)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)

    @staticmethod
    def _wait(predicate: object, what: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():  # type: ignore[operator]
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis cluster: {what} not reached within {timeout}s")
