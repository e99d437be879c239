"""The kopf layer: translate kopf's callbacks into calls of the controller. Nothing else.

* one daemon per WorkerPool runs its control loop (:func:`jetpool_operator.controller.reconcile`);
* worker Deployments are indexed in memory, so a tick reads them without an API call, and
  their changes (an edit, a deletion) wake the owning pool's loop at once;
* a spec change or a breaker-reset annotation wakes the loop too;
* deletion: children go by owner references; streams only with ``deletionPolicy: Delete``;
* sharding: with a shard selector the API server filters the WorkerPool watch, so every
  WorkerPool handler here (event, daemon, deletion) sees only the pools of this operator's
  shard; a pool relabelled out of it reaches us as a DELETED event and its loop stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
import nats.errors

from jetpool_operator import metrics, tracing
from jetpool_operator.adapters.kube import GROUP, PLURAL, VERSION, KubeAdapter
from jetpool_operator.adapters.nats import delete_streams
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.controller import (
    RESET_BREAKER_ANNOTATION,
    CredentialsError,
    OperatorRuntime,
    connection_key,
    reconcile,
)
from jetpool_operator.core.children import LABEL_MANAGED_BY, MANAGER
from jetpool_operator.core.control_bucket import control_replicas_from_env
from jetpool_operator.core.nats_resources import resolve_names
from jetpool_operator.core.network_errors import summarize_nats_failure
from jetpool_operator.core.observation import ObservationMode
from jetpool_operator.core.pod_template_policy import allowances_from_env
from jetpool_operator.core.tenancy import Owner, SubjectGrants
from jetpool_operator.main import (
    DEFAULT_PEERING_LIFETIME,
    PEERING_LIFETIME_ENV,
    SHARD_SELECTOR_ENV,
    label_selector,
    peering_lifetime,
)
from jetpool_operator.memory import return_freed_memory
from jetpool_protocol.naming import KV_STREAM_PREFIX, PoolNames

log = logging.getLogger(__name__)


def _namespaced(namespace: str | None) -> str:
    """kopf types ``namespace`` as optional; WorkerPools and Deployments always have one."""
    if namespace is None:
        raise kopf.PermanentError("cluster-scoped object where a namespaced one was expected")
    return namespace


PREFIX = "jetpool.dev"
WORKER_DEPLOYMENTS = {LABEL_MANAGED_BY: MANAGER}
ERROR_RETRY_SECONDS = 5.0


@kopf.on.startup()
async def configure(*, settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own bookkeeping goes to annotations under our prefix; status is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # Survive idle or half-dead watch connections (kopf also reconnects on inactivity).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.reconnect_backoff = 1.0
    settings.posting.reporting_component = "jetpool-operator"
    # Set by `jetpool-operator` from its flags; under a bare `kopf run`, from the environment.
    allowances = memo.get("allowances") or allowances_from_env(os.environ)
    grants = memo.get("subject_grants") or SubjectGrants.from_env(os.environ)
    observation = memo.get("observation") or ObservationMode.from_env(os.environ)
    control_replicas = memo.get("control_replicas") or control_replicas_from_env(os.environ)
    selector = memo.get("shard_selector")
    if selector is None:
        selector = label_selector(os.environ.get(SHARD_SELECTOR_ENV, ""))
    lifetime = memo.get("peering_lifetime") or peering_lifetime(
        os.environ.get(PEERING_LIFETIME_ENV, str(DEFAULT_PEERING_LIFETIME))
    )
    # Sharding by labels: the API server filters the WorkerPool list and watch, so pools of
    # other shards never reach this process (no event, no daemon, no finalizer, no status).
    # kopf's handler filters (labels=, when=) would not do: every shard would still receive
    # every pool, and the shard a pool left would remove the finalizer the new one adds.
    if selector:
        settings.watching.label_selectors[GROUP, VERSION, PLURAL] = selector
    # Peering: a standby takes over once the active replica's keep-alive is `lifetime` old
    # (kopf: 60 s). kopf renews it every max(1, lifetime - 5..10) s, so a SIGKILLed active is
    # replaced within about `lifetime` s (bench/operator_failover.py); keep-alives go unlogged.
    settings.peering.lifetime = lifetime
    settings.peering.stealth = True
    memo.loops = {}  # pool uid -> the Event that releases its running control loop
    memo.memory_trimmer = asyncio.create_task(return_freed_memory(), name="malloc_trim")
    memo.runtime = OperatorRuntime(
        await asyncio.to_thread(KubeAdapter),
        allowances=allowances,
        subject_grants=grants,
        observation_mode=observation,
        control_replicas=control_replicas,
    )


@kopf.on.cleanup()
async def close(*, memo: kopf.Memo, **_: Any) -> None:
    memo.memory_trimmer.cancel()
    await memo.runtime.close()


def _owning_pool(body: kopf.Body) -> str | None:
    """The WorkerPool named in the controller owner reference (labels may be shortened)."""
    for owner in body.metadata.get("ownerReferences") or []:
        if owner.get("kind") == "WorkerPool" and owner.get("controller"):
            return str(owner["name"])
    return None


@kopf.index("apps", "v1", "deployments", labels=WORKER_DEPLOYMENTS)
def worker_deployments(
    *, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]] | None:
    """(namespace, pool) -> the fields of the Deployment the control loop compares."""
    pool = _owning_pool(body)
    if pool is None:
        return None
    return {
        (_namespaced(namespace), pool): {
            "metadata": {
                "generation": body.metadata.get("generation"),
                "annotations": dict(body.metadata.annotations),
            },
            "spec": {"replicas": body.spec.get("replicas")},
            "status": dict(body.status),
        }
    }


# Event handlers are async on purpose: kopf runs sync ones in a thread, where setting an
# asyncio.Event is not safe and would not wake the loop.
@kopf.on.event("apps", "v1", "deployments", labels=WORKER_DEPLOYMENTS)
async def worker_deployment_changed(
    *, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    pool = _owning_pool(body)
    if pool is not None:
        memo.runtime.wake(_namespaced(namespace), pool)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def pool_changed(
    *,
    type: str | None,
    namespace: str | None,
    name: str,
    uid: str | None,
    meta: kopf.Meta,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Wake the loop for what the user changed (spec, reset annotation), not for our status.

    A DELETED event while the pool's loop still runs means the pool left this operator's view
    without being deleted: relabelled out of its shard (the API server reports a watched object
    that stops matching the label selector as DELETED, with its old labels) or its finalizer
    removed by hand. kopf forgets the object but keeps its daemon running, so release it here;
    the shard the pool moved to starts its own loop. (A deleted pool's loop stopped earlier.)
    """
    if type == "DELETED":
        released = memo.loops.get(uid)
        if released is not None:
            log.info(
                "%s/%s left this operator's view (no longer matches --shard-selector?): "
                "its control loop stops",
                namespace,
                name,
            )
            released.set()
        return
    runtime: OperatorRuntime = memo.runtime
    pool = runtime.pool(_namespaced(namespace), name)
    if pool is None or meta.get("deletionTimestamp"):
        return  # no loop yet (it ticks first thing when it starts), or the pool is going away
    marker = (meta.get("generation"), meta.annotations.get(RESET_BREAKER_ANNOTATION))
    if pool.seen != marker:
        pool.seen = marker
        pool.wake.set()


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)
async def control_loop(
    *,
    namespace: str | None,
    name: str,
    uid: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    deployments: kopf.Index[tuple[str, str], dict[str, Any]] = kwargs["worker_deployments"]
    runtime: OperatorRuntime = memo.runtime
    namespace = _namespaced(namespace)
    pool = runtime.start_pool(namespace, name)
    released = memo.loops[uid] = asyncio.Event()  # set when the pool leaves this shard

    def post_event(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message[:1024])

    try:
        while not stopped and not released.is_set():
            interval = ERROR_RETRY_SECONDS
            pool.wake.clear()  # before the tick: a change arriving during it wakes the next one
            with metrics.RECONCILE_SECONDS.time():
                try:
                    with tracing.reconcile_span(namespace, name) as span:
                        store = deployments.get((namespace, name))
                        deployment = next(iter(store), None) if store is not None else None
                        result = await reconcile(runtime, pool, body, deployment, post_event)
                        interval = result.interval_seconds
                        tracing.record_tick(
                            span, result.status, patched=result.patched, next_tick_seconds=interval
                        )
                    metrics.count(metrics.RECONCILES, namespace, name, "ok")
                except Exception:  # one pool's bug must not stop its loop or any other pool
                    log.exception("control loop tick failed for %s/%s", namespace, name)
                    metrics.count(metrics.RECONCILES, namespace, name, "error")
            await _sleep_or_wake(pool.wake, stopped, released, interval)
    finally:
        if memo.loops.get(uid) is released:
            del memo.loops[uid]
        await runtime.stop_pool(pool)


async def _sleep_or_wake(
    wake: asyncio.Event, stopped: kopf.DaemonStopped, released: asyncio.Event, seconds: float
) -> None:
    waiters = [
        asyncio.ensure_future(wake.wait()),
        asyncio.ensure_future(stopped.wait()),
        asyncio.ensure_future(released.wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


@kopf.on.delete(
    GROUP,
    VERSION,
    PLURAL,
    when=lambda spec, **_: spec.get("deletionPolicy") == "Delete",
    retries=30,
    timeout=600,
)
async def delete_pool_streams(
    *,
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    uid: str | None,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """deletionPolicy Delete: remove the task and dead-letter streams with their messages,
    only those whose metadata names this pool (UID included); others are kept and logged.

    Retried while NATS is unreachable (at most 30 times / 10 minutes); a spec or Secret that
    can never work fails permanently, so the pool (and its namespace) is never stuck deleting.
    """
    runtime: OperatorRuntime = memo.runtime
    namespace = _namespaced(namespace)
    try:
        parsed = WorkerPoolSpec.model_validate(dict(spec))
        key = await connection_key(runtime, namespace, parsed)
    except (ValueError, CredentialsError) as exc:
        raise kopf.PermanentError(f"cannot delete the pool's streams: {exc}") from exc
    recorded = (status.get("nats") or {}).get("stream")
    names = resolve_names(namespace, name, parsed, recorded)
    try:
        async with runtime.nats.in_use((namespace, name), key):
            result = await delete_streams(
                await runtime.nats.get(key),
                [
                    names.stream,
                    names.dead_letter_stream,
                    KV_STREAM_PREFIX + PoolNames(namespace, name).task_state_bucket,
                    PoolNames(namespace, name).rate_limit_stream,
                    KV_STREAM_PREFIX + PoolNames(namespace, name).key_lease_bucket,
                ],
                Owner(namespace, name, uid or ""),
            )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        # kopf posts this as an Event the tenant reads: summarized, never the raw socket error.
        summary = summarize_nats_failure(parsed.nats.url, exc)
        raise kopf.TemporaryError(
            f"cannot reach NATS to delete streams: {summary}", delay=10
        ) from exc
    log.info("deleted streams %s of %s/%s", result.deleted, namespace, name)
    for kept in result.kept:
        log.warning("%s/%s: %s", namespace, name, kept)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget_pool(
    *, namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    """Best effort: drop the pool's control key (workers are gone with the Deployment)."""
    runtime: OperatorRuntime = memo.runtime
    namespace = _namespaced(namespace)
    try:
        parsed = WorkerPoolSpec.model_validate(dict(spec))
        key = await connection_key(runtime, namespace, parsed)
        async with runtime.nats.in_use((namespace, name), key):
            await runtime.nats.delete_control(
                key, resolve_names(namespace, name, parsed).control_key
            )
    except Exception as exc:  # the pool is gone either way
        log.info("could not remove control state of %s/%s: %s", namespace, name, exc)
