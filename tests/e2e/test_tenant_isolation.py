"""Two namespaces on one NATS (one account, TLS + JWT): a hostile tenant tries every attack
on a victim pool while the victim keeps running signed tasks, and each attempt is refused
where it is made (apiserver, operator condition, NATS server, `jetpool dlq replay`)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.js.errors
import pytest
from nats.js.kv import KeyValue

from e2e.testbed.cluster import REPO, Cluster, KubectlError, eventually
from e2e.testbed.nats_auth import NatsAccount, issue_user
from e2e.testbed.pod_runner import PodRunner
from jetpool_protocol import headers as h
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from jetpool_protocol.keyring import Key, Keyring
from jetpool_protocol.naming import PoolNames, dead_letter_subject
from jetpool_protocol.permissions import worker_permissions
from jetpool_protocol.security import sign
from jetpool_protocol.stats import WorkerStats
from jetpool_protocol.worker_settings import WorkerSettings
from tests.e2e.conftest import (
    CHART_POLICY,
    NatsEndpoint,
    condition,
    extra_namespace,
    secret,
    wait_for_condition,
)
from tests.e2e.test_pod_template_limits_and_children import _no_deployment, _snapshot
from tests.e2e.test_scaling_and_breaker import (
    done,
    running_workers,
    status,
    wait_until,
    worker_pool,
)

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

SIGNING_SECRET = "victim-signing"
VICTIM_KEY_ID = "v1"


@pytest.fixture
def other_namespace(cluster: Cluster, secure_nats_endpoint: NatsEndpoint) -> Iterator[str]:
    """The hostile tenant's namespace, with the same NATS Secrets as the victim's."""
    with extra_namespace(cluster, secure_nats_endpoint) as name:
        yield name


async def _resources(endpoint: NatsEndpoint, stream: str) -> tuple[Any, ...]:
    """The configs (not the counters) of a pool's stream, consumer and dead-letter stream."""
    nc = await endpoint.connect()
    try:
        js = nc.jetstream()
        return (
            (await js.stream_info(stream)).config,
            (await js.consumer_info(stream, "workers")).config,
            (await js.stream_info(f"{stream}-dlq")).config,
        )
    finally:
        await nc.close()


def _refusal(
    cluster: Cluster, namespace: str, name: str, type_: str = "NatsReady"
) -> dict[str, Any]:
    pool = wait_for_condition(cluster, namespace, name, type_, "False", timeout=60)
    found = condition(pool, type_)
    assert found is not None
    return found


def _settings(cluster: Cluster, namespace: str, pool: str) -> WorkerSettings:
    """The worker settings the operator rendered into the pool's Deployment."""
    dep = cluster.get_json("deployment", f"{pool}-worker", "-n", namespace)
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return WorkerSettings.from_env({e["name"]: e["value"] for e in env if "value" in e})


class Victim:
    """The victim team's side: signed tasks in waves, the ids it published."""

    def __init__(self, endpoint: NatsEndpoint, namespace: str, keys: Keyring) -> None:
        self.endpoint, self.keys = endpoint, keys
        self.subject = f"tasks.{namespace}.victim.work"
        self.ids: list[str] = []

    async def wave(self, label: str, count: int = 10) -> None:
        ids = [f"{label}-{i}" for i in range(count)]
        nc = await self.endpoint.connect()
        js = nc.jetstream()
        body, now = b'{"n": 1}', datetime.now(UTC)
        for task_id in ids:
            headers = task_headers(task_id=task_id, created_at=now)
            signed = sign(body, headers, subject=self.subject, keys=self.keys)
            await js.publish(self.subject, body, headers=signed)
        await nc.close()
        self.ids += ids


def _forged_stats(pool: WorkerSettings, worker: str, **counters: int) -> bytes:
    now = datetime.now(UTC)
    stats = WorkerStats(
        worker=worker,
        pool=pool.pool_name,
        namespace=pool.pool_namespace,
        at=now,
        started_at=now,
        **counters,
    )
    return stats.model_dump_json().encode()


async def _forge_with_the_pools_own_user(
    endpoint: NatsEndpoint,
    account: NatsAccount,
    directory: Path,
    hostile: WorkerSettings,
    victim: WorkerSettings,
) -> list[str]:
    """A NATS user of the tenants' account holding exactly the hostile pool's permission set
    (issued here, signed with the account's key) publishes the victim's stats and writes the
    victim's breaker key: the server's refusals come back."""
    user = issue_user(
        directory,
        account,
        f"pool-{hostile.pool_namespace}-{hostile.pool_name}",
        permissions=worker_permissions(hostile).as_jwt_claims(),
    )
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await endpoint.connect(
        user_credentials=str(user.creds_file), error_cb=on_error, allow_reconnect=False
    )
    try:
        await nc.publish(victim.stats_subject, _forged_stats(victim, "w-forged", failed=10_000))
        state = ControlState(breaker=BreakerState.OPEN, epoch=10_000, since=datetime.now(UTC))
        key = f"$KV.{victim.control_bucket}.{victim.control_key}"
        await nc.publish(key, state.model_dump_json().encode())
        await nc.flush()
        await wait_until(lambda: _at_least(errors, 2), 10, "both publishes refused")
    finally:
        await nc.close()
    return errors


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n


async def _forge_stats_on_its_own_subject(
    endpoint: NatsEndpoint, hostile: WorkerSettings, victim: WorkerSettings
) -> None:
    """The account-wide user (which may publish any stats subject of the account) sends, on
    the hostile pool's subject, stats whose payload names the victim: all failures, and a
    throughput no real worker reaches."""
    nc = await endpoint.connect()
    try:
        for i in range(1, 9):
            failing = _forged_stats(victim, "w-forged-failing", failed=10_000 * i)
            busy = _forged_stats(victim, "w-forged-busy", succeeded=1_000_000 * i)
            await nc.publish(hostile.stats_subject, failing)
            await nc.publish(hostile.stats_subject, busy)
            await nc.flush()
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def _forge_a_dead_letter(
    endpoint: NatsEndpoint, victim: WorkerSettings, subject: str, task_id: str
) -> int:
    """The account-wide user writes a record into the victim's dead-letter stream claiming
    the victim's subject, signed under the victim's key id with a key of its own."""
    now = datetime.now(UTC)
    payload = b'{"n": 1, "to": "mallory@example.com"}'
    guessed = Keyring((Key(VICTIM_KEY_ID, os.urandom(32)),))
    record = DeadLetterRecord(
        task_id=task_id,
        pool=victim.pool_name,
        namespace=victim.pool_namespace,
        reason=DeadLetterReason.MAX_ATTEMPTS,
        error_type="TimeoutError",
        error_message="upstream timed out",
        traceback="",
        attempts=5,
        original_subject=subject,
        original_stream=victim.stream,
        original_sequence=1,
        headers=sign(
            payload, task_headers(task_id=task_id, created_at=now), subject=subject, keys=guessed
        ),
        payload=payload,
        first_failure_at=now,
        last_failure_at=now,
        worker="victim-worker-0",
    )
    nc = await endpoint.connect()
    try:
        ack = await nc.jetstream().publish(
            dead_letter_subject(
                victim.dead_letter_subject_prefix, record.reason, record.error_type
            ),
            record.model_dump_json().encode(),
            headers={
                h.DLQ_REASON: str(record.reason),
                h.DLQ_ERROR_TYPE: record.error_type,
                h.DLQ_POOL: f"{victim.pool_namespace}/{victim.pool_name}",
            },
        )
    finally:
        await nc.close()
    return int(ack.seq)


async def _replay(
    endpoint: NatsEndpoint, victim: WorkerSettings, key_file: Path
) -> tuple[int, dict[str, Any], str]:
    """The victim team runs the real CLI over its dead-letter stream, with its keyring."""
    argv = [
        str(REPO / ".venv" / "bin" / "jetpool"),
        "dlq",
        "replay",
        "--all",
        "-n",
        victim.pool_namespace,
        "-p",
        victim.pool_name,
        "--stream",
        victim.stream,
        "--nats-url",
        endpoint.test_url,
        "--sign-key-file",
        str(key_file),
        "-o",
        "json",
    ]
    if endpoint.creds_file is not None:
        argv += ["--creds", str(endpoint.creds_file)]
    if endpoint.ca_file is not None:
        argv += ["--tls-ca", str(endpoint.ca_file)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, json.loads(out), err.decode()


async def _control(endpoint: NatsEndpoint, victim: WorkerSettings) -> dict[str, Any]:
    nc = await endpoint.connect()
    try:
        kv = await nc.jetstream().key_value(victim.control_bucket)
        entry = await kv.get(victim.control_key)
        assert entry.value is not None
        return dict(json.loads(entry.value))
    finally:
        await nc.close()


@pytest.mark.usefixtures("operator")
async def test_a_hostile_tenant_on_the_same_nats_is_refused_every_attack_while_the_victim_runs_each_task_once(  # noqa: E501
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    secure_nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    secure_record: KeyValue,
    tmp_path: Path,
) -> None:
    """The hostile tenant, in its own namespace, on the victim's NATS account, tries:

    1. the victim's stream (take it, change its limits, delete it with the pool);
    2. the victim's subjects (and ``>``), and adopting an unowned stream of the victim's;
    3. the victim's consumer, named with its stream;
    4. child object names it does not own in its namespace (ServiceAccount, Service);
    5. forged stats and breaker control with its pool's own NATS user (server refuses), and
       stats for the victim on its own stats subject with the account-wide user (ignored);
    6. a forged dead-letter record in the victim's dead-letter stream, which the victim's
       team then replays with ``jetpool dlq replay`` (refused: the signature does not verify).

    Throughout, the victim runs every published (signed) task exactly once, its stream,
    consumer and dead-letter stream keep their configs, its task stream received nothing but
    its own tasks, and its breaker stays Closed.
    """
    endpoint, hostile = secure_nats_endpoint, other_namespace
    endpoint.install_secrets(cluster, namespace)
    url, bucket = endpoint.pod_url, f"e2e-{namespace}"
    signing_key = os.urandom(32)
    keys = Keyring((Key(VICTIM_KEY_ID, signing_key),))
    keyring_line = f"{VICTIM_KEY_ID}:{base64.b64encode(signing_key).decode()}\n"
    key_file = tmp_path / "signing.key"
    key_file.write_text(keyring_line)
    cluster.apply(secret(SIGNING_SECRET, {"signing.key": keyring_line}), "-n", namespace)
    cluster.apply(
        worker_pool(
            "victim",
            url,
            bucket,
            # A custom name, so the thief below meets the owner record; a default name is
            # reserved outright (the claimer below).
            nats={"stream": f"victim-{namespace}"},
            scaling={"minReplicas": 1, "maxReplicas": 1},
            security={"signingKeySecret": {"name": SIGNING_SECRET}, "requireSigned": True},
        ),
        "-n",
        namespace,
    )
    victim_pool = wait_for_condition(cluster, namespace, "victim", "Ready", "True", timeout=90)
    stream, subjects = (
        victim_pool["status"]["nats"]["stream"],
        victim_pool["status"]["nats"]["subjects"],
    )
    victim = _settings(cluster, namespace, "victim")
    before = await _resources(endpoint, stream)
    control_before = await _control(endpoint, victim)
    tasks = Victim(endpoint, namespace, keys)
    await tasks.wave("before")

    # 1, 2. Stream and subjects. A stream of the victim's from before ownership records (no
    # metadata), not yet adopted by the victim.
    unowned = f"legacy-{namespace}"
    nc = await endpoint.connect()
    await nc.jetstream().add_stream(
        name=unowned, subjects=[f"tasks.{namespace}.legacy.>"], retention="workqueue"
    )
    unowned_before = (await nc.jetstream().stream_info(unowned)).config
    cluster.apply(
        worker_pool(
            "thief",
            url,
            bucket,
            nats={"stream": stream, "adoptExisting": True, "maxMsgs": 1},
            scaling={"minReplicas": 1, "maxReplicas": 2},
            deletionPolicy="Delete",
        ),
        "-n",
        hostile,
    )
    eavesdropper_pool = worker_pool("eavesdropper", url, bucket, nats={"subjects": subjects})
    if CHART_POLICY:  # the chart's admission policy refuses it before the operator sees it
        with pytest.raises(KubectlError, match=f"inside namespace {hostile}'s subject space"):
            cluster.apply(eavesdropper_pool, "-n", hostile)
    else:
        cluster.apply(eavesdropper_pool, "-n", hostile)
    cluster.apply(
        worker_pool("squatter", url, bucket, nats={"stream": unowned, "adoptExisting": True}),
        "-n",
        hostile,
    )
    # Another namespace's default stream name, before that pool exists.
    reserved = PoolNames(namespace, "later").stream
    cluster.apply(worker_pool("claimer", url, bucket, nats={"stream": reserved}), "-n", hostile)
    with pytest.raises(KubectlError, match=r"nats\.subjects must each start with tasks\."):
        cluster.apply(worker_pool("greedy", url, bucket, nats={"subjects": [">"]}), "-n", hostile)
    # 3. The consumer, named with its stream.
    cluster.apply(
        worker_pool(
            "poacher",
            url,
            bucket,
            nats={"stream": stream, "consumer": "workers", "adoptExisting": True},
        ),
        "-n",
        hostile,
    )

    thief = _refusal(cluster, hostile, "thief")
    assert thief["reason"] == "OwnedByAnotherPool"
    assert f"belongs to WorkerPool {namespace}/victim" in thief["message"]
    if not CHART_POLICY:
        eavesdropper = _refusal(cluster, hostile, "eavesdropper")
        assert eavesdropper["reason"] == "SubjectsOutsideNamespace"
        assert (
            f"{subjects[0]!r} is outside namespace {hostile}'s subject space"
            in (eavesdropper["message"])
        )
    squatter = _refusal(cluster, hostile, "squatter")
    assert squatter["reason"] == "AdoptionRefused"
    assert f"captures subjects outside namespace {hostile}" in squatter["message"]
    assert (await nc.jetstream().stream_info(unowned)).config == unowned_before
    claimer = _refusal(cluster, hostile, "claimer")
    assert claimer["reason"] == "ReservedStreamName"
    assert f"nats.stream {reserved!r}" in claimer["message"]
    with pytest.raises(nats.js.errors.NotFoundError):
        await nc.jetstream().stream_info(reserved)
    poacher = _refusal(cluster, hostile, "poacher")
    assert poacher["reason"] == "OwnedByAnotherPool"
    assert f"belongs to WorkerPool {namespace}/victim" in poacher["message"]
    await nc.close()
    for pool in ("thief", "poacher", "claimer"):  # no workers on others' streams or consumer
        assert status(cluster, hostile, pool)["desiredReplicas"] == 0
    await tasks.wave("streams")

    # 4. Child names: namespaced, so only objects in the hostile namespace can clash; ones
    # it does not own (here: made by the namespace's admin) are reported and left alone.
    cluster.kubectl("-n", hostile, "create", "serviceaccount", "mimic-worker")
    cluster.kubectl("-n", hostile, "create", "service", "clusterip", "mimic-metrics", "--tcp=80")
    existing = [("serviceaccount", "mimic-worker"), ("service", "mimic-metrics")]
    children_before = {obj: _snapshot(cluster, hostile, *obj) for obj in existing}
    cluster.apply(worker_pool("mimic", url, bucket), "-n", hostile)
    mimic = _refusal(cluster, hostile, "mimic", "Ready")
    assert mimic["reason"] == "ChildConflict", mimic
    assert (
        "ServiceAccount mimic-worker already exists, not owned by any object" in (mimic["message"])
    )
    await tasks.wave("children")

    # 5. Stats and control. The hostile tenant's own, legitimate pool gives the permission set.
    cluster.apply(
        worker_pool("mallory", url, bucket, scaling={"minReplicas": 0, "maxReplicas": 1}),
        "-n",
        hostile,
    )
    wait_for_condition(cluster, hostile, "mallory", "NatsReady", "True")
    mallory = eventually(
        lambda: (
            _settings(cluster, hostile, "mallory")
            if cluster.kubectl("-n", hostile, "get", "deployment", "mallory-worker", check=False)
            else None
        ),
        what="mallory's Deployment",
    )
    seen: list[WorkerStats] = []
    watcher = await endpoint.connect()

    async def collect(msg: Any) -> None:
        seen.append(WorkerStats.model_validate_json(msg.data))

    await watcher.subscribe(victim.stats_subject, cb=collect)
    await watcher.flush()
    assert endpoint.account is not None, "no account key to issue a per-pool user with"
    errors = await _forge_with_the_pools_own_user(
        endpoint, endpoint.account, tmp_path, mallory, victim
    )
    assert len(errors) == 2, errors
    assert all("permissions violation for publish" in e.lower() for e in errors), errors
    assert any(victim.stats_subject in e for e in errors), errors
    assert any(victim.control_key in e for e in errors), errors
    await _forge_stats_on_its_own_subject(endpoint, mallory, victim)
    await asyncio.sleep(1)
    await watcher.close()
    assert not [s for s in seen if s.worker == "w-forged"], "forged stats reached the subject"
    await tasks.wave("stats")
    for _ in range(4):  # several ticks: forged stats would open the breaker, lift throughput
        now = status(cluster, namespace, "victim")
        assert now["circuitBreaker"]["state"] == "Closed", now["circuitBreaker"]
        assert not now.get("errorRate"), now.get("errorRate")
        assert (now.get("throughput") or 0) < 1000, now.get("throughput")
        await asyncio.sleep(1)
    control_after = await _control(endpoint, victim)
    assert control_after["breaker"] == "Closed"
    assert control_after["epoch"] == control_before["epoch"]

    # 6. A forged dead-letter record, replayed by the victim's team.
    forged_id = f"forged-{uuid.uuid4().hex[:6]}"
    forged_seq = await _forge_a_dead_letter(endpoint, victim, tasks.subject, forged_id)
    code, report, err = await _replay(endpoint, victim, key_file)
    assert code == 1, (report, err)
    [item] = report["items"]
    assert item["task_id"] == forged_id
    assert item["outcome"] == "refused"
    assert "original signature does not verify" in item["error"]
    assert report["refused"] == 1
    assert f"refused dlq seq {forged_seq}: task {forged_id}" in err
    await tasks.wave("after")

    # The victim: every task once, nothing else delivered, its resources unchanged.
    async def all_done() -> bool:
        return await done(secure_record) == set(tasks.ids)

    await wait_until(all_done, 90, "every victim task done")
    assert not await done(secure_record, "again."), "a task ran twice"
    assert forged_id not in await done(secure_record)
    nc = await endpoint.connect()
    task_stream = await nc.jetstream().stream_info(stream)
    consumer = await nc.jetstream().consumer_info(stream, "workers")
    dlq = await nc.jetstream().stream_info(f"{stream}-dlq")
    await nc.close()
    assert task_stream.state.last_seq == len(tasks.ids)  # its own tasks only, nothing replayed
    assert consumer.delivered.stream_seq == len(tasks.ids)
    assert consumer.ack_floor.stream_seq == len(tasks.ids)  # each acknowledged
    assert consumer.num_pending == consumer.num_ack_pending == 0
    assert dlq.state.messages == 1  # the forged record, kept, not replayed
    assert running_workers(cluster, hostile, pod_runner) == 0
    assert await _resources(endpoint, stream) == before
    assert {obj: _snapshot(cluster, hostile, *obj) for obj in existing} == children_before
    assert _no_deployment(cluster, hostile, "mimic")

    cluster.kubectl(
        "delete", "workerpool", "thief", "poacher", "claimer", "-n", hostile, "--timeout=60s"
    )
    assert await _resources(endpoint, stream) == before
    wait_for_condition(cluster, namespace, "victim", "NatsReady", "True")
