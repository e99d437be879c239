"""A real three-server NATS cluster with JetStream: three nats-server processes on loopback,
routed to each other, each with its own store, for the tests marked ``nats_cluster``.

Servers are named ``n1``..``n3`` (the names JetStream reports as stream and consumer leaders).
A server can be SIGKILLed and started again on the same ports and store, or frozen with
SIGSTOP: a partition of that server from everyone (its clients and its routes stall, no TCP
connection is closed) until it is thawed with SIGCONT.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from e2e.testbed.nats_server import nats_server_binary
from e2e.testbed.processes import free_port, http_json, spawn_logged, stop_process, wait_for_port

CLUSTER_NAME = "jetpool-test"
SIZE = 3


@dataclass
class ClusterNode:
    name: str
    port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    nodes: list[ClusterNode] = field(
        default_factory=lambda: [ClusterNode(f"n{i}") for i in range(1, SIZE + 1)]
    )
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="jetpool-nats-cluster-"))
    )

    @property
    def url(self) -> str:
        """Every server, comma-separated: what a pool's ``spec.nats.url`` lists."""
        return ",".join(n.url for n in self.nodes)

    @property
    def servers(self) -> list[str]:
        return [n.url for n in self.nodes]

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def config(self, node: ClusterNode) -> str:
        routes = [f"nats-route://127.0.0.1:{n.route_port}" for n in self.nodes if n is not node]
        store = self.workdir / node.name / "js"
        return (
            f"server_name: {node.name}\n"
            f'listen: "127.0.0.1:{node.port}"\n'
            f'http: "127.0.0.1:{node.monitor_port}"\n'
            f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
            f"cluster {{\n"
            f"  name: {CLUSTER_NAME}\n"
            f'  listen: "127.0.0.1:{node.route_port}"\n'
            f"  routes: {json.dumps(routes)}\n"
            f"}}\n"
        )

    def start_node(self, node: ClusterNode) -> None:
        if node.running:
            return
        directory = self.workdir / node.name
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "nats-server.conf"
        conf.write_text(self.config(node))
        node.process = spawn_logged(
            [nats_server_binary(), "--config", str(conf)], directory / "nats-server.log"
        )
        wait_for_port(node.port)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every running server knows the JetStream meta leader."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = {self.meta_leader(n) for n in self.nodes if n.running}
            if len(leaders) == 1 and None not in leaders:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed JetStream meta leader after {timeout}s: {leaders}")
            time.sleep(0.2)

    def meta_leader(self, node: ClusterNode) -> str | None:
        with contextlib.suppress(OSError, ValueError):
            jsz = http_json(f"http://127.0.0.1:{node.monitor_port}/jsz", timeout=2)
            leader = (jsz.get("meta_cluster") or {}).get("leader")
            return str(leader) if leader else None
        return None

    def kill(self, name: str) -> None:
        """SIGKILL: no goodbye to clients or peers, as a crashed host."""
        node = self.node(name)
        if node.process is not None:
            stop_process(node.process, signal.SIGKILL, grace=5)
            node.process = None

    def restart(self, name: str) -> None:
        self.start_node(self.node(name))

    def freeze(self, name: str) -> None:
        """Partition the server from everyone: it stops answering, its sockets stay open."""
        process = self.node(name).process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        process = self.node(name).process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.process.send_signal(signal.SIGCONT)
                stop_process(node.process, grace=10)
                node.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)
