"""A tenant-chosen NATS URL's failures are summarized: host and port, and a fixed phrase."""

from __future__ import annotations

import socket
import ssl

import nats.errors
import nats.js.errors
import pytest

from jetpool_operator.adapters.nats import NatsRefused
from jetpool_operator.core.network_errors import (
    describe_failure,
    redacted_servers,
    summarize_nats_failure,
)


@pytest.mark.parametrize(
    ("exc", "phrase"),
    [
        (socket.gaierror(-2, "Name or service not known: internal-db.corp.example"), "resolve"),
        (ConnectionRefusedError(111, "Connect call failed ('10.96.4.17', 4222)"), "refused"),
        (ConnectionResetError(104, "reset by 10.0.0.3"), "closed the connection"),
        (OSError(113, "No route to host 192.168.7.9"), "a network error"),
        (ConnectionError("reconnecting to nats://u:pw@10.2.3.4:4222"), "reconnecting"),
        (TimeoutError(), "timed out"),
        (nats.errors.TimeoutError(), "timed out"),
        (nats.errors.NoServersError(), "no server could be reached"),
        (nats.errors.NoRespondersError(), "no JetStream answered"),
        (ssl.SSLCertVerificationError(1, "verify failed for 10.1.2.3"), "TLS handshake failed"),
        (RuntimeError("Traceback at /usr/lib/python3/site-packages/x.py"), "RuntimeError"),
    ],
)
def test_network_errors_become_a_fixed_phrase_without_addresses_or_internals(
    exc: BaseException, phrase: str
) -> None:
    text = summarize_nats_failure("nats://nats.tenant.svc:4222", exc)
    assert text.startswith("nats.tenant.svc:4222: ")
    assert phrase in text
    for leak in ("10.", "192.168", "internal-db", "/usr/lib", "Traceback", "Errno", "111"):
        assert leak not in text


def test_a_password_in_the_url_is_never_shown() -> None:
    text = summarize_nats_failure("tls://alice:s3cret@nats-0:4222, nats-1", OSError("x"))
    assert text == "nats-0:4222,nats-1: a network error"
    assert "s3cret" not in text
    assert "alice" not in text


def test_a_server_s_own_answer_is_quoted_cut_short() -> None:
    refusal = NatsRefused("the server refused the connection: nats: 'Authorization Violation'")
    assert describe_failure(refusal).endswith("'Authorization Violation'")
    api = nats.js.errors.APIError(code=500, err_code=10023, description="insufficient " * 40)
    described = describe_failure(api)
    assert described.startswith("the JetStream API answered: insufficient")
    assert len(described) < 160
    assert described.endswith("…")


def test_an_unparseable_url_still_gives_a_summary() -> None:
    assert redacted_servers("nats://[::1") == "?"
    assert redacted_servers("") == "?"
