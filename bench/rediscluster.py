"""A private three-master Redis Cluster on loopback, for the suite (tests/redis_cluster.py) and
bench/cluster.py: three `redis-server --cluster-enabled yes` processes in a temporary folder (no
persistence), joined with `redis-cli --cluster create` (16,384 slots over the three, no
replicas); `start` returns once every node reports `cluster_state:ok`, `stop` ends them. Ports
are free ones picked at start (each node also needs its cluster bus port, +10000)."""

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

NODES = 3
START_TIMEOUT = 30  # seconds for the whole cluster to come up


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55_000 and port not in ports and _port_free(port + 10_000):
            ports.append(port)
    return ports


class RedisClusterProcesses:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = _free_ports(NODES)
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        """REDIS_URL for the portal: any one node (the client learns the others from it)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _spawn(self, port: int) -> subprocess.Popen:
        node_dir = self.folder / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
            "--cluster-config-file", str(node_dir / "nodes.conf"), "--cluster-node-timeout", "2000",
            "--dir", str(node_dir), "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(node_dir / "redis.log"),
        ]  # fmt: skip
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def start(self) -> None:
        """Start the nodes and join them into one cluster; or, after `kill`, restart them (empty,
        each keeping its identity and slots from nodes.conf) until the cluster is whole again."""
        joined = bool(self.processes)
        self.processes = [self._spawn(port) for port in self.ports]
        deadline = time.monotonic() + START_TIMEOUT
        for port in self.ports:
            self._wait(deadline, f"redis-server on {port}", lambda p=port: self._ask(p, "PING"))
        if not joined:
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                output = f"{created.stdout[-2000:]} {created.stderr[-2000:]}"
                raise RuntimeError(f"redis-cli --cluster create failed: {output}")
        for port in self.ports:
            self._wait(deadline, f"cluster_state:ok on {port}", lambda p=port: self._state_ok(p))

    def kill(self) -> None:
        """SIGKILL every node: no shutdown, no save; `start` brings them back empty."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)

    def _ask(self, port: int, *command: str) -> object:
        with redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=0.5) as node:
            return node.execute_command(*command)

    def _state_ok(self, port: int) -> bool:
        info = self._ask(port, "CLUSTER", "INFO")
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def _wait(self, deadline: float, what: str, probe) -> None:
        while True:
            try:
                if probe():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Redis Cluster did not start: timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def cluster_missing_reason() -> str | None:
    """Why a cluster cannot be started here (None: it can)."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: the Redis Cluster tests start a real cluster with them"
    return None
