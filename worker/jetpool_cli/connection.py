"""Connecting to NATS the way a CLI should: fail fast, one clear line, no retry noise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from jetpool_cli.errors import CliError, describe

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    url: str = DEFAULT_NATS_URL
    credentials_file: str | None = None
    connect_timeout: float = 2.0
    request_timeout: float = 5.0
    """JetStream API and PubAck timeout."""


async def _quiet_error(exc: Exception) -> None:
    """nats-py logs every failed attempt with a traceback by default; a CLI reports once."""
    log.debug("nats: %s", exc)


@asynccontextmanager
async def connect(options: ConnectOptions) -> AsyncIterator[NatsClient]:
    """An open connection, drained on exit; unreachable servers raise :class:`CliError`."""
    creds = options.credentials_file
    if creds and not await asyncio.to_thread(Path(creds).is_file):
        raise CliError(f"credentials file {options.credentials_file!r} does not exist")
    try:
        nc = await asyncio.wait_for(
            nats.connect(
                options.url,
                user_credentials=options.credentials_file,
                connect_timeout=options.connect_timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=_quiet_error,
            ),
            timeout=options.connect_timeout * 3 + 1,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        no_server = isinstance(exc, nats.errors.NoServersError)
        reason = "no server answered" if no_server else describe(exc)
        raise CliError(f"cannot connect to NATS at {options.url}: {reason}") from exc
    try:
        yield nc
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
