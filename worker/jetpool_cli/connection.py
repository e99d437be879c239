"""Connecting to NATS the way a CLI should: fail fast, one clear line, no retry noise."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from jetpool_cli.errors import CliError, describe
from jetpool_protocol.credentials import CredentialsError, load_credentials_file
from jetpool_protocol.worker_settings import server_urls

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    url: str = DEFAULT_NATS_URL
    credentials_file: str | None = None
    tls_ca_file: str | None = None
    """CA bundle (PEM) that signs the NATS servers; unset: the system trust store."""
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    """Client certificate and key (PEM) for mutual TLS."""
    connect_timeout: float = 2.0
    request_timeout: float = 5.0
    """JetStream API and PubAck timeout."""


async def _quiet_error(exc: Exception) -> None:
    """nats-py logs every failed attempt with a traceback by default; a CLI reports once."""
    log.debug("nats: %s", exc)


def _credentials(path: str | None) -> RawCredentials | None:
    """The checked file's content: a bad file is one clear error, never a hang in nats-py."""
    if not path:
        return None
    if not Path(path).is_file():
        raise CliError(f"credentials file {path!r} does not exist")
    try:
        return RawCredentials(load_credentials_file(path).render())
    except CredentialsError as exc:
        raise CliError(f"invalid credentials file {path!r}: {exc}") from exc


def _tls(options: ConnectOptions) -> ssl.SSLContext | None:
    if not (options.tls_ca_file or options.tls_cert_file):
        return None
    if bool(options.tls_cert_file) != bool(options.tls_key_file):
        raise CliError("--tls-cert and --tls-key go together")
    try:
        context = ssl.create_default_context(cafile=options.tls_ca_file)
        if options.tls_cert_file:
            context.load_cert_chain(options.tls_cert_file, options.tls_key_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise CliError(f"cannot load TLS files: {describe(exc)}") from exc
    return context


def _is_refusal(exc: Exception) -> bool:
    if isinstance(exc, ssl.SSLError):
        return True
    refused = (nats.errors.NoServersError, nats.errors.TimeoutError, nats.errors.UnexpectedEOF)
    return isinstance(exc, nats.errors.Error) and not isinstance(exc, refused)


@asynccontextmanager
async def connect(options: ConnectOptions) -> AsyncIterator[NatsClient]:
    """An open connection, drained on exit; unreachable servers raise :class:`CliError`."""
    credentials = await asyncio.to_thread(_credentials, options.credentials_file)
    tls = await asyncio.to_thread(_tls, options)
    seen: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        seen.append(exc)
        await _quiet_error(exc)

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                server_urls(options.url),
                user_credentials=credentials,
                tls=tls,
                connect_timeout=options.connect_timeout,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=on_error,
            ),
            timeout=options.connect_timeout * 3 + 1,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        # Retries end in a timeout or "no servers"; when a server answered and refused us
        # (an untrusted certificate, an authorization violation), that refusal says why.
        gave_up = isinstance(exc, nats.errors.NoServersError | TimeoutError)
        cause = next((e for e in seen if _is_refusal(e)), None)
        if gave_up and cause is not None:
            reason = describe(cause)
        elif isinstance(exc, nats.errors.NoServersError):
            reason = "no server answered"
        else:
            reason = describe(exc)
        raise CliError(f"cannot connect to NATS at {options.url}: {reason}") from exc
    try:
        yield nc
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
