"""Desired JetStream resources of a pool, and what it takes to reconcile existing ones.

Pure: a spec goes in, frozen dataclasses come out; the NATS adapter maps them onto nats-py.
Values use the units of nats-py's config classes (seconds as floats, -1 for "unlimited"),
so the mapping is field-by-field.

Reconciling never deletes: when an existing stream or consumer differs in a way JetStream
cannot update in place (retention, storage, ack policy, ...), :func:`diff_stream` and
:func:`diff_consumer` return a :class:`Conflict` the operator reports in the pool's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core import lanes, periodic_schedules
from jetpool_operator.core.periodic_schedules import ScheduleMessage
from jetpool_operator.core.tenancy import Owner
from jetpool_protocol.lanes import Lane
from jetpool_protocol.naming import KV_STREAM_PREFIX, PoolNames

ACK_WAIT_MARGIN_SECONDS = 30.0
"""Slack between the task timeout and the consumer's ack wait (cancel, dead-letter, ack)."""
MAX_ACK_WAIT_SECONDS = 60.0
"""Longer tasks are kept by heartbeats (:func:`ack_wait_seconds`)."""
MAX_DELIVER_MARGIN = 10
"""The server-side redelivery cap sits above retry.maxAttempts: workers dead-letter first;
the cap only stops a task that kills its worker every time from cycling forever. The margin
is wide because deliveries a worker hands back without running them are no attempts (with
task tracking) but still deliveries."""
MIN_MAX_ACK_PENDING = 1000
HEADERS_ALLOWANCE_BYTES = 16_384
"""Room for jetpool headers (+ the 28 bytes of AES-GCM) above task.maxPayloadBytes."""
MAX_WAITING_PULLS = 512
UNLIMITED = -1


class Retention(StrEnum):
    LIMITS = "limits"
    WORK_QUEUE = "workqueue"
    INTEREST = "interest"


class Storage(StrEnum):
    FILE = "file"
    MEMORY = "memory"


class Discard(StrEnum):
    OLD = "old"
    NEW = "new"


class AckPolicy(StrEnum):
    EXPLICIT = "explicit"
    ALL = "all"
    NONE = "none"


class DeliverPolicy(StrEnum):
    ALL = "all"
    LAST = "last"
    NEW = "new"
    BY_START_SEQUENCE = "by_start_sequence"
    BY_START_TIME = "by_start_time"
    LAST_PER_SUBJECT = "last_per_subject"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    name: str
    subjects: tuple[str, ...]
    retention: Retention
    storage: Storage = Storage.FILE
    discard: Discard = Discard.OLD
    max_age_seconds: float = 0.0
    """0 means unlimited (JetStream's own convention for max_age)."""
    max_bytes: int = UNLIMITED
    max_msgs: int = UNLIMITED
    max_msg_size: int = UNLIMITED
    duplicate_window_seconds: float = 120.0
    replicas: int = 1
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    """Owner keys only (:mod:`~jetpool_operator.core.tenancy`); JetStream updates it in place."""
    max_msgs_per_subject: int = UNLIMITED
    allow_rollup: bool = False
    deny_delete: bool = False
    allow_direct: bool = False
    allow_msg_schedules: bool = False
    """nats-server refuses to turn it off again once on."""
    allow_msg_counter: bool = False
    """A counter stream (``Nats-Incr``): the rate limit's windows."""
    allow_msg_ttl: bool = False
    """Per-message TTLs (``Nats-TTL``): the key leases."""
    subject_transform: tuple[str, str] | None = None
    """(source, destination) applied to a message's subject as it is stored: the ordered
    keys' partitions (:mod:`~jetpool_operator.core.lanes`)."""


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    stream: str
    durable_name: str
    filter_subjects: tuple[str, ...]
    ack_wait_seconds: float
    max_deliver: int
    max_ack_pending: int
    ack_policy: AckPolicy = AckPolicy.EXPLICIT
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    max_waiting: int = MAX_WAITING_PULLS
    description: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ResolvedNames:
    """Every NATS name a pool uses, with the spec's overrides applied."""

    stream: str
    subjects: tuple[str, ...]
    consumer: str
    dead_letter_stream: str
    dead_letter_subject_prefix: str
    control_key: str
    stats_subject: str
    task_state_bucket: str | None = None
    """None: the pool tracks no task state (``spec.tracking.enabled: false``)."""
    schedule_subject_prefix: str | None = None
    """None: the task stream holds no schedules (``spec.schedules``)."""
    rate_limit_stream: str | None = None
    """None: the pool has no rate limit (``spec.rateLimit``)."""
    rate_limit_subject_prefix: str | None = None
    key_lease_bucket: str | None = None
    """None: no per-key limit (``spec.keyedConcurrency``)."""


@dataclass(frozen=True, slots=True)
class NatsPlan:
    names: ResolvedNames
    task_stream: StreamConfig
    consumer: ConsumerConfig
    """The pool's durable consumer (``nats.consumer``); a laned pool's default level."""
    dead_letter_stream: StreamConfig
    owner: Owner
    lane_consumers: tuple[ConsumerConfig, ...] = ()
    """A laned pool's other consumers: one per other priority level, then one per ordered
    partition (:mod:`~jetpool_operator.core.lanes`). Empty for a plain pool."""
    lanes: tuple[Lane, ...] = ()
    """A laned pool's lanes in the workers' order (their consumers are ``consumer`` and
    ``lane_consumers``); empty for a plain pool."""
    task_state: StreamConfig | None = None
    """The stream behind the task-state KV bucket (``KV_<bucket>``)."""
    rate_limit: StreamConfig | None = None
    """The counter stream of the pool's rate limit."""
    key_leases: StreamConfig | None = None
    """The stream behind the key-lease KV bucket (``KV_<bucket>``)."""
    periodic: tuple[ScheduleMessage, ...] = ()
    """The spec's periodic schedules, kept in the task stream (when it holds schedules)."""
    keep_results: bool = False
    """The pool keeps results (``spec.tracking.results``): a task the operator dead-letters
    gets its error as result too."""
    adopt_existing: bool = False
    extra_spaces: tuple[str, ...] = ()
    """Subject prefixes the operator grants the pool's namespace (they count as its own
    when adopting an unowned stream)."""

    @property
    def consumers(self) -> tuple[ConsumerConfig, ...]:
        """Every consumer of the task stream, the pool's own first."""
        return (self.consumer, *self.lane_consumers)


def default_stream(namespace: str, pool: str, recorded: str | None = None) -> str:
    """The pool's default task stream. A pool whose status already records the default of
    earlier jetpool versions keeps it: renaming would strand the tasks in the old stream."""
    defaults = PoolNames(namespace=namespace, pool=pool)
    return recorded if recorded == defaults.legacy_stream else defaults.stream


def resolve_names(
    namespace: str, pool: str, spec: WorkerPoolSpec, recorded_stream: str | None = None
) -> ResolvedNames:
    """``recorded_stream`` is ``status.nats.stream``, which only matters for legacy names."""
    defaults = PoolNames(namespace=namespace, pool=pool)
    stream = spec.nats.stream or default_stream(namespace, pool, recorded_stream)
    laned = lanes.layout(namespace, pool, spec.nats.consumer, spec)
    return ResolvedNames(
        stream=stream,
        subjects=(
            laned.stream_subjects
            if laned is not None
            else tuple(spec.nats.subjects or defaults.default_subjects)
        ),
        consumer=spec.nats.consumer,
        dead_letter_stream=spec.dead_letter.stream or f"{stream}-dlq",
        dead_letter_subject_prefix=defaults.dead_letter_subject_prefix,
        control_key=defaults.control_key,
        stats_subject=defaults.stats_subject,
        task_state_bucket=defaults.task_state_bucket if spec.tracking.enabled else None,
        schedule_subject_prefix=defaults.schedule_subject_prefix if spec.schedules_active else None,
        rate_limit_stream=defaults.rate_limit_stream if spec.rate_limit else None,
        rate_limit_subject_prefix=defaults.rate_limit_subject_prefix if spec.rate_limit else None,
        key_lease_bucket=defaults.key_lease_bucket if spec.keyed_concurrency else None,
    )


def ack_wait_seconds(spec: WorkerPoolSpec) -> float:
    """The consumer's ack wait: the task timeout plus a margin, at most
    :data:`MAX_ACK_WAIT_SECONDS`. Workers extend it with in-progress heartbeats (every third
    of it) while a task runs, so a longer task keeps its delivery; what the cap bounds is the
    wait for a delivery nobody holds any more: a crashed worker's, or one a consumer leader
    election lost (a delivery or a nak the new leader never saw: on a NATS cluster, a task
    waited the whole ack wait, 330 s with the default timeout, before it ran again)."""
    return min(float(spec.task.timeout_seconds) + ACK_WAIT_MARGIN_SECONDS, MAX_ACK_WAIT_SECONDS)


def max_deliver(spec: WorkerPoolSpec) -> int:
    """Deliveries before the server gives a task up. Unlimited with per-key limits: a task
    whose key is busy goes back unrun, maybe many times, and the workers count its runs
    (``tracking``, required there) to dead-letter it after ``maxAttempts`` runs. The same for
    laned pools, on every consumer: an ordered partition's task must never be given up by
    the server (the key's next task would overtake it), so the workers count runs there too."""
    if spec.keyed or spec.laned:
        return UNLIMITED
    return spec.retry.max_attempts + MAX_DELIVER_MARGIN


def max_ack_pending(spec: WorkerPoolSpec) -> int:
    """Room for every worker's in-flight tasks plus tasks parked in a retry backoff
    (a nak with delay keeps the task pending), so retries never starve fresh work."""
    if spec.nats.max_ack_pending is not None:
        return spec.nats.max_ack_pending
    return max(MIN_MAX_ACK_PENDING, 2 * spec.scaling.max_replicas * spec.concurrency)


def lane_max_ack_pending(spec: WorkerPoolSpec, single: bool) -> int:
    """A laned pool's consumers: an ordered partition hands out one task at a time; a level
    has no limit unless the spec sets one, because nats-server holds a worker's ``no_wait``
    sweep of a consumer at its limit instead of answering it (and workers never take more
    than their free slots anyway, retries waiting in backoff included)."""
    if single:
        return 1
    if spec.nats.max_ack_pending is not None:
        return spec.nats.max_ack_pending
    return UNLIMITED


def _limit(value: int) -> int:
    return value if value > 0 else UNLIMITED


def plan(
    namespace: str,
    pool: str,
    spec: WorkerPoolSpec,
    *,
    uid: str = "",
    recorded_stream: str | None = None,
    extra_spaces: tuple[str, ...] = (),
) -> NatsPlan:
    """The desired task stream, durable consumer and dead-letter stream of one pool, each
    stamped with the pool as owner."""
    names = resolve_names(namespace, pool, spec, recorded_stream)
    laned = lanes.layout(namespace, pool, names.consumer, spec)
    stamp = Owner(namespace, pool, uid)
    metadata = stamp.metadata()
    owner = f"jetpool WorkerPool {namespace}/{pool}"
    schedules = names.schedule_subject_prefix
    task_stream = StreamConfig(
        name=names.stream,
        # The schedules wait on their own subjects, which the consumer does not read.
        subjects=names.subjects + ((f"{schedules}.>",) if schedules else ()),
        retention=Retention.WORK_QUEUE,
        # nats-server requires discard old for schedules; without limits it drops nothing.
        discard=Discard.OLD if schedules else Discard.NEW,
        max_age_seconds=float(spec.nats.max_age_seconds),
        max_bytes=_limit(spec.nats.max_bytes),
        max_msgs=_limit(spec.nats.max_msgs),
        max_msg_size=spec.task.max_payload_bytes + HEADERS_ALLOWANCE_BYTES,
        duplicate_window_seconds=float(spec.nats.duplicate_window_seconds),
        replicas=spec.nats.replicas,
        description=f"tasks of {owner}",
        metadata=metadata,
        allow_rollup=schedules is not None,
        allow_msg_schedules=schedules is not None,
        subject_transform=None if laned is None else laned.transform,
    )

    def consumer(name: str, subjects: tuple[str, ...], single: bool, lane: str) -> ConsumerConfig:
        return ConsumerConfig(
            stream=names.stream,
            durable_name=name,
            filter_subjects=subjects,
            ack_wait_seconds=ack_wait_seconds(spec),
            max_deliver=max_deliver(spec),
            max_ack_pending=max_ack_pending(spec)
            if laned is None
            else lane_max_ack_pending(spec, single),
            description=f"workers of {owner}{lane}",
            metadata=metadata,
        )

    if laned is None:
        consumers = [consumer(names.consumer, names.subjects, False, "")]
    else:
        consumers = [
            consumer(lc.name, lc.filter_subjects, lc.lane.single, f", lane {lc.lane.label}")
            for lc in laned.lanes
        ]
        # the pool's own consumer first (the default level), the others in lane order
        consumers.sort(key=lambda c: c.durable_name != names.consumer)
    dead_letters = StreamConfig(
        name=names.dead_letter_stream,
        subjects=(f"{names.dead_letter_subject_prefix}.>",),
        retention=Retention.LIMITS,
        discard=Discard.OLD,
        max_age_seconds=float(spec.dead_letter.max_age_seconds),
        max_bytes=_limit(spec.dead_letter.max_bytes),
        max_msgs=_limit(spec.dead_letter.max_msgs),
        duplicate_window_seconds=float(spec.nats.duplicate_window_seconds),
        replicas=spec.nats.replicas,
        description=f"dead letters of {owner}",
        metadata=metadata,
    )
    return NatsPlan(
        names=names,
        task_stream=task_stream,
        consumer=consumers[0],
        dead_letter_stream=dead_letters,
        owner=stamp,
        lane_consumers=tuple(consumers[1:]),
        lanes=() if laned is None else laned.worker_lanes,
        task_state=task_state_stream(names, spec, owner, metadata),
        rate_limit=rate_limit_stream(names, spec, owner, metadata),
        key_leases=key_lease_stream(names, spec, owner, metadata),
        periodic=periodic_schedules.desired(
            schedules, f"{lanes.base_subject(namespace, pool)}.", spec
        )
        if schedules
        else (),
        keep_results=spec.tracking.enabled and spec.tracking.results.enabled,
        adopt_existing=spec.nats.adopt_existing,
        extra_spaces=extra_spaces,
    )


def task_state_stream(
    names: ResolvedNames,
    spec: WorkerPoolSpec,
    owner: str,
    metadata: tuple[tuple[str, str], ...],
) -> StreamConfig | None:
    """The KV bucket of task states, with entries expiring after the TTL."""
    bucket = names.task_state_bucket
    if bucket is None:
        return None
    return kv_bucket_stream(
        bucket,
        spec,
        description=f"task states of {owner}",
        metadata=metadata,
        storage=Storage(spec.tracking.storage.value.lower()),
        max_age_seconds=float(spec.tracking.ttl_seconds),
        duplicate_window_seconds=min(120.0, float(spec.tracking.ttl_seconds)),
    )


def kv_bucket_stream(
    bucket: str,
    spec: WorkerPoolSpec,
    *,
    description: str,
    metadata: tuple[tuple[str, str], ...],
    storage: Storage,
    max_age_seconds: float = 0.0,
    duplicate_window_seconds: float = 0.0,
    allow_msg_ttl: bool = False,
) -> StreamConfig:
    """A KV bucket of the pool as the stream nats-py's ``create_key_value`` makes: one value
    per key, rollups, direct gets, no deletes through the stream API."""
    return StreamConfig(
        name=f"{KV_STREAM_PREFIX}{bucket}",
        subjects=(f"$KV.{bucket}.>",),
        retention=Retention.LIMITS,
        storage=storage,
        discard=Discard.NEW,
        max_age_seconds=max_age_seconds,
        max_msg_size=UNLIMITED,
        duplicate_window_seconds=duplicate_window_seconds,
        replicas=spec.nats.replicas,
        description=description,
        metadata=metadata,
        max_msgs_per_subject=1,
        allow_rollup=True,
        deny_delete=True,
        allow_direct=True,
        allow_msg_ttl=allow_msg_ttl,
    )


RATE_WINDOWS_KEPT_SECONDS = 120.0
"""How long a rate-limit window's count outlives it (windows last at most 30 s)."""


def rate_limit_stream(
    names: ResolvedNames,
    spec: WorkerPoolSpec,
    owner: str,
    metadata: tuple[tuple[str, str], ...],
) -> StreamConfig | None:
    """One counter subject per window of the pool's rate limit, in memory: a server restart
    forgets the current window's count, which can let one extra burst through."""
    if names.rate_limit_stream is None or names.rate_limit_subject_prefix is None:
        return None
    return StreamConfig(
        name=names.rate_limit_stream,
        subjects=(f"{names.rate_limit_subject_prefix}.>",),
        retention=Retention.LIMITS,
        storage=Storage.MEMORY,
        discard=Discard.OLD,
        max_age_seconds=RATE_WINDOWS_KEPT_SECONDS,
        # what nats-server makes of 0 (min(max age, 2 min)): asking for it keeps the stream
        # in sync instead of "updated" on every reconcile
        duplicate_window_seconds=min(120.0, RATE_WINDOWS_KEPT_SECONDS),
        replicas=spec.nats.replicas,
        description=f"rate-limit windows of {owner}",
        metadata=metadata,
        max_msgs_per_subject=1,
        allow_msg_counter=True,
    )


def key_lease_stream(
    names: ResolvedNames,
    spec: WorkerPoolSpec,
    owner: str,
    metadata: tuple[tuple[str, str], ...],
) -> StreamConfig | None:
    """The KV bucket of key leases (``conc.<key>.<slot>``), in memory: each lease carries its
    own TTL, so a crashed holder's slot frees by itself. A server restart frees every slot,
    which can let more than ``maxPerKey`` run for as long as the tasks already running last."""
    bucket = names.key_lease_bucket
    if bucket is None or spec.keyed_concurrency is None:
        return None
    # Freeing a slot leaves a delete marker; the max age drops those (a held lease is
    # republished every third of its TTL, so it never gets that old).
    max_age = 2.0 * spec.keyed_concurrency.lease_seconds
    return kv_bucket_stream(
        bucket,
        spec,
        description=f"key leases of {owner}",
        metadata=metadata,
        storage=Storage.MEMORY,
        max_age_seconds=max_age,
        duplicate_window_seconds=min(120.0, max_age),
        allow_msg_ttl=True,
    )


# --- reconciling existing resources ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    observed: object
    desired: object


@dataclass(frozen=True, slots=True)
class InSync:
    """Nothing to do."""


@dataclass(frozen=True, slots=True)
class Update:
    """Apply the desired config; every change here is one JetStream accepts in place."""

    changes: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class Conflict:
    """An existing resource differs in a way that cannot be updated; never delete it."""

    changes: tuple[FieldChange, ...]
    message: str


Diff = InSync | Update | Conflict

STREAM_IMMUTABLE = frozenset({"name", "retention", "storage"})
"""Verified against nats-server 2.15: 'can not change retention policy to/from workqueue',
'can not change storage type'."""
CONSUMER_IMMUTABLE = frozenset(
    {"stream", "durable_name", "ack_policy", "deliver_policy", "max_waiting"}
)
"""Verified against nats-server 2.15: 'ack policy / deliver policy / max waiting can not be
updated'."""
_UNORDERED = frozenset({"subjects", "filter_subjects"})


def _changes(
    desired: StreamConfig | ConsumerConfig, observed: StreamConfig | ConsumerConfig
) -> tuple[FieldChange, ...]:
    out = []
    for f in fields(desired):
        want, have = getattr(desired, f.name), getattr(observed, f.name)
        if f.name in _UNORDERED:
            want, have = sorted(want), sorted(have)
        if want != have:
            out.append(FieldChange(f.name, getattr(observed, f.name), getattr(desired, f.name)))
    return tuple(out)


def _diff(
    kind: str,
    name: str,
    changes: tuple[FieldChange, ...],
    immutable: Iterable[str],
    hint: str,
) -> Diff:
    if not changes:
        return InSync()
    frozen = [c for c in changes if c.field in immutable]
    if frozen:
        what = ", ".join(f"{c.field} is {c.observed}, wants {c.desired}" for c in frozen)
        return Conflict(
            changes, f"existing {kind} {name!r} cannot be updated in place ({what}); {hint}"
        )
    return Update(changes)


def diff_stream(desired: StreamConfig, observed: StreamConfig) -> Diff:
    """How to turn the observed stream into the desired one, if that is possible at all."""
    changes = _changes(desired, observed)
    if observed.allow_msg_schedules and not desired.allow_msg_schedules:
        return Conflict(
            changes,
            f"stream {desired.name!r} holds message schedules, which nats-server cannot turn "
            "off (nor go back to discard new): schedules.enabled: false and nats.maxMsgs/"
            "maxBytes need a new stream (nats.stream), or set schedules.enabled back",
        )
    return _diff(
        "stream",
        desired.name,
        changes,
        STREAM_IMMUTABLE,
        "jetpool never deletes a stream: move or delete it yourself, or point the pool at "
        "another stream name",
    )


def diff_consumer(desired: ConsumerConfig, observed: ConsumerConfig) -> Diff:
    """Same for the durable consumer (its pending tasks belong to the stream, not to it)."""
    return _diff(
        "consumer",
        desired.durable_name,
        _changes(desired, observed),
        CONSUMER_IMMUTABLE,
        "delete the consumer yourself (pending tasks stay in the stream) or pick another "
        "nats.consumer",
    )
