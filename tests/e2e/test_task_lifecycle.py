"""A task's life as a user meets it: published and followed by id with the `jetpool` CLI
against a pool the operator runs (real worker processes or pods), and attempts that count
runs while workers are scaled down and restarted mid-burst. The handler keeps its own ledger
(``tests/e2e/handlers.py``: ``runs.<id>``, ``end.<id>``), which every status must agree with.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from typing import Any

import pytest
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.pod_runner import PodRunner
from jetpool import Client, TaskPhase
from jetpool_cli.main import main_async
from jetpool_protocol.dead_letter import DeadLetterRecord
from tests.e2e.conftest import NatsEndpoint
from tests.e2e.test_scaling_and_breaker import status, wait_until, worker_pool

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

LIFECYCLE = "tests.e2e.handlers:lifecycle"


def lifecycle_pool(
    name: str, endpoint: NatsEndpoint, namespace: str, **spec: Any
) -> dict[str, Any]:
    """A pool running the ledger-keeping handler, two attempts with short backoffs."""
    return worker_pool(
        name,
        endpoint.pod_url,
        f"e2e-{namespace}",
        handler=LIFECYCLE,
        retry={"maxAttempts": 2, "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.5}},
        **spec,
    )


async def jetpool(endpoint: NatsEndpoint, namespace: str, pool: str, *argv: str) -> Any:
    """Run one `jetpool` command (its console entry point, in-process) as a user would."""
    flags = ["--nats-url", endpoint.test_url, "-n", namespace, "-p", pool, "-o", "json"]
    if endpoint.creds_file is not None:
        flags += ["--creds", str(endpoint.creds_file)]
    if endpoint.ca_file is not None:
        flags += ["--tls-ca", str(endpoint.ca_file)]
    out, err = io.StringIO(), io.StringIO()
    code = await main_async([*argv, *flags], stdout=out, stderr=err)
    text = out.getvalue()
    assert code in (0, 1), (argv, code, err.getvalue())
    return json.loads(text) if text.strip().startswith(("{", "[")) else text


async def phase(endpoint: NatsEndpoint, namespace: str, pool: str, task_id: str) -> str:
    [state] = await jetpool(endpoint, namespace, pool, "task", "status", task_id)
    return str(state["phase"])


async def ledger(kv: KeyValue, task_id: str) -> tuple[int, str | None]:
    """(runs, how the last run ended) as the handler recorded them."""
    try:
        runs = int((await kv.get(f"runs.{task_id}")).value or b"0")
    except NotFoundError:
        return 0, None
    try:
        end = (await kv.get(f"end.{task_id}")).value
    except NotFoundError:
        end = None
    return runs, end.decode() if end else None


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(300)
async def test_each_tasks_status_and_result_read_back_by_id_agree_with_the_handler(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    name = "life"

    def manifest(paused: bool) -> dict[str, Any]:
        return lifecycle_pool(
            name,
            nats_endpoint,
            namespace,
            paused=paused,
            tracking={"results": {"enabled": True}},
            scaling={"minReplicas": 1, "maxReplicas": 2, "pollIntervalSeconds": 1},
        )

    cluster.apply(manifest(paused=True), "-n", namespace)
    eventually(
        lambda: (status(cluster, namespace, name).get("nats") or {}).get("scheduleSubjectPrefix"),
        what="the pool's streams, task-state bucket and schedules",
    )
    subject = f"tasks.{namespace}.{name}.job"
    cli = lambda *argv: jetpool(nats_endpoint, namespace, name, *argv)  # noqa: E731
    run = uuid.uuid4().hex[:6]
    ids = {kind: f"{kind}-{run}" for kind in ("ok", "fails", "queued", "expires", "running")}

    async def publish(kind: str, data: dict[str, Any], *extra: str) -> None:
        report = await cli(
            "publish", subject, "--data", json.dumps(data), "--id", ids[kind], *extra
        )
        assert report["published"] == 1, report

    # while paused (no workers): queue them, cancel one, let one expire
    await publish("ok", {"return": {"answer": 42}})
    await publish("fails", {"raise": "boom"})
    await publish("queued", {"return": "never"})
    await publish("expires", {"return": "late"}, "--ttl", "1")
    assert await phase(nats_endpoint, namespace, name, ids["ok"]) == "queued"
    [cancelled] = await cli("task", "cancel", ids["queued"])
    assert cancelled["outcome"] == "requested"
    await asyncio.sleep(1.5)

    cluster.apply(manifest(paused=False), "-n", namespace)
    await publish("running", {"sleep": 120})

    async def reaches(task_id: str, want: str) -> bool:
        return await phase(nats_endpoint, namespace, name, task_id) == want

    await wait_until(lambda: reaches(ids["running"], "running"), 120, "the long task running")
    [told] = await cli("task", "cancel", ids["running"])
    assert told["outcome"] == "requested"

    delayed = f"delayed-{run}"
    published_at = time.monotonic()
    report = await cli(
        "publish",
        subject,
        "--data",
        json.dumps({"return": "later"}),
        "--id",
        delayed,
        "--delay",
        "2s",
    )
    assert report["published"] == 1
    assert await phase(nats_endpoint, namespace, name, delayed) == "scheduled"

    expected = {
        ids["ok"]: ("succeeded", (1, "returned")),
        ids["fails"]: ("dead_lettered", (2, "raised")),
        ids["queued"]: ("cancelled", (0, None)),
        ids["expires"]: ("expired", (0, None)),
        ids["running"]: ("cancelled", (1, "cancelled")),
        delayed: ("succeeded", (1, "returned")),
    }
    for task_id, (want, _) in expected.items():
        await wait_until(lambda t=task_id, w=want: reaches(t, w), 60, f"{task_id} {want}")
    released_after = time.monotonic() - published_at
    assert released_after >= 2.0

    states = {s["id"]: s for s in await cli("task", "status", *expected)}
    for task_id, (want, (runs, end)) in expected.items():
        assert states[task_id]["phase"] == want
        assert await ledger(record, task_id) == (runs, end), task_id
        assert states[task_id]["runs"] == runs, states[task_id]
    assert (await cli("task", "result", ids["ok"])) == {"ok": True, "value": {"answer": 42}}
    assert (await cli("task", "result", delayed))["value"] == "later"
    failed = await cli("task", "result", ids["fails"])
    assert failed["ok"] is False
    assert failed["error"]["message"] == "boom"
    assert states[ids["expires"]]["error"]["type"] == "ExpiredTask"
    assert await cli("schedule", "list") == []


async def explain_unsettled(
    client: Client,
    nc: Any,
    pool_status: dict[str, Any],
    ids: list[str],
    record: KeyValue,
    runner: PodRunner | None,
    pods: str,
) -> None:
    """Print what a timed-out wait left behind: each unsettled task's state and ledger, the
    consumer's view (a task held by a killed worker waits out the ack wait), and how each
    worker process stopped."""
    unsettled = 0
    for task_id in ids:
        state = await client.status(task_id)
        if state is None or not state.phase.final:
            unsettled += 1
            if unsettled <= 10:
                print("unsettled", task_id, state, await ledger(record, task_id))
    print("unsettled in all", unsettled)
    nats = pool_status.get("nats", {})
    info = await nc.jetstream().consumer_info(nats.get("stream"), nats.get("consumer"))
    print("consumer", info.num_ack_pending, info.num_pending, info.num_redelivered)
    print("breaker", pool_status.get("circuitBreaker"))
    for log_file in sorted(runner.workdir.glob(f"{pods}-*/output.log")) if runner else []:
        lines = log_file.read_text(errors="replace").splitlines()
        notable = [line for line in lines if "WARNING" in line or "ERROR" in line]
        print(log_file.parent.name, *notable[-10:], *lines[-3:], sep="\n  ")


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(420)
async def test_workers_scaled_down_and_restarted_mid_burst_never_use_up_an_attempt_unrun(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    record: KeyValue,
    pod_runner: PodRunner | None,
) -> None:
    name = "steady"

    def manifest(replicas: int) -> dict[str, Any]:
        return lifecycle_pool(
            name,
            nats_endpoint,
            namespace,
            concurrency=4,
            shutdownGraceSeconds=2,
            scaling={"minReplicas": replicas, "maxReplicas": replicas, "pollIntervalSeconds": 1},
            # Every task fails its first run: a 50 % error rate that rightly trips the breaker,
            # and each half-open trial (a fresh task, so a first run) fails again, keeping it
            # open (a CI run did just that). Runs are what this test is about.
            circuitBreaker={"enabled": False},
        )

    cluster.apply(manifest(3), "-n", namespace)
    eventually(
        lambda: (status(cluster, namespace, name).get("readyReplicas") or 0) >= 3,
        timeout=120,
        what="three workers",
    )
    nc = await nats_endpoint.connect()
    client = Client(nc, namespace=namespace, pool=name)
    handles = await client.publish_batch(
        [{"fail_once": True, "sleep": 0.05} for _ in range(400)],
        subject=f"tasks.{namespace}.{name}.job",
    )
    ids = [h.id for h in handles]
    # scale down and back up, and restart workers, while the burst drains
    for step in range(6):
        cluster.apply(manifest(1 if step % 2 == 0 else 3), "-n", namespace)
        pods = cluster.get_json(
            "pods", "-n", namespace, "-l", "app.kubernetes.io/name=jetpool-worker"
        )["items"]
        if pods:
            cluster.kubectl(  # (the scale-down may have removed it already)
                "delete",
                "pod",
                pods[0]["metadata"]["name"],
                "-n",
                namespace,
                "--wait=false",
                check=False,
            )
        await asyncio.sleep(2)
    cluster.apply(manifest(3), "-n", namespace)

    async def final_states() -> dict[str, Any]:
        states = await asyncio.gather(*(client.status(i) for i in ids))
        return {i: s for i, s in zip(ids, states, strict=True) if s is not None and s.phase.final}

    async def settled() -> bool:
        return len(await final_states()) == len(ids)

    try:
        await wait_until(settled, 240, "every task succeeded or dead-lettered")
    except AssertionError:
        pool_status = status(cluster, namespace, name)
        pods = f"{namespace}-{name}"  # the pod runner's directory of each of the pool's pods
        await explain_unsettled(client, nc, pool_status, ids, record, pod_runner, pods)
        raise
    finals = await final_states()
    dlq = status(cluster, namespace, name)["nats"]["deadLetterStream"]
    records: list[DeadLetterRecord] = []
    info = await nc.jetstream().stream_info(dlq)
    for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
        if info.state.messages:
            msg = await nc.jetstream().get_msg(dlq, seq)
            records.append(DeadLetterRecord.model_validate_json(msg.data or b""))
    ran_too_little = [
        (r.task_id, r.attempts, (await ledger(record, r.task_id))[0])
        for r in records
        if (await ledger(record, r.task_id))[0] < 2
    ]
    assert ran_too_little == [], "dead-lettered before the handler ran twice"
    for task_id, state in finals.items():
        runs, _ = await ledger(record, task_id)
        assert state.runs <= runs, (task_id, state.runs, runs)  # never more runs than ran
    handed_back = sum(1 for s in finals.values() if s.deliveries > s.runs)
    succeeded = sum(1 for s in finals.values() if s.phase is TaskPhase.SUCCEEDED)
    print(
        json.dumps(
            {
                "tasks": len(ids),
                "succeeded": succeeded,
                "dead_lettered": len(records),
                "deliveries_beyond_runs": handed_back,
            }
        )
    )
    await nc.close()
