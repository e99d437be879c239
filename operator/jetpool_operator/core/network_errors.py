"""Short, tenant-safe summaries of failures to reach a tenant-chosen NATS URL.

A pool's condition message is read by the tenant who chose the URL. Raw socket errors carry
what the operator's network knows and the tenant should not learn from a status (resolved
addresses, errno details, library internals, a password written into the URL); a summary
names only the URL's host and port and a fixed description of the failure.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors

MAX_SERVER_TEXT = 120
"""Characters kept of a server's own answer (an API error description, a refusal)."""


class ServerRefusal(ConnectionError):
    """A server answered and refused (TLS verification, authorization); its text is the
    server's answer and is shown, cut short."""


def redacted_servers(url: str) -> str:
    """``host:port`` of each comma-separated server, without scheme, user or password."""
    shown = []
    for part in (p.strip() for p in url.split(",")):
        if not part:
            continue
        try:
            split = urlsplit(part if "://" in part else f"nats://{part}")
            host, port = split.hostname or "?", split.port
        except ValueError:
            host, port = "?", None
        shown.append(f"{host}:{port}" if port else host)
    return ",".join(shown) or "?"


def _server_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SERVER_TEXT else f"{text[: MAX_SERVER_TEXT - 1]}…"


def describe_failure(exc: BaseException) -> str:
    """A fixed phrase per kind of failure; only a server's own answer is quoted, cut short."""
    if isinstance(exc, ServerRefusal):
        return _server_text(str(exc))
    if isinstance(exc, nats.js.errors.APIError):
        return f"the JetStream API answered: {_server_text(exc.description or 'an error')}"
    if isinstance(exc, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(exc, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | nats.errors.UnexpectedEOF):
        return "the server closed the connection"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server could be reached"
    if isinstance(exc, nats.errors.NoRespondersError):
        return "no JetStream answered (is JetStream enabled for this account?)"
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return "timed out"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return "the connection is closed"
    if isinstance(exc, nats.errors.Error):
        return f"NATS error ({type(exc).__name__})"
    if type(exc) is ConnectionError:  # the adapter's own "still reconnecting"
        return "the connection is down; reconnecting"
    if isinstance(exc, OSError):
        return "a network error"
    return f"unexpected error ({type(exc).__name__})"


def summarize_nats_failure(url: str, exc: BaseException) -> str:
    """``<host:port>: <what happened>`` for a pool's ``NatsUnreachable`` condition."""
    return f"{redacted_servers(url)}: {describe_failure(exc)}"
