"""``jetpool-worker``: configuration from ``JETPOOL_*`` env only; exit 2 on bad configuration."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from jetpool_protocol import telemetry
from jetpool_protocol.credentials import CredentialsError
from jetpool_protocol.worker_settings import WorkerSettings
from jetpool_worker import logs
from jetpool_worker.consumer_loop import Worker
from jetpool_worker.errors import HandlerLoadError

log = logging.getLogger("jetpool_worker")

EXIT_OK = 0
EXIT_CONFIG = 2


async def serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.run(stop)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(
            "jetpool-worker: configured by JETPOOL_* environment variables; "
            "see docs/worker-contract.md"
        )
        return EXIT_OK
    try:
        settings = WorkerSettings.from_env(env)
    except ValueError as exc:
        print(f"jetpool-worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        logs.configure(
            settings.log_format.value,
            settings.log_level,
            {"pool": settings.pool_name, "namespace": settings.pool_namespace},
        )
    except ValueError as exc:  # an unknown level name
        print(f"jetpool-worker: invalid JETPOOL_LOG_LEVEL: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        telemetry.configure_tracing(
            "jetpool-worker",
            env,
            {"jetpool.pool": settings.pool_name, "k8s.namespace.name": settings.pool_namespace},
        )
    except ValueError as exc:
        log.error("invalid tracing configuration: %s", exc)
        return EXIT_CONFIG
    try:
        worker = Worker(settings)
    except CredentialsError as exc:
        # One structured line a `kubectl logs` reader can act on; never a hang or a traceback.
        log.error(
            "invalid NATS credentials file %s: %s",
            settings.nats_credentials_file,
            exc,
            extra={
                "event": "invalid_credentials",
                "credentials_file": settings.nats_credentials_file,
                "problem": str(exc),
            },
        )
        return EXIT_CONFIG
    except (HandlerLoadError, OSError, ValueError) as exc:
        log.error("cannot start worker: %s", exc)
        return EXIT_CONFIG
    try:
        worker.start_health_server()
    except OSError as exc:  # the port is taken, or not ours to bind
        log.error(
            "cannot serve metrics and probes on JETPOOL_METRICS_PORT=%d: %s",
            settings.metrics_port,
            exc,
        )
        return EXIT_CONFIG
    asyncio.run(serve(worker))
    lingering = [t for t in threading.enumerate() if t.name.startswith("jetpool-handler")]
    if lingering:
        # A sync handler past its timeout cannot be killed; do not let it hold the pod hostage.
        log.warning("exiting with %d handler threads still running", len(lingering))
        telemetry.flush_tracing()
        logging.shutdown()
        os._exit(EXIT_OK)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
