"""One pool's control loop: observe, decide with the pure core, act through the adapters.

Level-based: every tick recomputes everything from what it observes (the WorkerPool, its
Deployment, the consumer's backlog, the workers' stats). What must survive an operator
restart — the breaker's state and trips, when health issues began — lives in the pool's
status; what is cheap to rebuild (the stats window, the scale-down memory) lives here and is
seeded conservatively after a restart (no scale-down until the stabilization window passed).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from nats.errors import Error as NatsError
from pydantic import ValidationError

from jetpool_operator import metrics
from jetpool_operator.adapters.kube import KubeAdapter, MissingSecret
from jetpool_operator.adapters.nats import (
    ConnectionKey,
    ConsumerBacklog,
    InvalidTlsMaterial,
    NatsConnections,
    NotOwner,
    ResourceConflict,
    StrandedTaskTarget,
    ensure_plan,
    sweep_stranded_tasks,
)
from jetpool_operator.api.v1alpha1 import (
    Condition,
    ConditionStatus,
    SecretKeyRef,
    WorkerPoolSpec,
)
from jetpool_operator.core import (
    autoscaler,
    circuit_breaker,
    control_bucket,
    health,
    lanes,
    nats_resources,
    observation,
    stranded,
    tenancy,
    worker_signals,
)
from jetpool_operator.core.child_ownership import child_conflict
from jetpool_operator.core.children import (
    INPUT_HASH_ANNOTATION,
    PoolRef,
    build_children,
    selector_string,
)
from jetpool_operator.core.conditions import ConditionType, Reason, set_condition
from jetpool_operator.core.network_errors import summarize_nats_failure
from jetpool_operator.core.observation import ObservationMode
from jetpool_operator.core.pod_template_policy import TemplateAllowances, template_refusal
from jetpool_operator.core.status_patch import status_patch, without_nulls
from jetpool_operator.core.worker_stats import PoolStats, StatsConfig, StatsMemory, aggregate
from jetpool_operator.observer import StreamObserver
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.credentials import CredentialsError as InvalidCredentials
from jetpool_protocol.credentials import parse_credentials
from jetpool_protocol.stats import WorkerStats

log = logging.getLogger(__name__)

RESET_BREAKER_ANNOTATION = "jetpool.dev/reset-breaker"
"""Set to any new value (e.g. a timestamp) to close an Open breaker by hand."""
NATS_RECHECK_SECONDS = 30.0
"""Streams and consumer are re-verified this often even when the spec did not change."""
CONTROL_REPUBLISH_SECONDS = 30.0
CHILDREN_RECHECK_SECONDS = 60.0
SECRET_CACHE_SECONDS = 60.0
STATUS_VOLATILE_SECONDS = 2.0
"""Counters that move with every task are written at most this often; anything else at once."""
MAX_MESSAGE = 4096
NATS_TICK_TIMEOUT_SECONDS = 8.0
"""Upper bound on one tick's NATS work, so a hung server cannot stall the loop."""
NATS_ERRORS = (NatsError, OSError, asyncio.TimeoutError)

EventSink = Callable[[str, str, str], None]
"""(type, reason, message) -> posts a Kubernetes Event on the pool."""


@dataclass(frozen=True, slots=True)
class AppliedChild:
    input_hash: str
    version: str
    """:func:`_version` as the apiserver answered our apply: a recheck that reads the same
    knows nobody changed the object since, and writes nothing."""
    checked_at: float
    """Monotonic time of the last apply or recheck."""


@dataclass
class PoolRuntime:
    """In-memory state of one pool's loop (rebuilt after a restart)."""

    namespace: str
    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    snapshots: dict[str, WorkerStats] = field(default_factory=dict)
    stats_memory: StatsMemory = field(default_factory=StatsMemory)
    scaler_memory: autoscaler.ScalerMemory | None = None
    health_memory: health.HealthMemory | None = None
    breaker: circuit_breaker.Breaker | None = None
    published_control: ControlState | None = None
    control_published_at: float = 0.0
    nats_plan: nats_resources.NatsPlan | None = None
    nats_checked_at: float = 0.0
    nats_problem: tuple[str, str] | None = None
    """(reason, message) of the last NATS failure, None when NATS is fine."""
    applied_children: dict[str, AppliedChild] = field(default_factory=dict)
    """kind -> what the last apply of each non-Deployment child left behind."""
    deployment_generation: int | None = None
    """metadata.generation right after our last Deployment apply: anything else is drift."""
    seen: tuple[Any, ...] | None = None
    """(generation, reset annotation) last seen by the handlers, to wake only on user changes."""
    connection_key: ConnectionKey | None = None
    stats_subject: str | None = None
    """Stats are credited to this pool only from this connection and subject (no spoofing)."""
    applied_replicas: int | None = None
    """Replicas of the last successful Deployment apply (scale events fire on real changes)."""
    last_status: dict[str, Any] | None = None
    """The status this loop last wrote: fresher than the live body right after a patch."""
    last_patch_at: float = 0.0
    stranded_watch: tuple[ConnectionKey, StrandedTaskTarget] | None = None
    """(connection, target) of the max-deliveries advisory watch."""
    stranded_swept_at: float = -math.inf
    """Monotonic time of the last sweep for stranded tasks (the first tick sweeps)."""
    streams_changed: bool = False
    """The listing saw the pool's streams change since this tick read them: a tick that read
    them before a first task arrived must not put the pool to sleep."""
    quiescent: bool = False
    """The last tick found nothing to do (:func:`~jetpool_operator.core.observation.quiescent`):
    the loop sleeps long and periodic rechecks slow down, until something wakes it."""

    def recheck_after(self, seconds: float) -> float:
        """A periodic recheck's interval: ``seconds``, or the long one while quiescent."""
        return observation.QUIESCENT_RECHECK_SECONDS if self.quiescent else seconds

    def stop_stranded_watch(self, connections: NatsConnections) -> None:
        if self.stranded_watch is not None:
            connections.unwatch_stranded(*self.stranded_watch)
            self.stranded_watch = None


@dataclass(frozen=True)
class TickResult:
    status: dict[str, Any]
    patched: bool
    interval_seconds: float


class OperatorRuntime:
    """Everything the handlers share: adapters, every pool's runtime, a Secret cache."""

    def __init__(
        self,
        kube: KubeAdapter,
        clock: Callable[[], datetime] | None = None,
        allowances: TemplateAllowances | None = None,
        subject_grants: tenancy.SubjectGrants = tenancy.NO_GRANTS,
        observation_mode: ObservationMode = ObservationMode.BATCHED,
        control_replicas: int = control_bucket.DEFAULT_CONTROL_REPLICAS,
    ) -> None:
        self.kube = kube
        self.allowances = allowances or TemplateAllowances()
        self.subject_grants = subject_grants
        self.nats = NatsConnections(self._on_stats, control_replicas)
        self.observer: StreamObserver | None = None
        if observation_mode is ObservationMode.BATCHED:
            self.observer = StreamObserver(self.nats, self._wake_quiescent)
        self.pools: dict[tuple[str, str], PoolRuntime] = {}
        self.clock = clock or (lambda: datetime.now(UTC))
        self._secrets: dict[tuple[str, str, str], tuple[float, bytes]] = {}

    def start_pool(self, namespace: str, name: str) -> PoolRuntime:
        """A fresh runtime for a (re)started loop: nothing leaks from a deleted namesake or
        from before a peering pause; what must survive is read back from status."""
        runtime = PoolRuntime(namespace, name)
        self.pools[(namespace, name)] = runtime
        return runtime

    def pool(self, namespace: str, name: str) -> PoolRuntime | None:
        return self.pools.get((namespace, name))

    async def stop_pool(self, runtime: PoolRuntime) -> None:
        """The loop ended (pool deleted, peering pause, shutdown): drop what it held."""
        runtime.stop_stranded_watch(self.nats)
        key = (runtime.namespace, runtime.name)
        if self.pools.get(key) is runtime:
            del self.pools[key]
            if self.observer is not None:
                self.observer.untrack(key)
            metrics.forget_pool(*key)
            await self.nats.release(key)

    def wake(self, namespace: str, name: str) -> None:
        runtime = self.pools.get((namespace, name))
        if runtime is not None:
            runtime.wake.set()

    def _wake_quiescent(self, key: tuple[str, str]) -> None:
        """The observer saw a sleeping pool's streams change (a first task, a purge)."""
        runtime = self.pools.get(key)
        if runtime is not None:
            runtime.streams_changed = True
            if runtime.quiescent:
                runtime.wake.set()

    def _on_stats(self, key: ConnectionKey, subject: str, stats: WorkerStats) -> None:
        runtime = self.pools.get((stats.namespace, stats.pool))
        if (
            runtime is not None
            and runtime.connection_key == key
            and runtime.stats_subject == subject
        ):
            runtime.snapshots[stats.worker] = stats
            if runtime.quiescent and worker_signals.read_signals([stats]):
                # A sleeping pool's worker reports trouble (memory pause, blind to the breaker,
                # overrun threads, not pulling): tick now, so health names it.
                runtime.wake.set()

    async def secret(self, namespace: str, name: str, key: str) -> bytes:
        """A Secret's key, cached briefly: one GET per pool per tick would load the apiserver."""
        cache_key = (namespace, name, key)
        cached = self._secrets.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < SECRET_CACHE_SECONDS:
            return cached[1]
        value = await self.kube.read_secret_key(namespace, name, key)
        self._secrets[cache_key] = (time.monotonic(), value)
        return value

    def forget_secret(self, namespace: str, name: str, key: str) -> None:
        """Drop a cached value, so the next read sees a Secret the user just fixed."""
        self._secrets.pop((namespace, name, key), None)

    async def close(self) -> None:
        if self.observer is not None:
            await self.observer.close()
        await self.nats.close()
        await self.kube.close()


# --- mapping spec -> pure-core configs ---------------------------------------------------------


def scaling_policy(spec: WorkerPoolSpec) -> autoscaler.ScalingPolicy:
    s = spec.scaling
    return autoscaler.ScalingPolicy(
        enabled=s.enabled,
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        target_backlog_per_replica=s.target_backlog_per_replica,
        activation_backlog=s.activation_backlog,
        scale_up_max_step=s.scale_up_max_step,
        scale_up_max_percent=(
            None if s.scale_up_max_percent is None else float(s.scale_up_max_percent)
        ),
        scale_down_delay_seconds=float(s.scale_down_delay_seconds),
        scale_to_zero_delay_seconds=float(s.scale_to_zero_delay_seconds),
        tolerance=s.tolerance,
        max_error_rate_for_scale_up=s.max_error_rate_for_scale_up,
        rate_limit_per_second=spec.rate_limit.per_second if spec.rate_limit else None,
    )


def breaker_config(spec: WorkerPoolSpec) -> circuit_breaker.BreakerConfig:
    c = spec.circuit_breaker
    return circuit_breaker.BreakerConfig(
        enabled=c.enabled,
        error_rate_threshold=c.error_rate_threshold,
        min_tasks=c.min_tasks,
        window_seconds=float(c.window_seconds),
        open_seconds=float(c.open_seconds),
        half_open_tasks=c.half_open_tasks,
    )


def health_config(spec: WorkerPoolSpec) -> health.HealthConfig:
    return health.HealthConfig(task_timeout_seconds=float(spec.task.timeout_seconds))


# --- the tick ----------------------------------------------------------------------------------


class CredentialsError(Exception):
    """A Secret the pool's NATS settings refer to cannot be used.

    ``reason`` is the NatsReady condition reason: NatsError (Secret or key missing or
    unreadable), InvalidCredentials (not a usable .creds file) or InvalidTLS (bad PEM).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_TLS_SECRET_KEYS = {"ca": "ca.crt", "cert": "tls.crt", "key": "tls.key"}


async def _checked_credentials(rt: OperatorRuntime, namespace: str, ref: SecretKeyRef) -> str:
    """The referenced .creds file, parsed before any use: a bad one never reaches nats-py,
    whose reader can spin forever on some malformed files."""
    try:
        raw = await rt.secret(namespace, ref.name, ref.key)
    except (MissingSecret, ApiException) as exc:
        raise CredentialsError(
            Reason.NATS_ERROR, f"credentials: Secret {ref.name!r} key {ref.key!r}: {exc}"
        ) from exc
    try:
        return parse_credentials(raw, now=rt.clock()).render()
    except InvalidCredentials as exc:
        # Not cached: a fixed Secret is picked up on the next tick.
        rt.forget_secret(namespace, ref.name, ref.key)
        raise CredentialsError(
            Reason.INVALID_CREDENTIALS, f"Secret {ref.name!r} key {ref.key!r}: {exc}"
        ) from exc


async def check_worker_credentials(
    rt: OperatorRuntime, namespace: str, spec: WorkerPoolSpec
) -> None:
    """The workers' own .creds file (workerCredentialsSecret) is checked like the operator's,
    so a broken one is a condition on the pool rather than crash-looping workers."""
    ref = spec.nats.worker_credentials_secret
    if ref is not None:
        await _checked_credentials(rt, namespace, ref)


async def connection_key(
    rt: OperatorRuntime, namespace: str, spec: WorkerPoolSpec
) -> ConnectionKey:
    """The pool's NATS connection identity: URL plus checked credentials and TLS material."""

    async def read(name: str, item: str) -> bytes:
        try:
            return await rt.secret(namespace, name, item)
        except (MissingSecret, ApiException) as exc:
            raise CredentialsError(
                Reason.NATS_ERROR, f"credentials: Secret {name!r} key {item!r}: {exc}"
            ) from exc

    async def text(name: str, item: str) -> str:
        try:
            return (await read(name, item)).decode()
        except UnicodeDecodeError as exc:
            rt.forget_secret(namespace, name, item)
            raise CredentialsError(
                Reason.INVALID_TLS, f"Secret {name!r} key {item!r}: not text (PEM expected)"
            ) from exc

    ref = spec.nats.credentials_secret
    credentials = None if ref is None else await _checked_credentials(rt, namespace, ref)

    tls = spec.nats.tls
    refs: dict[str, tuple[str, str]] = {}
    if tls is not None and tls.secret_name is not None:
        refs = {role: (tls.secret_name, item) for role, item in _TLS_SECRET_KEYS.items()}
    elif tls is not None:
        given = {"ca": tls.ca, "cert": tls.cert, "key": tls.key}
        refs = {role: (r.name, r.key) for role, r in given.items() if r is not None}
    material = {role: await text(name, item) for role, (name, item) in refs.items()}
    key = ConnectionKey(
        url=spec.nats.url,
        credentials=credentials,
        tls_ca=material.get("ca"),
        tls_cert=material.get("cert"),
        tls_key=material.get("key"),
    )
    try:
        _check_tls(key)
    except InvalidTlsMaterial as exc:
        name, item = refs[exc.role]
        for secret, secret_key in refs.values():
            rt.forget_secret(namespace, secret, secret_key)
        raise CredentialsError(Reason.INVALID_TLS, f"Secret {name!r} key {item!r}: {exc}") from exc
    return key


@functools.lru_cache(maxsize=256)
def _check_tls(key: ConnectionKey) -> None:
    """Build the TLS context once per distinct material (it parses PEM and writes a temporary
    key file): a tick of every pool must not redo that synchronous work on the event loop.
    A failure raises and so is never cached: a fixed Secret is checked again."""
    key.tls_context()


def _deployment_replicas(deployment: Mapping[str, Any] | None) -> tuple[int | None, int, int]:
    """(spec.replicas, status.replicas, status.readyReplicas) of the observed Deployment."""
    if deployment is None:
        return None, 0, 0
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    return (
        spec.get("replicas"),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
    )


def _round(value: float, digits: int = 3) -> float:
    return round(value, digits)


async def reconcile(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    body: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    post_event: EventSink,
) -> TickResult:
    """One control-loop tick for one pool. Never raises for expected failures."""
    now = rt.clock()
    mono = time.monotonic()
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    # Right after our own patch the live body can trail it; what we wrote is fresher.
    old_status: dict[str, Any] = dict(
        pool.last_status if pool.last_status is not None else body.get("status") or {}
    )
    conditions = [Condition.model_validate(c) for c in old_status.get("conditions") or []]

    def condition(type_: str, ok: bool | ConditionStatus, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(
            conditions,
            type_,
            ok,
            reason=reason,
            message=message[:MAX_MESSAGE],
            observed_generation=generation,
            now=now,
        )

    try:
        spec = WorkerPoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        condition(ConditionType.READY, False, Reason.RECONCILE_FAILED, f"invalid spec: {message}")
        invalid = {**old_status, "observedGeneration": generation}
        invalid["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in conditions]
        return await _write_status(rt, pool, old_status, invalid, 5.0)

    ref = PoolRef(
        name=pool.name,
        namespace=pool.namespace,
        uid=str(meta.get("uid", "")),
        recorded_stream=(old_status.get("nats") or {}).get("stream"),
    )
    plan = nats_resources.plan(
        pool.namespace,
        pool.name,
        spec,
        uid=ref.uid,
        recorded_stream=ref.recorded_stream,
        extra_spaces=rt.subject_grants.extra(pool.namespace),
    )

    # -- NATS: resources and observations ------------------------------------------------------
    observed = await sync_nats(rt, pool, spec, plan, post_event, mono)
    backlog, dead_letters = observed.backlog, observed.dead_letters
    key, problem = observed.key, observed.problem
    # Compare reasons only: the message carries exception text that can vary per tick.
    if (problem and problem[0]) != (pool.nats_problem and pool.nats_problem[0]):
        if problem is not None:
            post_event("Warning", problem[0], problem[1])
            metrics.count(metrics.ERRORS, pool.namespace, pool.name, "nats", problem[0])
        elif pool.nats_problem is not None:
            post_event("Normal", "NatsRecovered", "NATS reachable and resources ready again")
        pool.nats_problem = problem

    # -- stats, breaker, control state ---------------------------------------------------------
    bconfig = breaker_config(spec)
    stats = _step_breaker(pool, spec, bconfig, old_status, meta, now, post_event)
    breaker = pool.breaker
    assert breaker is not None  # set by _step_breaker
    if key is not None and problem is None:
        await _publish_control(rt, pool, key, plan, spec, bconfig, mono)

    # -- scaling ---------------------------------------------------------------------------------
    wanted, replicas_now, ready_now = _deployment_replicas(deployment)
    current = wanted if wanted is not None else int(old_status.get("desiredReplicas") or 0)
    if pool.scaler_memory is None:
        # After a restart: remember the current size as a fresh recommendation, so no
        # scale-down happens before a whole stabilization window has been observed.
        pool.scaler_memory = autoscaler.ScalerMemory(recommendations=((now.timestamp(), current),))
    window_rate = stats.window.error_rate_if(bconfig.min_tasks)
    decision = autoscaler.decide(
        scaling_policy(spec),
        autoscaler.ScalingObservation(
            current_replicas=current,
            ready_replicas=ready_now,
            backlog=None
            if backlog is None
            else lanes.scaling_backlog(backlog.backlog, observed.backlog_by_level, spec),
            in_flight=stats.in_flight,
            error_rate=window_rate,
            breaker=breaker.state,
            # A pool refused by the isolation rules runs no workers against what is not its own.
            paused=spec.paused or observed.refused,
            attempt_rate=stats.window.attempt_rate,
        ),
        pool.scaler_memory,
        now,
    )
    pool.scaler_memory = decision.memory

    # -- children ----------------------------------------------------------------------------------
    children = build_children(ref, spec, decision.replicas)
    children_error: str | None = None
    held: tuple[str, str] | None = None
    try:
        refusal = template_refusal(ref, spec, rt.allowances)
        held = await _apply_children(
            rt, pool, ref, refusal, children.all(), deployment, decision.replicas, mono
        )
    except Exception as exc:  # an API error must not kill the loop; report it instead
        log.exception("applying children of %s/%s failed", pool.namespace, pool.name)
        metrics.count(metrics.ERRORS, pool.namespace, pool.name, "kubernetes", type(exc).__name__)
        children_error = f"applying worker resources failed: {exc}"

    last_scale = (old_status.get("lastScaleTime"), old_status.get("lastScaleReason"))
    if children_error is None and held is None:
        last_scale = _record_scale(pool, decision, current, now, post_event) or last_scale

    # -- health and conditions -----------------------------------------------------------------
    if pool.health_memory is None:
        remembered = (old_status.get("controllerMemory") or {}).get("health")
        pool.health_memory = health.HealthMemory.from_dict(remembered)
    assessed, pool.health_memory = health.assess(
        health.HealthObservation(
            pending=None if backlog is None else backlog.pending,
            desired_replicas=decision.replicas,
            ready_replicas=ready_now,
            in_flight=stats.in_flight,
            oldest_in_flight_seconds=stats.oldest_in_flight_seconds,
            last_progress_at=stats.last_progress_at,
            error_rate=window_rate,
            dead_letters=dead_letters,
            nats_reachable=problem is None or problem[0] != Reason.NATS_UNREACHABLE,
            breaker=breaker.state,
            breaker_since=breaker.since,
            paused=spec.paused,
            workers=stats.signals,
        ),
        pool.health_memory,
        now,
        health_config(spec),
    )

    _pool_conditions(
        condition,
        plan=plan,
        problem=problem,
        readiness=_readiness(spec, problem, children_error or held, decision.replicas, ready_now),
        breaker=breaker,
        breaker_enabled=bconfig.enabled,
        decision=decision,
        assessed=assessed,
        control=None if key is None else rt.nats.control_bucket(key),
    )

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": replicas_now,
        "readyReplicas": ready_now,
        "desiredReplicas": decision.replicas,
        "backlog": None if backlog is None else backlog.pending,
        "inFlight": None if backlog is None else backlog.ack_pending,
        "backlogByLevel": observed.backlog_by_level,
        "redelivered": None if backlog is None else backlog.redelivered,
        "deadLetters": dead_letters,
        "throughput": _round(stats.throughput, 2),
        "errorRate": _round(stats.error_rate),
        "tasks": task_counts(backlog, stats, float(spec.circuit_breaker.window_seconds)),
        "circuitBreaker": breaker.to_dict(),
        "conditions": [c.model_dump(mode="json", by_alias=True) for c in conditions],
        "health": assessed.to_dict(),
        "controllerMemory": {"health": pool.health_memory.to_dict()},
        "lastScaleTime": last_scale[0],
        "lastScaleReason": last_scale[1],
        "selector": selector_string(ref),
        "nats": {
            "stream": plan.names.stream,
            "subjects": list(plan.names.subjects),
            "consumer": plan.names.consumer,
            "deadLetterStream": plan.names.dead_letter_stream,
            "taskStateBucket": plan.names.task_state_bucket,
            "scheduleSubjectPrefix": plan.names.schedule_subject_prefix,
            "rateLimitStream": plan.names.rate_limit_stream,
            "keyLeaseBucket": plan.names.key_lease_bucket,
        },
    }
    _export_metrics(pool, status, breaker.state)
    pool.quiescent = rt.observer is not None and observation.quiescent(
        observation.Activity(
            backlog=None if backlog is None else backlog.backlog,
            in_flight=stats.in_flight,
            desired_replicas=decision.replicas,
            current_replicas=current,
            ready_replicas=ready_now,
            floor_replicas=0 if spec.paused or observed.refused else spec.scaling.min_replicas,
            breaker_closed=breaker.state is BreakerState.CLOSED,
            healthy=assessed.healthy,
            trouble=problem is not None or children_error is not None or held is not None,
            listed=observed.listed,
        )
    )
    pool.quiescent = pool.quiescent and not pool.streams_changed
    interval = (
        observation.QUIESCENT_RECHECK_SECONDS
        if pool.quiescent
        else float(spec.scaling.poll_interval_seconds)
    )
    return await _write_status(rt, pool, old_status, status, interval)


def task_counts(
    backlog: ConsumerBacklog | None, stats: PoolStats, window_seconds: float
) -> dict[str, Any]:
    """Tasks by step, for ``kubectl get wp -o yaml``: waiting and running from the consumer
    and the workers, and what finished in the stats window (ids: ``jetpool task status``).
    Only counts: an idle pool's status must not change (no write) from one check to the next."""
    window = stats.window
    return {
        "queued": None if backlog is None else backlog.pending,
        "running": stats.in_flight,
        "waitingToRetry": None
        if backlog is None
        else max(0, backlog.ack_pending - stats.in_flight),
        "window": {
            "seconds": round(window_seconds),
            "succeeded": window.succeeded,
            "failedAttempts": window.failed,
            "deadLettered": window.dead_lettered,
        },
    }


@dataclass(frozen=True)
class NatsObservation:
    backlog: ConsumerBacklog | None
    """Every consumer of the pool together (a laned pool has several)."""
    dead_letters: int | None
    key: ConnectionKey | None
    problem: tuple[str, str] | None
    refused: bool = False
    """The isolation rules stopped the pool (:mod:`~jetpool_operator.core.tenancy`)."""
    listed: bool = False
    """A fresh batched listing covered the pool's streams this tick."""
    backlog_by_level: dict[str, int] | None = None
    """A laned pool's backlog per lane label (``status.backlogByLevel``); None otherwise."""


async def read_backlog(
    rt: OperatorRuntime, key: ConnectionKey, plan: nats_resources.NatsPlan
) -> tuple[ConsumerBacklog, dict[str, int] | None]:
    """The pool's backlog over all its consumers (one request each, concurrently; a plain
    pool asks its one consumer, as always), and a laned pool's backlog per lane label."""
    names = [c.durable_name for c in plan.consumers]
    read = await asyncio.gather(
        *(rt.nats.consumer_backlog(key, plan.names.stream, name) for name in names)
    )
    by_level = (
        lanes.backlog_by_label(plan.lanes, {n: b.backlog for n, b in zip(names, read, strict=True)})
        if plan.lanes
        else None
    )
    return ConsumerBacklog.total(read), by_level


async def sync_nats(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    spec: WorkerPoolSpec,
    plan: nats_resources.NatsPlan,
    post_event: EventSink,
    mono: float,
) -> NatsObservation:
    """Ensure the pool's JetStream resources, then read its backlog and dead-letter count."""
    for verdict in (
        tenancy.subjects_verdict(pool.namespace, plan.names.subjects, rt.subject_grants),
        tenancy.stream_names_verdict(
            pool.namespace,
            pool.name,
            (("nats.stream", spec.nats.stream), ("deadLetter.stream", spec.dead_letter.stream)),
        ),
    ):
        if not verdict.allowed:
            await _disconnect(rt, pool)
            return NatsObservation(None, None, None, (verdict.reason, verdict.message), True)
    try:
        key = await connection_key(rt, pool.namespace, spec)
        await check_worker_credentials(rt, pool.namespace, spec)
    except CredentialsError as exc:
        await _disconnect(rt, pool)
        return NatsObservation(None, None, None, (exc.reason, str(exc)))
    pool.connection_key, pool.stats_subject = key, plan.names.stats_subject
    await rt.nats.use((pool.namespace, pool.name), key)
    streams = _listed_streams(rt, pool, key, plan)
    if streams is not None and not observation.resources_listed(streams):
        pool.nats_plan = None  # deleted by hand: recreate now, not at the next recheck
    try:
        async with asyncio.timeout(NATS_TICK_TIMEOUT_SECONDS):
            if plan != pool.nats_plan or mono - pool.nats_checked_at > pool.recheck_after(
                NATS_RECHECK_SECONDS
            ):
                for outcome in await ensure_plan(await rt.nats.get(key), plan):
                    if outcome.action in ("created", "updated"):
                        post_event(
                            "Normal",
                            f"{outcome.kind.capitalize()}{outcome.action.capitalize()}",
                            f"{outcome.kind} {outcome.name} {outcome.action} {outcome.message}",
                        )
                pool.nats_plan, pool.nats_checked_at = plan, mono
            _watch_stranded_tasks(rt, pool, key, plan, post_event)
            if observation.needs_consumer_info(streams):
                # (an empty WorkQueue stream holds nothing that could be stranded)
                await _sweep_stranded_tasks(rt, pool, key, plan, post_event, mono)
                backlog, by_level = await read_backlog(rt, key, plan)
            else:
                backlog = ConsumerBacklog(pending=0, ack_pending=0, redelivered=0, waiting=0)
                by_level = lanes.backlog_by_label(plan.lanes, {}) if plan.lanes else None
            if streams is not None and streams.dead_letters is not None:
                dead_letters = streams.dead_letters.messages
            else:
                dead_letters = await rt.nats.stream_messages(key, plan.names.dead_letter_stream)
    except NotOwner as exc:
        pool.nats_plan = None
        return NatsObservation(None, None, key, (exc.reason, str(exc)), True)
    except ResourceConflict as exc:
        pool.nats_plan = None
        conflict = Reason.CONSUMER_CONFLICT if "consumer" in str(exc) else Reason.STREAM_CONFLICT
        return NatsObservation(None, None, key, (conflict, str(exc)))
    except NATS_ERRORS as exc:
        pool.nats_plan = None
        detail = summarize_nats_failure(spec.nats.url, exc)
        return NatsObservation(None, None, key, (Reason.NATS_UNREACHABLE, detail))
    return NatsObservation(
        backlog, dead_letters, key, None, listed=streams is not None, backlog_by_level=by_level
    )


def _listed_streams(
    rt: OperatorRuntime, pool: PoolRuntime, key: ConnectionKey, plan: nats_resources.NatsPlan
) -> observation.PoolStreams | None:
    """The pool's streams from the batched listing (None in per-pool mode or while no fresh
    listing exists: then the pool asks NATS itself)."""
    if rt.observer is None:
        return None
    pool_key = (pool.namespace, pool.name)
    rt.observer.track(pool_key, key, plan.names.stream, plan.names.dead_letter_stream)
    pool.streams_changed = False
    # A listing older than the last ensure may predate the streams it just created.
    return rt.observer.streams(pool_key, newer_than=pool.nats_checked_at)


async def _disconnect(rt: OperatorRuntime, pool: PoolRuntime) -> None:
    """A pool that may not (or cannot) use NATS holds no connection: credentials that became
    invalid must not keep working through the connection opened with the old ones."""
    pool.nats_plan = None
    pool.stop_stranded_watch(rt.nats)
    pool.connection_key, pool.stats_subject = None, None
    if rt.observer is not None:
        rt.observer.untrack((pool.namespace, pool.name))
    await rt.nats.release((pool.namespace, pool.name))


def _stranded_target(pool: PoolRuntime, plan: nats_resources.NatsPlan) -> StrandedTaskTarget:
    """Where a pool's stranded tasks are found and where they go (advisory watch and sweep)."""
    return StrandedTaskTarget(
        stream=plan.names.stream,
        consumer=plan.names.consumer,
        dead_letter_prefix=plan.names.dead_letter_subject_prefix,
        namespace=pool.namespace,
        pool=pool.name,
        task_state_bucket=plan.names.task_state_bucket,
        keep_results=plan.keep_results,
    )


def _watch_stranded_tasks(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    key: ConnectionKey,
    plan: nats_resources.NatsPlan,
    post_event: EventSink,
) -> None:
    """Route the pool's max-deliveries advisories on its current connection to it."""
    target = _stranded_target(pool, plan)
    if pool.stranded_watch == (key, target):
        return
    pool.stop_stranded_watch(rt.nats)

    def moved(sequence: int) -> None:
        post_event(
            "Warning",
            "TaskStranded",
            f"task {plan.names.stream}:{sequence} reached the consumer's maxDeliver without an "
            "outcome; moved to the dead-letter stream",
        )

    rt.nats.watch_stranded(key, target, moved)
    pool.stranded_watch = (key, target)


async def _sweep_stranded_tasks(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    key: ConnectionKey,
    plan: nats_resources.NatsPlan,
    post_event: EventSink,
    mono: float,
) -> None:
    """Find tasks that reached maxDeliver while no operator heard the advisory (at start,
    then every ``SWEEP_INTERVAL_SECONDS``)."""
    if mono - pool.stranded_swept_at < stranded.SWEEP_INTERVAL_SECONDS:
        return
    target = _stranded_target(pool, plan)
    moved = await sweep_stranded_tasks(await rt.nats.get(key), target)
    pool.stranded_swept_at = mono
    if moved:
        post_event(
            "Warning",
            "TaskStranded",
            f"{len(moved)} task(s) of {plan.names.stream} will never be delivered again "
            "(given up at maxDeliver while no operator ran, or passed over after a subjects "
            f"change; sequences {', '.join(map(str, moved[:10]))}"
            f"{', …' if len(moved) > 10 else ''}); moved to the dead-letter stream",
        )


def _step_breaker(
    pool: PoolRuntime,
    spec: WorkerPoolSpec,
    config: circuit_breaker.BreakerConfig,
    old_status: Mapping[str, Any],
    meta: Mapping[str, Any],
    now: datetime,
    post_event: EventSink,
) -> PoolStats:
    """Fold the workers' stats into the window and advance the breaker by one tick."""
    if pool.breaker is None:
        pool.breaker = circuit_breaker.Breaker.from_dict(old_status.get("circuitBreaker"))
    stats_config = StatsConfig(window_seconds=float(spec.circuit_breaker.window_seconds))
    stats, pool.stats_memory = aggregate(
        pool.stats_memory,
        list(pool.snapshots.values()),
        now,
        stats_config,
        epoch=pool.breaker.epoch,
    )
    for gone in stats.stale_workers:
        pool.snapshots.pop(gone, None)
    reset_token = (meta.get("annotations") or {}).get(RESET_BREAKER_ANNOTATION)
    observation = circuit_breaker.observe(
        pool.breaker, pool.stats_memory, stats, now, config, reset_token=reset_token
    )
    stepped = circuit_breaker.step(pool.breaker, observation, now, config)
    pool.breaker = stepped.breaker
    if stepped.transition is not None:
        t = stepped.transition
        post_event(
            "Warning" if t.to_state is BreakerState.OPEN else "Normal",
            f"CircuitBreaker{t.to_state.value}",
            t.message,
        )
        metrics.count(metrics.BREAKER_TRIPS, pool.namespace, pool.name, t.to_state.value)
    return stats


async def _publish_control(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    key: ConnectionKey,
    plan: nats_resources.NatsPlan,
    spec: WorkerPoolSpec,
    config: circuit_breaker.BreakerConfig,
    mono: float,
) -> None:
    """Write the workers' control state when it changed (and now and then regardless)."""
    assert pool.breaker is not None
    control = circuit_breaker.control_state(pool.breaker, config)
    if control == pool.published_control and mono - pool.control_published_at <= pool.recheck_after(
        CONTROL_REPUBLISH_SECONDS
    ):
        return
    try:
        await rt.nats.publish_control(
            key, plan.names.control_key, control, replicas=spec.nats.replicas
        )
        pool.published_control, pool.control_published_at = control, mono
    except NATS_ERRORS as exc:
        log.warning("could not publish control state of %s/%s: %s", pool.namespace, pool.name, exc)


def _record_scale(
    pool: PoolRuntime,
    decision: autoscaler.ScalingDecision,
    current: int,
    now: datetime,
    post_event: EventSink,
) -> tuple[str, str] | None:
    """Event, metric and (lastScaleTime, lastScaleReason) once a replica change has landed."""
    before = pool.applied_replicas if pool.applied_replicas is not None else current
    pool.applied_replicas = decision.replicas
    if decision.replicas == before:
        return None
    direction = "up" if decision.replicas > before else "down"
    post_event("Normal", f"Scaled{direction.capitalize()}", decision.message)
    metrics.count(metrics.SCALE_EVENTS, pool.namespace, pool.name, direction, decision.reason)
    return (
        now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        f"{decision.reason}: {decision.message}"[:MAX_MESSAGE],
    )


def _pool_conditions(
    condition: Callable[..., None],
    *,
    plan: nats_resources.NatsPlan,
    problem: tuple[str, str] | None,
    readiness: tuple[bool, str, str],
    breaker: circuit_breaker.Breaker,
    breaker_enabled: bool,
    decision: autoscaler.ScalingDecision,
    assessed: health.Health,
    control: control_bucket.ControlBucket | None,
) -> None:
    """Set the six conditions through ``condition`` (which keeps transition times)."""
    if problem is None:
        names = plan.names
        condition(
            ConditionType.NATS_READY,
            True,
            Reason.STREAMS_READY,
            f"stream {names.stream}, consumer {names.consumer}, "
            f"dead letters {names.dead_letter_stream}",
        )
    else:
        condition(ConditionType.NATS_READY, False, problem[0], problem[1])
    condition(ConditionType.READY, *readiness)
    state = breaker.state
    condition(
        ConditionType.CIRCUIT_OPEN,
        state is not BreakerState.CLOSED,
        {
            BreakerState.OPEN: Reason.ERROR_RATE_EXCEEDED,
            BreakerState.HALF_OPEN: Reason.PROBING,
        }.get(state, Reason.CLOSED if breaker_enabled else Reason.BREAKER_DISABLED),
        breaker.message or breaker.reason or "breaker closed",
    )
    condition(
        ConditionType.SCALING_LIMITED,
        decision.limited,
        decision.limited_reason or Reason.WITHIN_LIMITS,
        decision.limited_message or decision.message,
    )
    condition(
        ConditionType.DEGRADED,
        not assessed.healthy,
        Reason.HEALTHY if assessed.healthy else Reason.UNHEALTHY,
        "; ".join(f"{i.type.value}: {i.message}" for i in assessed.issues) or "no issues",
    )
    condition(ConditionType.CONTROL_REPLICATED, *control_bucket.replication_condition(control))


def _readiness(
    spec: WorkerPoolSpec,
    problem: tuple[str, str] | None,
    children_error: str | tuple[str, str] | None,
    desired: int,
    ready: int,
) -> tuple[bool, str, str]:
    """(ok, reason, message) of the Ready condition; a held-back child is (reason, message)."""
    if problem is not None:
        return False, Reason.NATS_ERROR, f"NATS not ready: {problem[1]}"
    if isinstance(children_error, tuple):
        return False, *children_error
    if children_error is not None:
        return False, Reason.RECONCILE_FAILED, children_error
    if spec.paused:
        return True, Reason.PAUSED, "pool is paused: no workers, tasks stay queued"
    if desired == 0:
        return True, Reason.SCALED_TO_ZERO, "no backlog: scaled to zero"
    if ready >= desired:
        return True, Reason.AVAILABLE, f"{ready}/{desired} workers ready"
    return False, Reason.PROGRESSING, f"{ready}/{desired} workers ready"


async def _apply_children(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    ref: PoolRef,
    refusal: str | None,
    objects: list[dict[str, Any]],
    observed_deployment: Mapping[str, Any] | None,
    replicas: int,
    mono: float,
) -> tuple[str, str] | None:
    """Apply what changed; returns (reason, message) when something was held back.

    A child whose name is taken by an object this pool does not control is never applied
    (:mod:`~jetpool_operator.core.child_ownership`); then, or when the template is refused, the
    Deployment is not written either: it would run under whatever holds those names.
    """
    held: tuple[str, str] | None = None
    if refusal is not None:
        held = (Reason.TEMPLATE_REFUSED, refusal)
    for obj in sorted(objects, key=lambda o: o["kind"] == "Deployment"):
        desired_hash = obj["metadata"]["annotations"][INPUT_HASH_ANNOTATION]
        if obj["kind"] == "Deployment":
            observed = observed_deployment or {}
            observed_meta = observed.get("metadata") or {}
            in_sync = (
                observed_deployment is not None
                and (observed_meta.get("annotations") or {}).get(INPUT_HASH_ANNOTATION)
                == desired_hash
                and (observed.get("spec") or {}).get("replicas") == replicas
                and observed_meta.get("generation") == pool.deployment_generation
            )
            if held is None and not in_sync:
                held = await _held_by_conflict(rt, ref, obj)
            if held is None and not in_sync:
                applied = await rt.kube.apply(obj)
                pool.deployment_generation = applied.generation
            continue
        previous = pool.applied_children.get(obj["kind"])
        if (
            previous is not None
            and previous.input_hash == desired_hash
            and mono - previous.checked_at <= pool.recheck_after(CHILDREN_RECHECK_SECONDS)
        ):
            continue
        existing = await rt.kube.read_metadata(obj)
        conflict = child_conflict(ref.uid, obj["kind"], obj["metadata"]["name"], existing)
        if conflict is not None:
            pool.applied_children.pop(obj["kind"], None)
            held = held or (Reason.CHILD_CONFLICT, conflict.message())
            continue
        if existing is not None and (
            # unchanged since our apply: a recheck that writes nothing
            (
                previous is not None
                and previous.input_hash == desired_hash
                and _version(existing) == previous.version
            )
            # first look after a (re)start or an HA takeover: ours and already as desired
            or (
                previous is None
                and (existing.get("annotations") or {}).get(INPUT_HASH_ANNOTATION) == desired_hash
            )
        ):
            pool.applied_children[obj["kind"]] = AppliedChild(
                desired_hash, _version(existing), mono
            )
            continue
        applied = await rt.kube.apply(obj)
        version = _version(
            {"generation": applied.generation, "resourceVersion": applied.resource_version}
        )
        pool.applied_children[obj["kind"]] = AppliedChild(desired_hash, version, mono)
    return held


def _version(meta: Mapping[str, Any]) -> str:
    """What changes when someone edits the object: its generation where it has one (a PDB's
    status updates leave it alone), else its resourceVersion (ServiceAccount, Service)."""
    generation = meta.get("generation")
    return f"g{generation}" if generation else f"r{meta.get('resourceVersion')}"


async def _held_by_conflict(
    rt: OperatorRuntime, ref: PoolRef, obj: dict[str, Any]
) -> tuple[str, str] | None:
    meta = obj["metadata"]
    existing = await rt.kube.read_metadata(obj)
    conflict = child_conflict(ref.uid, obj["kind"], meta["name"], existing)
    return None if conflict is None else (Reason.CHILD_CONFLICT, conflict.message())


def _export_metrics(pool: PoolRuntime, status: Mapping[str, Any], state: BreakerState) -> None:
    labels = (pool.namespace, pool.name)
    metrics.POOL_BACKLOG.labels(*labels).set(status["backlog"] or 0)
    metrics.POOL_IN_FLIGHT.labels(*labels).set(status["inFlight"] or 0)
    metrics.POOL_DESIRED.labels(*labels).set(status["desiredReplicas"])
    metrics.POOL_READY.labels(*labels).set(status["readyReplicas"])
    metrics.POOL_THROUGHPUT.labels(*labels).set(status["throughput"])
    metrics.POOL_ERROR_RATE.labels(*labels).set(status["errorRate"])
    metrics.POOL_DEAD_LETTERS.labels(*labels).set(status["deadLetters"] or 0)
    metrics.POOL_BREAKER_OPEN.labels(*labels).set(1 if state is BreakerState.OPEN else 0)
    metrics.POOL_HEALTHY.labels(*labels).set(1 if status["health"]["healthy"] else 0)
    metrics.set_level_backlog(*labels, status["backlogByLevel"])
    metrics.set_health_issues(*labels, (i["type"] for i in status["health"]["issues"]))


async def _write_status(
    rt: OperatorRuntime,
    pool: PoolRuntime,
    old: Mapping[str, Any],
    new: dict[str, Any],
    interval: float,
) -> TickResult:
    """Patch status only when :func:`status_patch` says the apiserver needs to hear it."""
    mono = time.monotonic()
    patch = status_patch(
        old,
        new,
        seconds_since_last_patch=mono - pool.last_patch_at,
        volatile_interval=STATUS_VOLATILE_SECONDS,
    )
    if patch is None:
        return TickResult(new, False, interval)
    await rt.kube.patch_pool_status(pool.namespace, pool.name, patch)
    pool.last_status, pool.last_patch_at = without_nulls(patch), mono
    return TickResult(new, True, interval)
