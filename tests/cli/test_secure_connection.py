"""The CLI against a secure NATS: credentials checked before connecting, TLS from a CA file."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import RetentionPolicy, StreamConfig

from e2e.testbed.nats_auth import NatsAuth
from e2e.testbed.nats_server import NatsServer
from jetpool_cli.main import main_async

pytestmark = pytest.mark.nats


async def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.wait_for(main_async(list(argv), stdout=out, stderr=err), timeout=30)
    return code, out.getvalue(), err.getvalue()


async def test_publishing_with_the_creds_file_and_the_ca_reaches_the_tenants_stream(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    user = nats_auth.user("tenant-a")
    nc = await nats.connect(
        secure_nats_server.url,
        tls=secure_nats_server.tls_context(),
        user_credentials=str(user.creds_file),
    )
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name="CLI_SECURE", subjects=["cli-secure.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    try:
        code, out, err = await run(
            "publish",
            "cli-secure.job",
            "--data",
            "{}",
            "--count",
            "3",
            "-o",
            "json",
            "--nats-url",
            secure_nats_server.url,
            "--creds",
            str(user.creds_file),
            "--tls-ca",
            str(nats_auth.tls.ca_file),
        )
        assert code == 0, err
        assert json.loads(out)["published"] == 3
        assert (await js.stream_info("CLI_SECURE")).state.messages == 3
    finally:
        await js.delete_stream("CLI_SECURE")
        await nc.close()


async def test_a_seed_without_its_jwt_fails_at_once_with_what_is_missing(
    secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    """nats-py alone would spin forever reading this file."""
    seed_only = tmp_path / "seed-only.creds"
    seed = nats_auth.user("tenant-a").seed
    seed_only.write_text(f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED-----\n")
    started = time.monotonic()
    code, _, err = await run(
        "dlq",
        "stats",
        "-p",
        "x",
        "--nats-url",
        secure_nats_server.url,
        "--creds",
        str(seed_only),
        "--tls-ca",
        str(nats_auth.tls.ca_file),
    )
    assert time.monotonic() - started < 5
    assert code == 1
    assert err.startswith(f"jetpool: error: invalid credentials file '{seed_only}': ")
    assert "no '-----BEGIN NATS USER JWT-----' block" in err
    assert seed not in err


async def test_without_the_ca_the_server_certificate_is_not_trusted(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    code, _, err = await run(
        "dlq",
        "stats",
        "-p",
        "x",
        "--nats-url",
        secure_nats_server.url,
        "--creds",
        str(nats_auth.user("tenant-a").creds_file),
        "--timeout",
        "1",
    )
    assert code == 1
    assert "certificate verify failed" in err
