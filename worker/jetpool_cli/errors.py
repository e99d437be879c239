"""Expected failures of the CLI and its library, each with a one-line message and exit code."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

EXIT_OK = 0
EXIT_FAILURE = 1
"""The operation failed or partly failed (unreachable server, missing stream, failed publishes)."""
EXIT_USAGE = 2
"""The command line was wrong or a destructive command lacked its confirmation."""


class CliError(Exception):
    """An expected failure: printed as one line, never as a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class ClientError(CliError):
    """A request the pool cannot serve (tracking or schedules off, a bad schedule, no such
    schedule): what :class:`jetpool.Client` raises besides NATS's own errors."""


class StreamNotFoundError(CliError):
    def __init__(self, stream: str, hint: str = "") -> None:
        super().__init__(f"stream {stream!r} not found" + (f" ({hint})" if hint else ""))
        self.stream = stream


STREAM_NOT_FOUND_CODE = 10059
MESSAGE_NOT_FOUND_CODES = frozenset({10037, 10057})


def is_stream_not_found(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == STREAM_NOT_FOUND_CODE


def is_message_not_found(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in MESSAGE_NOT_FOUND_CODES


def describe(exc: BaseException) -> str:
    """A short human sentence for a NATS client exception (no class dumps, no tracebacks)."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return "no JetStream stream captures this subject"
    if isinstance(exc, nats.js.errors.APIError):
        return exc.description or f"JetStream API error {exc.code}/{exc.err_code}"
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
        return "JetStream is not enabled or not available on this server"
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return "timed out waiting for the NATS server"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "the NATS connection was closed"
    text = str(exc).strip()
    return text or type(exc).__name__
