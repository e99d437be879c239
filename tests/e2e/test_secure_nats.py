"""Pools on an authenticated, encrypted NATS: a credentials Secret and a CA Secret.

Locally the NATS is the secure test server (TLS required, JWT accounts per tenant, JetStream
through the account limits; ``tests/conftest.py``); on kind, the in-cluster NATS secured the
same way (``e2e/kind/secure_nats.py``). The operator reads both Secrets; each worker gets them
mounted as files. Completions are counted from the handlers' own KV record, in the tenant's
account, through the same credentials.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.nats_auth import issue_user
from e2e.testbed.operator_process import OperatorProcess
from e2e.testbed.pod_runner import PodRunner
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import SECRETS_DIR, PoolRef, worker_settings
from jetpool_protocol.permissions import worker_permissions
from tests.e2e.conftest import (
    CA_SECRET,
    CREDS_SECRET,
    PROVIDER,
    NatsEndpoint,
    condition,
    pool_manifest,
    secret,
    wait_for_condition,
)
from tests.e2e.test_scaling_and_breaker import (
    done,
    publish,
    running_workers,
    status,
    wait_until,
    worker_pool,
)

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]


def worker_container(cluster: Cluster, namespace: str, pool: str) -> dict[str, Any]:
    dep = cluster.get_json("deployment", f"{pool}-worker", "-n", namespace)
    return dict(dep["spec"]["template"]["spec"]["containers"][0])


async def test_a_pool_with_a_credentials_secret_and_a_ca_runs_every_task_once_and_scales(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess | None,
    secure_nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    secure_record: KeyValue,
) -> None:
    endpoint = secure_nats_endpoint
    endpoint.install_secrets(cluster, namespace)
    manifest = worker_pool(
        "sealed",
        endpoint.pod_url,
        f"e2e-{namespace}",
        concurrency=4,
        scaling={
            "minReplicas": 0,
            "maxReplicas": 3,
            "targetBacklogPerReplica": 25,
            "scaleDownDelaySeconds": 5,
            "scaleToZeroDelaySeconds": 5,
        },
    )
    assert manifest["spec"]["nats"] == {
        "url": endpoint.pod_url,
        "credentialsSecret": {"name": CREDS_SECRET},
        "tls": {"ca": {"name": CA_SECRET, "key": "ca.crt"}},
    }
    cluster.apply(manifest, "-n", namespace)
    pool = wait_for_condition(cluster, namespace, "sealed", "NatsReady", "True")
    assert condition(pool, "NatsReady")["reason"] == "StreamsReady"  # type: ignore[index]

    # The workers get both Secrets as files and the env that points at them.
    container = worker_container(cluster, namespace, "sealed")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JETPOOL_NATS_CREDENTIALS_FILE"] == f"{SECRETS_DIR}/nats.creds"
    assert env["JETPOOL_NATS_TLS_CA_FILE"] == f"{SECRETS_DIR}/nats-ca.crt"

    eventually(
        lambda: status(cluster, namespace, "sealed").get("desiredReplicas") == 0,
        what="an idle pool at zero replicas",
    )
    ids = [f"sealed-{i}" for i in range(150)]
    await publish(endpoint, f"tasks.{namespace}.sealed.job", ids, {"sleep": 0.05})
    peak = eventually(
        lambda: (
            (status(cluster, namespace, "sealed").get("desiredReplicas") or 0) >= 2
            and status(cluster, namespace, "sealed")["desiredReplicas"]
        ),
        timeout=30,
        what="replicas rising",
    )
    assert peak >= 2

    async def all_done() -> bool:
        return await done(secure_record) == set(ids)

    await wait_until(all_done, 120, "every task done")
    eventually(
        lambda: (
            status(cluster, namespace, "sealed").get("desiredReplicas") == 0
            and running_workers(cluster, namespace, pod_runner) == 0
        ),
        timeout=60,
        what="drained and scaled back to zero",
    )
    assert not await done(secure_record, "again."), "a task ran twice"
    if pod_runner is not None:  # every worker connected, drained and exited cleanly
        exits = [(pod, code) for pod, code in pod_runner.exited if pod.startswith("sealed-")]
        assert exits, "no worker process ran"
        assert all(code == 0 for _, code in exits), exits
    assert status(cluster, namespace, "sealed")["backlog"] == 0
    if operator is not None:
        assert operator.process is not None
        assert operator.process.poll() is None


def seed_only(endpoint: NatsEndpoint) -> str:
    assert endpoint.creds_file is not None
    text = endpoint.creds_file.read_text()
    return text[text.index("-----BEGIN USER NKEY SEED-----") :]


async def test_a_wrong_credentials_secret_is_a_condition_and_the_other_pools_keep_working(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess | None,
    secure_nats_endpoint: NatsEndpoint,
    secure_record: KeyValue,
) -> None:
    endpoint = secure_nats_endpoint
    endpoint.install_secrets(cluster, namespace)
    bad = {
        "garbage": ("user: admin\npassword: hunter2\n", "not a NATS credentials (.creds) file"),
        "seed-only": (seed_only(endpoint), "no '-----BEGIN NATS USER JWT-----' block"),
    }
    for name, (content, _) in bad.items():
        cluster.apply(secret(f"{name}-creds", {"nats.creds": content}), "-n", namespace)
        cluster.apply(
            pool_manifest(
                name,
                endpoint.pod_url,
                nats={"credentialsSecret": {"name": f"{name}-creds"}},
                scaling={"minReplicas": 0},
            ),
            "-n",
            namespace,
        )
    cluster.apply(
        worker_pool("healthy", endpoint.pod_url, f"e2e-{namespace}", scaling={"minReplicas": 1}),
        "-n",
        namespace,
    )

    started = time.monotonic()
    for name, (_, problem) in bad.items():
        pool = wait_for_condition(cluster, namespace, name, "NatsReady", "False", timeout=30)
        nats_ready = condition(pool, "NatsReady")
        assert nats_ready is not None
        assert nats_ready["reason"] == "InvalidCredentials"
        assert nats_ready["message"].startswith(f"Secret '{name}-creds' key 'nats.creds': ")
        assert problem in nats_ready["message"]
        assert condition(pool, "Ready")["status"] == "False"  # type: ignore[index]
        events = cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}"
        )
        assert "InvalidCredentials" in events
    assert time.monotonic() - started < 30, "the condition took too long: a hang?"
    seed = seed_only(endpoint).splitlines()[1]
    assert seed not in str(cluster.get_json("workerpools", "-n", namespace))

    # The operator's other pool, in the same namespace, keeps working.
    wait_for_condition(cluster, namespace, "healthy", "Ready", "True", timeout=60)
    ids = [f"healthy-{i}" for i in range(30)]
    await publish(endpoint, f"tasks.{namespace}.healthy.job", ids, {})

    async def all_done() -> bool:
        return await done(secure_record) == set(ids)

    await wait_until(all_done, 60, "the healthy pool's tasks done")
    if operator is not None:
        assert operator.process is not None
        assert operator.process.poll() is None

    # Fixed, the Secret is read again on the next tick (invalid ones are never cached).
    assert endpoint.creds_file is not None
    good = endpoint.creds_file.read_text()
    cluster.apply(secret("garbage-creds", {"nats.creds": good}), "-n", namespace)
    wait_for_condition(cluster, namespace, "garbage", "NatsReady", "True", timeout=30)
    assert (
        condition(cluster.get_json("workerpool", "seed-only", "-n", namespace), "NatsReady")[
            "reason"
        ]
        == "InvalidCredentials"
    )  # type: ignore[index]


def ledger_permissions(bucket: str) -> dict[str, list[str]]:
    """What the e2e handler itself needs on top of the pool's set: its KV ledger, only."""
    kv = f"KV_{bucket}"
    return {
        "pub": [
            f"$JS.API.STREAM.INFO.{kv}",
            f"$JS.API.STREAM.MSG.GET.{kv}",
            f"$JS.API.DIRECT.GET.{kv}.>",
            f"$KV.{bucket}.>",
        ],
        "sub": [],
    }


async def test_workers_with_their_own_restricted_user_run_every_task_without_the_operators_secret(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess | None,
    secure_nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    secure_record: KeyValue,
    request: pytest.FixtureRequest,
) -> None:
    if PROVIDER != "local":
        pytest.skip("issues a NATS user with the local test bed's account keys")
    endpoint, auth = secure_nats_endpoint, request.getfixturevalue("nats_auth")
    endpoint.install_secrets(cluster, namespace)
    bucket = f"e2e-{namespace}"
    manifest = worker_pool(
        "apart",
        endpoint.pod_url,
        bucket,
        nats={"workerCredentialsSecret": {"name": "apart-worker-creds"}},
        scaling={"minReplicas": 1, "maxReplicas": 2},
    )
    settings = worker_settings(
        PoolRef("apart", namespace, ""), WorkerPoolSpec.model_validate(manifest["spec"])
    )
    pool_set = worker_permissions(settings)
    ledger = ledger_permissions(bucket)
    user = issue_user(
        auth.directory,
        auth.account("tenant-a"),
        f"apart-{namespace}",
        permissions={
            "pub": {"allow": [*pool_set.publish, *ledger["pub"]]},
            "sub": {"allow": list(pool_set.subscribe)},
        },
    )
    cluster.apply(secret("apart-worker-creds", {"nats.creds": user.creds}), "-n", namespace)
    cluster.apply(manifest, "-n", namespace)
    wait_for_condition(cluster, namespace, "apart", "Ready", "True", timeout=60)

    # The pod spec names the workers' Secret and never the operator's.
    pod = cluster.get_json("deployment", "apart-worker", "-n", namespace)["spec"]["template"]
    assert CREDS_SECRET not in json.dumps(pod)
    secrets = {
        source["secret"]["name"]
        for volume in pod["spec"]["volumes"]
        for source in (volume.get("projected") or {}).get("sources", [])
    }
    assert secrets == {"apart-worker-creds", CA_SECRET}

    ids = [f"apart-{i}" for i in range(60)]
    await publish(endpoint, f"tasks.{namespace}.apart.job", ids, {})

    async def all_done() -> bool:
        return await done(secure_record) == set(ids)

    await wait_until(all_done, 90, "every task done by the restricted workers")
    assert not await done(secure_record, "again."), "a task ran twice"
    eventually(
        lambda: status(cluster, namespace, "apart").get("backlog") == 0,
        timeout=30,
        what="the operator reading an empty backlog",
    )
    if pod_runner is not None:
        assert pod_runner.running_pods(namespace), "no restricted worker is running"


async def test_a_broken_worker_credentials_secret_is_a_condition_naming_it(
    cluster: Cluster, namespace: str, secure_nats_endpoint: NatsEndpoint
) -> None:
    endpoint = secure_nats_endpoint
    endpoint.install_secrets(cluster, namespace)
    cluster.apply(secret("torn", {"w.creds": "user: admin\n"}), "-n", namespace)
    cluster.apply(
        pool_manifest(
            "torn",
            endpoint.pod_url,
            nats={"workerCredentialsSecret": {"name": "torn", "key": "w.creds"}},
            scaling={"minReplicas": 0},
        ),
        "-n",
        namespace,
    )
    pool = wait_for_condition(cluster, namespace, "torn", "NatsReady", "False", timeout=30)
    nats_ready = condition(pool, "NatsReady")
    assert nats_ready is not None
    assert nats_ready["reason"] == "InvalidCredentials"
    assert nats_ready["message"].startswith("Secret 'torn' key 'w.creds': ")
