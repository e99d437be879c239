"""WorkerPool ``jetpool.dev/v1alpha1``: the pydantic models the CRD is generated from.

One source of truth: these models validate specs inside the operator, and
:mod:`jetpool_operator.api.crdgen` turns them into ``crds/workerpools.jetpool.dev.yaml``.
Every field carries a description (``kubectl explain`` shows it). Cross-field rules live
next to the fields twice on purpose: as CEL ``x-kubernetes-validations`` (so ``kubectl apply``
of a bad pool fails with a clear message) and as pydantic validators (so the pure core never
sees a spec the apiserver would have rejected). Tests check that the two sets match.

Raw Kubernetes structures (affinity, tolerations, ...) are kept as objects with
``x-kubernetes-preserve-unknown-fields``: the apiserver validates them when the operator
creates the Deployment, and the operator never has to track upstream API changes.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from jetpool_protocol.control import BreakerState
from jetpool_protocol.lanes import ORDERED_TOKEN
from jetpool_protocol.schedules import (
    CRON_PATTERN,
    EVERY_PATTERN,
    check_every,
    schedules_allowed,
)
from jetpool_protocol.worker_settings import Jitter

GROUP = "jetpool.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "WorkerPool"
PLURAL = "workerpools"
SINGULAR = "workerpool"
SHORT_NAMES = ("wp",)
CATEGORIES = ("jetpool",)

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
NATS_NAME = r"^[^.*>\s]+$"
"""Stream and consumer names: no ``.``, ``*``, ``>`` or whitespace (JetStream rule)."""
NATS_SUBJECT = r"^[^\s]+$"
HANDLER = r"^[A-Za-z_][A-Za-z0-9_.-]*(:[A-Za-z_][A-Za-z0-9_.]*)?$"
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

RawObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
"""A Kubernetes structure passed through as-is (validated by the apiserver on the child)."""

RawList = Annotated[
    list[dict[str, Any]],
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }
    ),
]

Quantity = Annotated[
    int | Annotated[str, StringConstraints(pattern=QUANTITY)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity such as ``500m``, ``512Mi`` or ``2``."""

SecretName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
NatsName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NATS_NAME)]


def _rule(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def _cel(*rules: dict[str, str]) -> ConfigDict:
    """CEL rules of one object; crdgen emits them as ``x-kubernetes-validations``."""
    validations: list[JsonValue] = [dict(r) for r in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})


def _prune_empty(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    return value


def defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """The wire form of a model's defaults, without empty lists and maps."""
    dumped = model().model_dump(by_alias=True, mode="json", exclude_none=True)
    pruned: dict[str, Any] = _prune_empty(dumped)
    return pruned


def _obj(model: type[BaseModel], description: str) -> Any:
    """A nested object field whose schema default is the model's defaults in full.

    Not ``{}``: the apiserver checks a default against the CEL rules *before* filling
    nested defaults, so ``{}`` fails a rule like ``self.minReplicas <= self.maxReplicas``.
    """
    return Field(
        default_factory=model,
        description=description,
        json_schema_extra={"default": defaults_of(model)},
    )


# --- spec: NATS -----------------------------------------------------------------------------


def _secret_key(default: str | None, description: str) -> Any:
    """The ``key`` field of a Secret reference (one shape, per-use default and meaning)."""
    constraints: dict[str, Any] = {"min_length": 1, "max_length": 253, "pattern": SECRET_KEY}
    if default is None:
        return Field(description=description, **constraints)
    return Field(default, description=description, **constraints)


class SecretKeyRef(ApiModel):
    """A key inside a Secret in the pool's namespace, mounted into workers as a file."""

    name: SecretName = Field(description="Name of the Secret (same namespace as the pool).")
    key: str = _secret_key(None, "Key inside the Secret.")


class CredentialsSecretRef(SecretKeyRef):
    key: str = _secret_key(
        "nats.creds", "Key inside the Secret holding the NATS credentials (.creds) file."
    )


class SigningKeySecretRef(SecretKeyRef):
    key: str = _secret_key(
        "signing.key",
        "Key holding the base64 HMAC-SHA256 key (32 bytes, `openssl rand -base64 32`).",
    )


class EncryptionKeySecretRef(SecretKeyRef):
    key: str = _secret_key(
        "encryption.key",
        "Key holding the base64 AES-256-GCM key (32 bytes, `openssl rand -base64 32`).",
    )


_TLS_ONE_STYLE = _rule(
    "!has(self.secretName) || !(has(self.ca) || has(self.cert) || has(self.key))",
    "nats.tls: use either secretName or ca/cert/key references, not both",
)
_TLS_PAIR = _rule(
    "has(self.cert) == has(self.key)",
    "nats.tls: cert and key must be given together",
)


class NatsTLS(ApiModel):
    """TLS towards NATS. A ``tls://`` URL with an empty block uses the system trust store."""

    model_config = _cel(_TLS_ONE_STYLE, _TLS_PAIR)

    secret_name: SecretName | None = Field(
        None,
        description=(
            "A kubernetes.io/tls Secret holding ca.crt, tls.crt and tls.key (cert-manager "
            "layout): CA and client certificate for mutual TLS. All three keys must exist."
        ),
    )
    ca: SecretKeyRef | None = Field(None, description="CA bundle that signs the NATS servers.")
    cert: SecretKeyRef | None = Field(None, description="Client certificate (PEM) for mTLS.")
    key: SecretKeyRef | None = Field(None, description="Client private key (PEM) for mTLS.")

    @model_validator(mode="after")
    def _one_style(self) -> NatsTLS:
        if self.secret_name is not None and (self.ca or self.cert or self.key):
            raise ValueError(_TLS_ONE_STYLE["message"])
        if (self.cert is None) != (self.key is None):
            raise ValueError(_TLS_PAIR["message"])
        return self


_STREAM_IMMUTABLE = _rule(
    "has(self.stream) == has(oldSelf.stream)"
    " && (!has(self.stream) || self.stream == oldSelf.stream)",
    "nats.stream cannot change after creation: the old stream would keep its tasks;"
    " create a new pool instead",
)
_CONSUMER_IMMUTABLE = _rule(
    "self.consumer == oldSelf.consumer",
    "nats.consumer cannot change after creation: tasks pending on the old consumer would be"
    " stranded; create a new pool instead",
)


SUBJECT_WITH_LITERAL_ROOT = r"^[^.*>$\s][^.*>\s]*\.[^.*>\s]+\.\S+$"
"""Two literal tokens and more, no ``$`` first: what the CRD can judge without the namespace.
Whether the prefix is the pool's namespace's (``tasks.<namespace>.`` or a prefix the operator
grants it) is judged by the chart's admission policy and by the operator."""
INBOX_ROOT = "_INBOX"
"""``_INBOX.`` is nats-py's default inbox prefix, ``_INBOX_<ns>_<pool>.`` the workers' own."""
_SUBJECTS_WITH_LITERAL_ROOT = _rule(
    "!has(self.subjects) || self.subjects.all(s, s.matches("
    f"'{SUBJECT_WITH_LITERAL_ROOT.replace(chr(92), chr(92) * 2)}')"
    f" && !s.startsWith('{INBOX_ROOT}'))",
    "nats.subjects must each start with tasks.<namespace>. or a prefix the operator grants the"
    " namespace (two literal tokens): a bare '>', a wildcard in the first two tokens, '$' system"
    " subjects or _INBOX replies would reach other tenants",
)


class NatsSpec(ApiModel):
    """Where tasks come from: the NATS server, the task stream and the durable consumer."""

    model_config = _cel(_STREAM_IMMUTABLE, _CONSUMER_IMMUTABLE, _SUBJECTS_WITH_LITERAL_ROOT)

    url: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "NATS server URL(s), comma-separated, e.g. nats://nats.nats.svc:4222. "
            "Use tls:// to require TLS."
        ),
    )
    credentials_secret: CredentialsSecretRef | None = Field(
        None,
        description=(
            "Secret holding the operator's NATS credentials (.creds) file. Also mounted into "
            "the workers unless workerCredentialsSecret is set (shared-account mode)."
        ),
    )
    worker_credentials_secret: CredentialsSecretRef | None = Field(
        None,
        description=(
            "Secret holding the workers' own NATS credentials (.creds) file, e.g. a user "
            "limited to the pool's worker permission set. When set, workers mount only this "
            "one and never credentialsSecret, so handler code cannot read the operator's."
        ),
    )
    tls: NatsTLS | None = Field(None, description="CA and client certificates for TLS.")
    stream: NatsName | None = Field(
        None,
        description=(
            "Task stream name. Default: jetpool-<namespace>_<pool>-tasks. Immutable. A stream "
            "of another pool is never used; an existing stream no pool owns only with "
            "adoptExisting. Its retention must be WorkQueue."
        ),
    )
    adopt_existing: bool = Field(
        False,
        description=(
            "Adopt a task stream, dead-letter stream or consumer that exists but no WorkerPool "
            "owns (made by hand or by an earlier jetpool version): the operator stamps it with "
            "this pool as owner. Never adopts another pool's resources."
        ),
    )
    subjects: list[
        Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=NATS_SUBJECT)]
    ] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Subjects the task stream captures, each under tasks.<namespace>. of the pool's "
            "namespace or a prefix the operator grants the namespace "
            "(tenancy.extraSubjectSpaces). Empty: tasks.<namespace>.<pool>.>"
        ),
    )

    @model_validator(mode="after")
    def _subjects_with_literal_root(self) -> NatsSpec:
        if not all(
            re.fullmatch(SUBJECT_WITH_LITERAL_ROOT, s) and not s.startswith(INBOX_ROOT)
            for s in self.subjects
        ):
            raise ValueError(_SUBJECTS_WITH_LITERAL_ROOT["message"])
        return self

    consumer: NatsName = Field(
        "workers", description="Durable pull consumer the workers share. Immutable."
    )
    replicas: int = Field(
        1,
        ge=1,
        le=5,
        description=(
            "JetStream replicas of the task and dead-letter streams (R3 is recommended on a "
            "clustered NATS; R1 is the only value a single server accepts)."
        ),
    )
    max_age_seconds: int = Field(
        0,
        ge=0,
        description="Oldest task the stream keeps, in seconds; 0 keeps tasks until acknowledged.",
    )
    max_bytes: int = Field(
        0,
        ge=0,
        description=(
            "Size limit of the task stream; 0 means unlimited. When full, publishers get an "
            "error (discard policy New): tasks are never dropped silently."
        ),
    )
    max_msgs: int = Field(
        0,
        ge=0,
        description="Task count limit of the stream; 0 means unlimited. Full -> publish errors.",
    )
    duplicate_window_seconds: int = Field(
        120,
        ge=0,
        le=86400,
        description=(
            "Window in which a task published twice with the same Nats-Msg-Id is stored once."
        ),
    )
    max_ack_pending: int | None = Field(
        None,
        ge=1,
        description=(
            "Consumer limit on delivered-but-unacknowledged tasks (including tasks waiting "
            "for a retry). Default: max(1000, 2 * scaling.maxReplicas * concurrency)."
        ),
    )


# --- spec: execution, retries, dead letters ------------------------------------------------


class TaskSpec(ApiModel):
    """Limits applied to every task."""

    timeout_seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="A handler running longer than this is cancelled and the task retried.",
    )
    max_payload_bytes: int = Field(
        1_048_576,
        ge=1,
        le=67_108_864,
        description="Larger payloads are rejected by the stream at publish time.",
    )
    ttl_seconds: int | None = Field(
        None,
        ge=1,
        description=(
            "A task older than this (since publishing) is dead-lettered as expired instead "
            "of run. Unset: tasks never expire."
        ),
    )


class ResultsSpec(ApiModel):
    """Keeping handlers' return values, readable by task id."""

    enabled: bool = Field(
        False,
        description=(
            "true: a handler's JSON-serializable return value (and a failed task's final "
            "error) is kept for tracking.ttlSeconds, read with `jetpool task result <id>`."
        ),
    )
    max_bytes: int = Field(
        65_536,
        ge=1,
        le=1_048_576,
        description="Larger return values are not kept (the result says so).",
    )


class StateStorage(StrEnum):
    FILE = "File"
    MEMORY = "Memory"


class TrackingSpec(ApiModel):
    """Task state by id: every task's steps in a KV bucket of the pool (docs/tasks.md)."""

    enabled: bool = Field(
        True,
        description=(
            "true: workers record each task's lifecycle by id (`jetpool task status <id>`), "
            "count attempts as handler runs (a delivery handed back without running is not "
            "an attempt), and honour `jetpool task cancel`. false: none of these; an attempt "
            "is a delivery."
        ),
    )
    ttl_seconds: int = Field(
        86_400,
        ge=60,
        le=31_536_000,
        description="How long a task's state and result stay readable after its last step.",
    )
    storage: StateStorage = Field(
        StateStorage.FILE,
        description=(
            "Where the bucket keeps states and results. Memory costs nats-server about half "
            "the CPU per task (for pools running tens of thousands of tiny tasks a second) "
            "but loses them when the server restarts (then attempts count deliveries once). "
            "Immutable: JetStream cannot move a stream between storages."
        ),
    )
    results: ResultsSpec = _obj(ResultsSpec, "Keeping handlers' return values.")


_ONE_TIMING = _rule(
    "has(self.every) != has(self.cron)",
    "schedules.periodic: each schedule needs exactly one of every or cron",
)
_ZONE_WITH_CRON = _rule(
    "!has(self.timeZone) || has(self.cron)",
    "schedules.periodic: timeZone applies to cron schedules only",
)


class PeriodicSchedule(ApiModel):
    """A task the pool receives periodically, released by nats-server's own scheduler."""

    model_config = _cel(_ONE_TIMING, _ZONE_WITH_CRON)

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        description="Unique within the pool; the schedule's subject token.",
    )
    every: str | None = Field(
        None,
        max_length=32,
        pattern=f"^{EVERY_PATTERN}$",
        description="An interval of whole seconds, at least 1s: 30s, 5m, 1h30m.",
    )
    cron: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=CRON_PATTERN,
        description=(
            "Six fields, seconds first ('0 */5 * * * *'), or @hourly, @daily, @weekly, "
            "@monthly, @yearly."
        ),
    )
    time_zone: str | None = Field(
        None, max_length=64, description="IANA time zone of a cron schedule (default UTC)."
    )
    subject: str | None = Field(
        None,
        max_length=512,
        pattern=r"^[^\s*>]+$",
        description="A task subject of the pool. Default: tasks.<namespace>.<pool>.<name>.",
    )
    payload: RawObject = Field(default_factory=dict, description="The task's JSON payload.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra task headers (e.g. Jetpool-Ttl)."
    )

    @model_validator(mode="after")
    def _one_timing(self) -> PeriodicSchedule:
        if (self.every is None) == (self.cron is None):
            raise ValueError(_ONE_TIMING["message"])
        if self.every is not None:
            check_every(self.every)  # (a ScheduleError is a ValueError)
        if self.time_zone is not None and self.cron is None:
            raise ValueError(_ZONE_WITH_CRON["message"])
        return self


_PERIODIC_NEEDS_SCHEDULES = _rule(
    "!has(self.enabled) || self.enabled || !has(self.periodic) || size(self.periodic) == 0",
    "schedules.periodic needs schedules.enabled (unset or true)",
)


class SchedulesSpec(ApiModel):
    """Delayed and periodic tasks (nats-server message schedules in the task stream)."""

    model_config = _cel(_PERIODIC_NEEDS_SCHEDULES)

    enabled: bool | None = Field(
        None,
        description=(
            "Unset: on unless nats.maxMsgs or nats.maxBytes limit the task stream (schedules "
            "need the stream to discard old messages, which limits would turn into dropped "
            "tasks). Once on, the stream cannot go back."
        ),
    )
    periodic: list[PeriodicSchedule] = Field(
        default_factory=list,
        max_length=100,
        description="Periodic tasks; the operator keeps the pool's schedules in step with it.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _periodic_needs_schedules(self) -> SchedulesSpec:
        if self.enabled is False and self.periodic:
            raise ValueError(_PERIODIC_NEEDS_SCHEDULES["message"])
        return self

    def active(self, max_msgs: int, max_bytes: int) -> bool:
        if self.enabled is None:
            return schedules_allowed(max_msgs, max_bytes)
        return self.enabled


HEADER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


def _key_header(without: str) -> Any:
    """The ``header`` field of a per-key limit (one shape, per-limit meaning)."""
    return Field(
        min_length=1,
        max_length=128,
        pattern=HEADER_NAME,
        description=f"The task header whose value is the key (e.g. Customer). {without}",
    )


def _window_rule(where: str, required: bool) -> dict[str, str]:
    """burst / perSecond between 0.05 and 30 s (``required``: perSecond is always set)."""
    bounds = (
        "double(self.burst) >= self.perSecond * 0.05 && double(self.burst) <= self.perSecond * 30.0"
    )
    return _rule(
        f"!has(self.burst) || ({'' if required else 'has(self.perSecond) && '}{bounds})",
        f"{where}: burst / perSecond (the window the limit is counted over) must be between "
        "0.05 and 30 seconds",
    )


_RATE_WINDOW = _window_rule("rateLimit", required=False)
_KEY_RATE_WINDOW = _window_rule("rateLimit.perKey", required=True)
_RATE_SOMETHING = _rule(
    "has(self.perSecond) || has(self.perKey)", "rateLimit needs perSecond, perKey or both"
)
_BURST_DESCRIPTION = (
    "Starts allowed at once: the limit is kept over consecutive windows of burst/perSecond "
    "seconds, each allowing burst starts (between 0.05 and 30 s). Default: perSecond/10 "
    "rounded up (100 ms windows), at least 1."
)


def _burst_of(per_second: float, burst: int | None) -> int:
    return burst if burst is not None else max(1, math.ceil(per_second / 10))


def _window_ok(per_second: float | None, burst: int | None) -> bool:
    return burst is None or (
        per_second is not None and per_second * 0.05 <= burst <= per_second * 30
    )


class KeyRateLimitSpec(ApiModel):
    """Task starts per second for each key (a header), across every worker of the pool."""

    model_config = _cel(_KEY_RATE_WINDOW)

    header: str = _key_header("Tasks without it are limited by perSecond only.")
    per_second: float = Field(
        ge=0.05, le=100_000, description="Task starts per second for each key value."
    )
    burst: int | None = Field(None, ge=1, le=100_000, description=_BURST_DESCRIPTION)

    @model_validator(mode="after")
    def _window_in_bounds(self) -> KeyRateLimitSpec:
        if not _window_ok(self.per_second, self.burst):
            raise ValueError(_KEY_RATE_WINDOW["message"])
        return self

    @property
    def effective_burst(self) -> int:
        return _burst_of(self.per_second, self.burst)


class RateLimitSpec(ApiModel):
    """Tasks started per second across every worker of the pool (docs/flow-control.md)."""

    model_config = _cel(_RATE_SOMETHING, _RATE_WINDOW)

    per_second: float | None = Field(
        None,
        ge=0.05,
        le=100_000,
        description=(
            "Task starts per second across the whole pool, whatever its replica count. Tasks "
            "over the limit wait in the queue (never dropped nor dead-lettered for it)."
        ),
    )
    burst: int | None = Field(None, ge=1, le=100_000, description=_BURST_DESCRIPTION)
    per_key: KeyRateLimitSpec | None = Field(
        None, description="A limit for each key (a header's value), e.g. per customer."
    )

    @model_validator(mode="after")
    def _window_in_bounds(self) -> RateLimitSpec:
        if self.per_second is None and self.per_key is None:
            raise ValueError(_RATE_SOMETHING["message"])
        if not _window_ok(self.per_second, self.burst):
            raise ValueError(_RATE_WINDOW["message"])
        return self

    @property
    def effective_burst(self) -> int | None:
        return None if self.per_second is None else _burst_of(self.per_second, self.burst)


class KeyedConcurrencySpec(ApiModel):
    """At most maxPerKey tasks with the same key run at once across the pool."""

    header: str = _key_header("Tasks without it are not limited.")
    max_per_key: int = Field(
        ge=1, le=1000, description="Tasks with the same key running at once, pool-wide."
    )
    lease_seconds: int = Field(
        30,
        ge=3,
        le=3600,
        description=(
            "A running task holds one of its key's slots as a lease its worker renews every "
            "third of this; a crashed worker's slot frees after it."
        ),
    )


LEVEL_NAME = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
LevelName = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=LEVEL_NAME)]
"""A priority level's name is one subject token and a consumer-name suffix."""

_LEVEL_NOT_ORDERED = _rule(
    f"!self.name.startsWith('{ORDERED_TOKEN}')",
    f"priorities.levels: a level's name cannot start with {ORDERED_TOKEN!r}: "
    f"tasks.<namespace>.<pool>.{ORDERED_TOKEN}.<key> is where ordered tasks are published, and "
    f"<consumer>-{ORDERED_TOKEN}-<n> are the ordered partitions' consumers",
)
_LEVELS_UNIQUE = _rule(
    "self.levels.all(l, self.levels.filter(m, m.name == l.name).size() == 1)",
    "priorities.levels: each level needs a name of its own",
)
_DEFAULT_IS_A_LEVEL = _rule(
    "self.levels.exists(l, l.name == self.default)",
    "priorities.default must be the name of one of priorities.levels",
)
_WEIGHT_DESCRIPTION = (
    "Share of freed worker slots under contention (stride scheduling): a level with weight "
    "100 starts 100 tasks for every one of a level with weight 1 while both have tasks waiting."
)


class PriorityLevel(ApiModel):
    """One priority level: its own subject space and its own durable consumer."""

    model_config = _cel(_LEVEL_NOT_ORDERED)

    name: LevelName = Field(
        description=(
            "The level's subject token: its tasks are published on "
            "tasks.<namespace>.<pool>.<name>.<task> and wait in consumer <nats.consumer>-<name>."
        ),
    )
    weight: int = Field(1, ge=1, le=1000, description=_WEIGHT_DESCRIPTION)


class PrioritiesSpec(ApiModel):
    """Priority levels: tasks of a higher level start first whenever a worker slot frees."""

    model_config = _cel(_LEVELS_UNIQUE, _DEFAULT_IS_A_LEVEL)

    levels: list[PriorityLevel] = Field(
        min_length=2,
        max_length=5,
        description="The levels, highest first.",
    )
    default: LevelName = Field(
        description=(
            "The level of tasks published on tasks.<namespace>.<pool>.<task> (one token, as "
            "without priorities); its tasks wait in consumer <nats.consumer> itself."
        ),
    )

    @model_validator(mode="after")
    def _levels_well_formed(self) -> PrioritiesSpec:
        names = [level.name for level in self.levels]
        if any(name.startswith(ORDERED_TOKEN) for name in names):
            raise ValueError(_LEVEL_NOT_ORDERED["message"])
        if len(set(names)) != len(names):
            raise ValueError(_LEVELS_UNIQUE["message"])
        if self.default not in names:
            raise ValueError(_DEFAULT_IS_A_LEVEL["message"])
        return self


class OrderedSpec(ApiModel):
    """Ordered keys: tasks published on tasks.<namespace>.<pool>.ordered.<key> run one at a
    time per key, in publish order, across the whole pool."""

    partitions: int = Field(
        8,
        ge=1,
        le=64,
        description=(
            "Keys are hashed onto this many partitions; each partition runs one task at a "
            "time, so at most this many ordered tasks run at once pool-wide and keys sharing "
            "a partition wait for each other. Changing it re-maps keys: drain the ordered "
            "tasks first."
        ),
    )
    pulls_per_worker: int | None = Field(
        None,
        ge=1,
        le=64,
        description=(
            "Ordered partitions each worker keeps a pull waiting on, each holding one of its "
            "slots while it waits (the workers rotate over the partitions); more while the "
            "priority levels have nothing. Default: a quarter of concurrency, at least 1, at "
            "most partitions."
        ),
    )

    def effective_pulls_per_worker(self, concurrency: int) -> int:
        wanted = self.pulls_per_worker or max(1, concurrency // 4)
        return max(1, min(wanted, self.partitions, concurrency))


_BACKOFF_BOUNDS = _rule(
    "self.initialSeconds <= self.maxSeconds",
    "retry.backoff.initialSeconds must not exceed retry.backoff.maxSeconds",
)


class BackoffSpec(ApiModel):
    """Exponential backoff between attempts: initial * multiplier^(attempt-1), capped."""

    model_config = _cel(_BACKOFF_BOUNDS)

    initial_seconds: float = Field(1.0, ge=0, le=86400, description="Delay before attempt 2.")
    max_seconds: float = Field(300.0, ge=0, le=86400, description="Cap on any single delay.")
    multiplier: float = Field(2.0, ge=1, le=10, description="Growth factor per attempt.")
    jitter: Jitter = Field(
        Jitter.FULL,
        description=(
            "full: uniform in [0, delay] (spreads retry storms best); equal: uniform in "
            "[delay/2, delay]; none: exact delay."
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> BackoffSpec:
        if self.initial_seconds > self.max_seconds:
            raise ValueError(_BACKOFF_BOUNDS["message"])
        return self


class RetrySpec(ApiModel):
    """What happens when a handler raises."""

    max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Attempts (including the first) before a task is dead-lettered.",
    )
    backoff: BackoffSpec = _obj(BackoffSpec, "Delay between attempts.")
    non_retryable: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "Exception type names (ValueError or package.module.Error) that are dead-lettered "
            "at once, without retries."
        ),
    )


class DeadLetterSpec(ApiModel):
    """The dead-letter stream: tasks that cannot succeed, with full failure metadata."""

    stream: NatsName | None = Field(
        None, description="Dead-letter stream name. Default: <task stream>-dlq. Immutable."
    )
    max_age_seconds: int = Field(
        1_209_600,
        ge=0,
        description="How long dead letters are kept (default 14 days); 0 keeps them forever.",
    )
    max_msgs: int = Field(
        0, ge=0, description="Cap on kept dead letters (oldest go first); 0 means unlimited."
    )
    max_bytes: int = Field(
        0, ge=0, description="Size cap of the stream (oldest go first); 0 means unlimited."
    )


# --- spec: autoscaling and circuit breaker ------------------------------------------------


_MIN_LE_MAX = _rule(
    "self.minReplicas <= self.maxReplicas",
    "scaling.minReplicas must not exceed scaling.maxReplicas",
)


class ScalingSpec(ApiModel):
    """The operator's autoscaler: backlog-driven, owns the worker Deployment's replicas."""

    model_config = _cel(_MIN_LE_MAX)

    enabled: bool = Field(
        True,
        description=(
            "false: the pool runs exactly minReplicas workers (manual, fixed size). "
            "true: the autoscaler picks replicas in [minReplicas, maxReplicas]."
        ),
    )
    min_replicas: int = Field(
        1,
        ge=0,
        le=10000,
        description="Lower bound. 0 lets an idle pool scale to zero (see activationBacklog).",
    )
    max_replicas: int = Field(10, ge=1, le=10000, description="Upper bound.")
    target_backlog_per_replica: int = Field(
        10,
        ge=1,
        description="Pending tasks per worker the autoscaler aims for (desired = backlog/this).",
    )
    activation_backlog: int = Field(
        0,
        ge=0,
        description="A pool at zero replicas wakes up when the backlog exceeds this.",
    )
    scale_up_max_step: int | None = Field(
        None,
        ge=1,
        description=(
            "Optional cap: at most this many replicas above the ready ones per decision. "
            "Unset (default): a burst gets every replica it needs in one step."
        ),
    )
    scale_up_max_percent: int | None = Field(
        None,
        ge=1,
        le=1000,
        description=(
            "Optional cap: at most this percent of the ready replicas added per decision; "
            "with scaleUpMaxStep set too, the larger allowance wins. Unset: no cap."
        ),
    )
    scale_down_delay_seconds: int = Field(
        30,
        ge=0,
        le=86400,
        description=(
            "Stabilization window: the pool scales down only to the highest recommendation "
            "seen in this window, so a short lull does not stop warm workers."
        ),
    )
    scale_to_zero_delay_seconds: int = Field(
        60,
        ge=0,
        le=86400,
        description=(
            "With minReplicas 0: how long the pool must be idle (no backlog, nothing in "
            "flight) before its last worker stops."
        ),
    )
    tolerance: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Demand within this fraction of current capacity changes nothing (anti-flap).",
    )
    poll_interval_seconds: int = Field(
        1,
        ge=1,
        le=300,
        description=(
            "How often the control loop reads the backlog and error rate while the pool has "
            "work; a quiescent pool sleeps until its first task or a change wakes it."
        ),
    )
    max_error_rate_for_scale_up: float = Field(
        0.5,
        ge=0,
        le=1,
        description=(
            "Scale-up is held while the pool's error rate is above this: more workers against "
            "a failing dependency only fail faster. 1 disables the hold."
        ),
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(_MIN_LE_MAX["message"])
        return self


class CircuitBreakerSpec(ApiModel):
    """Pool-wide circuit breaker: stop fetching when most tasks fail, probe, then resume."""

    enabled: bool = Field(True, description="false: the breaker never opens.")
    error_rate_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Opens when the error rate over windowSeconds reaches this (0..1].",
    )
    min_tasks: int = Field(
        20, ge=1, description="Minimum finished tasks in the window before it may open."
    )
    window_seconds: int = Field(
        60, ge=5, le=3600, description="Sliding window the error rate is measured over."
    )
    open_seconds: int = Field(
        30, ge=1, le=86400, description="Time spent Open before trying HalfOpen."
    )
    half_open_tasks: int = Field(
        5,
        ge=1,
        le=1000,
        description="Trial tasks run while HalfOpen; all must succeed to close again.",
    )


_SIGNED_NEEDS_KEY = _rule(
    "!self.requireSigned || has(self.signingKeySecret)",
    "security.requireSigned needs security.signingKeySecret",
)


class SecuritySpec(ApiModel):
    """Task signing (HMAC-SHA256) and payload encryption (AES-256-GCM)."""

    model_config = _cel(_SIGNED_NEEDS_KEY)

    signing_key_secret: SigningKeySecretRef | None = Field(
        None, description="Secret with the HMAC key that signs tasks."
    )
    encryption_key_secret: EncryptionKeySecretRef | None = Field(
        None, description="Secret with the AES-256-GCM key that encrypts task payloads."
    )
    require_signed: bool = Field(
        False, description="Dead-letter (as invalid) every task without a valid signature."
    )

    @model_validator(mode="after")
    def _signed_needs_key(self) -> SecuritySpec:
        if self.require_signed and self.signing_key_secret is None:
            raise ValueError(_SIGNED_NEEDS_KEY["message"])
        return self


# --- spec: pod template ---------------------------------------------------------------------


class ResourceRequirements(ApiModel):
    """CPU and memory of each worker container (Kubernetes resource quantities)."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Maximum, e.g. {memory: 512Mi}."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Reserved, e.g. {cpu: 100m, memory: 256Mi}."
    )


def _default_resources() -> ResourceRequirements:
    return ResourceRequirements(
        requests={"cpu": "100m", "memory": "256Mi"}, limits={"memory": "512Mi"}
    )


class EnvVar(ApiModel):
    """An environment variable of the worker container (Kubernetes EnvVar)."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME, description="Name.")
    value: str | None = Field(None, description="Literal value.")
    value_from: RawObject | None = Field(
        None, description="Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef...)."
    )


VOLUME_SOURCES = (
    "configMap",
    "secret",
    "emptyDir",
    "projected",
    "downwardAPI",
    "persistentVolumeClaim",
    "ephemeral",
)
"""Volume types a pool may add: a whitelist (new node-level types stay refused by default).

Pod Security ``restricted`` minus ``csi``: inline CSI volumes do whatever their driver does,
which the pool's tenant does not choose and the operator cannot judge."""
PROJECTED_SOURCES = ("configMap", "secret", "downwardAPI", "serviceAccountToken")
"""Sources of a ``projected`` volume; ``serviceAccountToken`` is further gated by the operator's
``JETPOOL_ALLOW_PROJECTED_TOKENS`` (it is an API credential the pool would otherwise lack)."""
MAX_VOLUMES = 64


def _preserved(what: str) -> dict[str, Any]:
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": f"Kubernetes {what} (validated by the apiserver on the Deployment).",
    }


def _exactly_one(keys: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"has(self.{k})" for k in keys) + "].exists_one(x, x)"


_ONE_VOLUME_TYPE = _rule(
    _exactly_one(VOLUME_SOURCES),
    "template.volumes: each volume needs exactly one of " + ", ".join(VOLUME_SOURCES) + ";"
    " hostPath and other node-level volume types are not accepted",
)
_ONE_PROJECTED_SOURCE = _rule(
    _exactly_one(PROJECTED_SOURCES),
    "template.volumes: each projected source needs exactly one of " + ", ".join(PROJECTED_SOURCES),
)


def _volume_item_schema() -> dict[str, Any]:
    """Only whitelisted keys are declared: any other (hostPath, ...) is an unknown field, which
    the apiserver rejects (strict field validation) or prunes, and then the rule sees no type."""
    projected_source = {
        "type": "object",
        "description": "One source of the projected volume.",
        "properties": {k: _preserved(f"{k} projection") for k in PROJECTED_SOURCES},
        "x-kubernetes-validations": [dict(_ONE_PROJECTED_SOURCE)],
    }
    sources: dict[str, Any] = {k: _preserved(f"{k} volume source") for k in VOLUME_SOURCES}
    sources["projected"] = {
        "type": "object",
        "description": "Kubernetes projected volume source.",
        "properties": {
            "defaultMode": {"type": "integer", "description": "File mode bits (octal 0440 = 288)."},
            "sources": {
                "type": "array",
                "maxItems": 32,
                "description": "configMap, secret, downwardAPI or serviceAccountToken projections.",
                "items": projected_source,
            },
        },
    }
    return {
        "type": "object",
        "description": "A Kubernetes Volume: its name and exactly one whitelisted source.",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 63, "description": "Volume name."},
            **sources,
        },
        "x-kubernetes-validations": [dict(_ONE_VOLUME_TYPE)],
    }


Volumes = Annotated[
    list[dict[str, Any]],
    WithJsonSchema({"type": "array", "maxItems": MAX_VOLUMES, "items": _volume_item_schema()}),
]
"""Kubernetes Volumes of whitelisted types only (:data:`VOLUME_SOURCES`)."""

UNSAFE_ANNOTATION_PREFIXES = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
)
_NO_SECURITY_ANNOTATIONS = _rule(
    "self.all(k, " + " && ".join(f"!k.startsWith('{p}')" for p in UNSAFE_ANNOTATION_PREFIXES) + ")",
    "template.annotations must not set AppArmor or seccomp profiles: the workers keep the"
    " restricted profile the operator gives them",
)


def _one_of(item: dict[str, Any], allowed: tuple[str, ...], extra: set[str]) -> bool:
    return set(item) <= {*allowed, *extra} and sum(k in item for k in allowed) == 1


def template_volume_problem(volumes: list[dict[str, Any]]) -> str | None:
    """The message of the first volume rule these volumes break (the CEL rules' mirror; an
    undeclared key counts as breaking it, as the apiserver refuses or prunes it)."""
    for volume in volumes:
        if not _one_of(volume, VOLUME_SOURCES, {"name"}):
            return _ONE_VOLUME_TYPE["message"]
        projected = volume.get("projected")
        sources = projected.get("sources") or [] if isinstance(projected, dict) else []
        if not all(_one_of(s, PROJECTED_SOURCES, set()) for s in sources):
            return _ONE_PROJECTED_SOURCE["message"]
    return None


class LocalObjectReference(ApiModel):
    name: SecretName = Field(description="Name of the object in the pool's namespace.")


class WorkerTemplate(ApiModel):
    """Pod-level knobs of the worker Deployment; the operator fills in everything else.

    Only what a tenant who may not create pods can safely get: no host namespaces, security
    context or privileges are exposed at all, and volumes are whitelisted (see docs/api.md).
    """

    resources: ResourceRequirements = Field(
        default_factory=_default_resources,
        json_schema_extra={"default": _default_resources().model_dump(by_alias=True, mode="json")},
        description=(
            "Worker container resources. Default: requests cpu 100m / memory 256Mi, limit "
            "memory 512Mi."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Extra environment variables. A JETPOOL_* name here replaces the value the "
            "operator renders (an escape hatch; see docs/worker-contract.md)."
        ),
    )
    env_from: RawList = Field(
        default_factory=list, description="Kubernetes EnvFromSource list (ConfigMaps, Secrets)."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the worker pods must match."
    )
    affinity: RawObject | None = Field(None, description="Kubernetes Affinity of worker pods.")
    tolerations: RawList = Field(default_factory=list, description="Kubernetes Tolerations.")
    topology_spread_constraints: RawList = Field(
        default_factory=list, description="Kubernetes TopologySpreadConstraints."
    )
    priority_class_name: str | None = Field(
        None, max_length=253, description="PriorityClass of worker pods."
    )
    service_account_name: SecretName | None = Field(
        None,
        description=(
            "Use this existing ServiceAccount (needs the operator's "
            "JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS). Unset: the operator creates <pool>-worker "
            "(with no API token mounted)."
        ),
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, description="Secrets for pulling the worker image."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on worker pods (jetpool labels win)."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Extra annotations on worker pods (no AppArmor or seccomp profiles).",
        json_schema_extra={"x-kubernetes-validations": [dict(_NO_SECURITY_ANNOTATIONS)]},
    )
    volumes: Volumes = Field(
        default_factory=list,
        description=(
            "Extra Kubernetes Volumes: " + ", ".join(VOLUME_SOURCES) + " only. A projected "
            "serviceAccountToken source needs the operator's JETPOOL_ALLOW_PROJECTED_TOKENS."
        ),
    )
    volume_mounts: RawList = Field(
        default_factory=list, description="Extra VolumeMounts of the worker container."
    )

    @model_validator(mode="after")
    def _safe_pod(self) -> WorkerTemplate:
        problem = template_volume_problem(self.volumes)
        if problem is not None:
            raise ValueError(problem)
        if any(k.startswith(UNSAFE_ANNOTATION_PREFIXES) for k in self.annotations):
            raise ValueError(_NO_SECURITY_ANNOTATIONS["message"])
        return self


# --- spec -----------------------------------------------------------------------------------


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


_DLQ_NOT_TASK_STREAM = _rule(
    "!has(self.deadLetter.stream) || !has(self.nats.stream)"
    " || self.deadLetter.stream != self.nats.stream",
    "deadLetter.stream must differ from nats.stream",
)
_DLQ_IMMUTABLE = _rule(
    "has(self.deadLetter.stream) == has(oldSelf.deadLetter.stream)"
    " && (!has(self.deadLetter.stream) || self.deadLetter.stream == oldSelf.deadLetter.stream)",
    "deadLetter.stream cannot change after creation: the old stream would keep its dead letters",
)


_KEYED_NEEDS_TRACKING = _rule(
    "(!has(self.keyedConcurrency) && !(has(self.rateLimit) && has(self.rateLimit.perKey)))"
    " || self.tracking.enabled",
    "keyedConcurrency and rateLimit.perKey need tracking.enabled: a task handed back while its "
    "key is busy must not use up an attempt",
)
_LANED = "(has(self.priorities) || has(self.ordered))"
_LANED_NEEDS_TRACKING = _rule(
    f"!{_LANED} || self.tracking.enabled",
    "priorities and ordered need tracking.enabled: their consumers have no delivery cap, so "
    "workers count a task's runs to dead-letter it",
)
_LANED_DEFAULT_SUBJECTS = _rule(
    f"!{_LANED} || !has(self.nats.subjects) || size(self.nats.subjects) == 0",
    "priorities and ordered need the default subjects (nats.subjects unset): their levels and "
    "partitions are laid out under tasks.<namespace>.<pool>",
)
_SCHEDULES_WITHOUT_LIMITS = _rule(
    "(has(self.schedules.enabled) ? !self.schedules.enabled"
    " : (!has(self.schedules.periodic) || size(self.schedules.periodic) == 0))"
    " || (self.nats.maxMsgs == 0 && self.nats.maxBytes == 0)",
    "schedules need a task stream without nats.maxMsgs/maxBytes limits: with them, "
    "nats-server would drop the oldest tasks when the stream is full",
)


_PERIODIC_UNSIGNED = _rule(
    "!self.security.requireSigned || !has(self.schedules.periodic)"
    " || size(self.schedules.periodic) == 0",
    "schedules.periodic cannot feed a pool with security.requireSigned: the operator holds no "
    "signing key, so every firing would be dead-lettered as invalid",
)
_PERIODIC_SUBJECT = _rule(
    "!has(self.nats.subjects) || size(self.nats.subjects) == 0"
    " || !has(self.schedules.periodic) || self.schedules.periodic.all(p, has(p.subject))",
    "schedules.periodic: with nats.subjects set, each schedule needs a subject (the default "
    "tasks.<namespace>.<pool>.<name> is not one of the pool's)",
)


class WorkerPoolSpec(ApiModel):
    """Desired state of a pool of task workers fed by one NATS JetStream stream."""

    model_config = _cel(
        _DLQ_NOT_TASK_STREAM,
        _DLQ_IMMUTABLE,
        _SCHEDULES_WITHOUT_LIMITS,
        _PERIODIC_UNSIGNED,
        _PERIODIC_SUBJECT,
        _KEYED_NEEDS_TRACKING,
        _LANED_NEEDS_TRACKING,
        _LANED_DEFAULT_SUBJECTS,
    )

    image: str = Field(
        min_length=1,
        max_length=1024,
        description="Worker image: built FROM the jetpool worker image, with the handler code.",
    )
    handler: str = Field(
        min_length=1,
        max_length=512,
        pattern=HANDLER,
        description="The task handler: 'package.module:function' or an entry-point name.",
    )
    image_pull_policy: PullPolicy = Field(
        PullPolicy.IF_NOT_PRESENT, description="Kubernetes imagePullPolicy of the worker."
    )
    nats: NatsSpec = Field(description="NATS connection, task stream and consumer.")
    concurrency: int = Field(4, ge=1, le=1024, description="Tasks in flight per worker.")
    task: TaskSpec = _obj(TaskSpec, "Per-task limits: timeout, payload size, time to live.")
    retry: RetrySpec = _obj(RetrySpec, "Retries with exponential backoff and jitter.")
    dead_letter: DeadLetterSpec = _obj(DeadLetterSpec, "Where failed tasks are kept.")
    tracking: TrackingSpec = _obj(TrackingSpec, "Task state and results by id; cancellation.")
    schedules: SchedulesSpec = _obj(SchedulesSpec, "Delayed and periodic tasks.")
    rate_limit: RateLimitSpec | None = Field(
        None, description="Pool-wide limit on task starts per second. Unset: no limit."
    )
    keyed_concurrency: KeyedConcurrencySpec | None = Field(
        None,
        description="Pool-wide limit on running tasks per key (a header). Unset: no limit.",
    )
    priorities: PrioritiesSpec | None = Field(
        None,
        description=(
            "Priority levels, each with its own consumer; higher levels start first. Unset: "
            "one level (docs/flow-control.md)."
        ),
    )
    ordered: OrderedSpec | None = Field(
        None,
        description=(
            "Per-key order for tasks published on tasks.<namespace>.<pool>.ordered.<key>. "
            "Unset: no ordered tasks (docs/flow-control.md)."
        ),
    )
    scaling: ScalingSpec = _obj(ScalingSpec, "Backlog-driven autoscaling.")
    circuit_breaker: CircuitBreakerSpec = _obj(
        CircuitBreakerSpec, "Pool-wide circuit breaker on the task error rate."
    )
    security: SecuritySpec = _obj(SecuritySpec, "Task signing and payload encryption.")
    memory_limit_bytes: int | None = Field(
        None,
        ge=1,
        description=(
            "Worker memory guard: above this RSS a worker stops fetching until memory falls "
            "below 90% of it. Default: 85% of template.resources.limits.memory, if set."
        ),
    )
    shutdown_grace_seconds: int = Field(
        25,
        ge=0,
        le=3600,
        description=(
            "On SIGTERM a worker stops fetching and lets in-flight tasks finish for this long; "
            "unfinished tasks are redelivered to another worker."
        ),
    )
    template: WorkerTemplate = _obj(WorkerTemplate, "Pod-level settings of the worker pods.")
    paused: bool = Field(
        False,
        description="true: scale the workers to zero and stop autoscaling; tasks stay queued.",
    )
    deletion_policy: DeletionPolicy = Field(
        DeletionPolicy.RETAIN,
        description=(
            "What deleting the pool does to its NATS streams. Retain (default) keeps the task "
            "and dead-letter streams, the task-state bucket and their messages; Delete "
            "removes them."
        ),
    )

    @property
    def keyed(self) -> bool:
        """Tasks may go back unrun while their key is busy (keyed concurrency or rate)."""
        return self.keyed_concurrency is not None or (
            self.rate_limit is not None and self.rate_limit.per_key is not None
        )

    @property
    def laned(self) -> bool:
        """Tasks are split over several consumers, one per priority level and ordered
        partition (:mod:`jetpool_protocol.lanes`)."""
        return self.priorities is not None or self.ordered is not None

    @property
    def schedules_active(self) -> bool:
        return self.schedules.active(self.nats.max_msgs, self.nats.max_bytes)

    @model_validator(mode="after")
    def _periodic_schedules_can_fire(self) -> WorkerPoolSpec:
        if self.schedules.periodic and self.security.require_signed:
            raise ValueError(_PERIODIC_UNSIGNED["message"])
        if self.nats.subjects and any(p.subject is None for p in self.schedules.periodic):
            raise ValueError(_PERIODIC_SUBJECT["message"])
        return self

    @model_validator(mode="after")
    def _schedules_without_limits(self) -> WorkerPoolSpec:
        limited = not schedules_allowed(self.nats.max_msgs, self.nats.max_bytes)
        wanted = self.schedules.enabled or (
            self.schedules.enabled is None and bool(self.schedules.periodic)
        )
        if limited and wanted:
            raise ValueError(_SCHEDULES_WITHOUT_LIMITS["message"])
        return self

    @model_validator(mode="after")
    def _keyed_needs_tracking(self) -> WorkerPoolSpec:
        if self.keyed and not self.tracking.enabled:
            raise ValueError(_KEYED_NEEDS_TRACKING["message"])
        return self

    @model_validator(mode="after")
    def _laned_needs_tracking_and_default_subjects(self) -> WorkerPoolSpec:
        if self.laned and not self.tracking.enabled:
            raise ValueError(_LANED_NEEDS_TRACKING["message"])
        if self.laned and self.nats.subjects:
            raise ValueError(_LANED_DEFAULT_SUBJECTS["message"])
        return self

    @model_validator(mode="after")
    def _dead_letter_stream_differs(self) -> WorkerPoolSpec:
        if self.dead_letter.stream is not None and self.dead_letter.stream == self.nats.stream:
            raise ValueError(_DLQ_NOT_TASK_STREAM["message"])
        return self


# --- status ---------------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the pool's state (Kubernetes metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Ready, NatsReady, CircuitOpen, ScalingLimited, Degraded or ControlReplicated.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase category of the last transition.",
    )
    message: str = Field("", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation this condition was computed from."
    )


class CircuitBreakerStatus(ApiModel):
    state: BreakerState = Field(BreakerState.CLOSED, description="Closed, Open or HalfOpen.")
    since: datetime | None = Field(None, description="When the breaker entered this state.")
    reason: str = Field("", description="Why it last changed state (CamelCase).")
    message: str = Field("", description="Human-readable details of the last change.")
    trips: int = Field(0, ge=0, description="Times the breaker has opened since creation.")
    epoch: int = Field(
        0, ge=0, description="Increments on every transition; workers reset trial counts on it."
    )
    last_reset_token: str | None = Field(
        None,
        description=(
            "Last value of the jetpool.dev/reset-breaker annotation that was honoured: the "
            "same value never resets twice."
        ),
    )
    trial_worker: str | None = Field(
        None, description="The one worker allowed to run trial tasks while HalfOpen."
    )


class IssueSeverity(StrEnum):
    INFO = "Info"
    WARNING = "Warning"
    CRITICAL = "Critical"


class HealthIssue(ApiModel):
    type: str = Field(
        min_length=1,
        description=(
            "CamelCase issue kind: Starvation, StuckTasks, DeadLetterGrowth, HighErrorRate, "
            "UnavailableReplicas, NatsUnreachable, BreakerOpen, WorkersMemoryPaused, "
            "WorkersControlUnknown, LingeringHandlers or WorkersNotFetching (docs/health.md)."
        ),
    )
    severity: IssueSeverity = Field(description="Info, Warning or Critical.")
    message: str = Field("", description="What is wrong and what to look at.")
    since: datetime | None = Field(None, description="When the issue was first seen.")


class HealthStatus(ApiModel):
    healthy: bool = Field(True, description="false while any Warning or Critical issue exists.")
    issues: list[HealthIssue] = Field(default_factory=list, description="Current issues.")


class NatsStatus(ApiModel):
    """The resolved NATS names, so tools need not re-derive the defaults."""

    stream: str = Field("", description="Task stream.")
    subjects: list[str] = Field(default_factory=list, description="Task subjects.")
    consumer: str = Field("", description="Durable pull consumer.")
    dead_letter_stream: str = Field("", description="Dead-letter stream.")
    task_state_bucket: str | None = Field(
        None, description="KV bucket of task states and results (spec.tracking)."
    )
    schedule_subject_prefix: str | None = Field(
        None,
        description="Delayed and periodic tasks wait as message schedules under <prefix>.>.",
    )
    rate_limit_stream: str | None = Field(
        None, description="Counter stream of the rate limit's windows (spec.rateLimit)."
    )
    key_lease_bucket: str | None = Field(
        None, description="KV bucket of the running tasks' key leases (spec.keyedConcurrency)."
    )


_CONDITIONS_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class FinishedTasks(ApiModel):
    """Task outcomes the live workers reported in the stats window."""

    seconds: int = Field(0, ge=0, description="The window's span.")
    succeeded: int = Field(0, ge=0, description="Tasks that succeeded.")
    failed_attempts: int = Field(0, ge=0, description="Handler runs that failed.")
    dead_lettered: int = Field(0, ge=0, description="Tasks moved to the dead-letter stream.")


class TaskCounts(ApiModel):
    """Tasks by step (one task's own story: `jetpool task status <id>`)."""

    queued: int | None = Field(None, ge=0, description="Waiting for a worker.")
    running: int = Field(0, ge=0, description="In a handler now.")
    waiting_to_retry: int | None = Field(
        None, ge=0, description="Failed, waiting out their retry backoff."
    )
    window: FinishedTasks | None = Field(None, description="Recently finished.")


class WorkerPoolStatus(ApiModel):
    """Observed state, written only by the operator (kopf keeps its own state in annotations)."""

    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation the status reflects."
    )
    replicas: int = Field(0, ge=0, description="Worker pods that exist.")
    ready_replicas: int = Field(0, ge=0, description="Worker pods that are ready.")
    desired_replicas: int = Field(0, ge=0, description="Replicas the autoscaler asks for.")
    backlog: int = Field(0, ge=0, description="Tasks waiting in the consumer (num_pending).")
    in_flight: int = Field(0, ge=0, description="Tasks delivered and not yet acknowledged.")
    backlog_by_level: dict[str, int] | None = Field(
        None,
        description=(
            "Pools with priorities or ordered keys: tasks waiting or running (pending plus "
            "unacknowledged) per level name, 'default' for a pool with ordered keys only, and "
            "'ordered' for all ordered partitions together."
        ),
    )
    redelivered: int = Field(0, ge=0, description="In-flight tasks delivered more than once.")
    dead_letters: int = Field(0, ge=0, description="Messages in the dead-letter stream.")
    throughput: float = Field(0.0, ge=0, description="Tasks finished per second, all workers.")
    tasks: TaskCounts | None = Field(None, description="Tasks by step.")
    error_rate: float = Field(
        0.0, ge=0, le=1, description="Failed / finished tasks over the breaker window (0..1)."
    )
    circuit_breaker: CircuitBreakerStatus | None = Field(
        None, description="State of the pool's circuit breaker."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Kubernetes-convention conditions; `kubectl wait --for=condition=Ready`.",
        json_schema_extra=_CONDITIONS_EXTRA,
    )
    health: HealthStatus | None = Field(None, description="Health checks and their findings.")
    last_scale_time: datetime | None = Field(None, description="When replicas last changed.")
    last_scale_reason: str | None = Field(None, description="Why replicas last changed.")
    selector: str | None = Field(
        None, description="Label selector of the worker pods, serialized (a=b,c=d)."
    )
    nats: NatsStatus | None = Field(None, description="Resolved NATS resource names.")
    controller_memory: RawObject | None = Field(
        None,
        description=(
            "Internal state of the control loop kept across operator restarts (e.g. when each "
            "health issue began). Not an API: its shape may change between releases."
        ),
    )


class WorkerPool(ApiModel):
    """A pool of task workers fed by NATS JetStream (validates whole manifests)."""

    api_version: Literal["jetpool.dev/v1alpha1"] = Field(
        "jetpool.dev/v1alpha1", description="API version."
    )
    kind: Literal["WorkerPool"] = Field("WorkerPool", description="Kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Kubernetes metadata.")
    spec: WorkerPoolSpec
    status: WorkerPoolStatus | None = None
