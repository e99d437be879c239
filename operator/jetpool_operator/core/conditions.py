"""Kubernetes-convention conditions of a WorkerPool (metav1.Condition semantics).

``lastTransitionTime`` moves only when a condition's status flips, so an unchanged
observation produces an unchanged status, and the operator sends no patch.
The condition types and reasons below are the API's vocabulary (docs/api.md lists them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from jetpool_operator.api.v1alpha1 import Condition, ConditionStatus


class ConditionType(StrEnum):
    READY = "Ready"
    """Workers are deployed and the desired number are ready (True also when scaled to zero)."""
    NATS_READY = "NatsReady"
    """Task stream, consumer and dead-letter stream exist with the desired config."""
    CIRCUIT_OPEN = "CircuitOpen"
    """The pool's breaker stopped task fetching (True while Open or HalfOpen)."""
    SCALING_LIMITED = "ScalingLimited"
    """The autoscaler wants more or fewer replicas than it may set."""
    DEGRADED = "Degraded"
    """Health checks found a Warning or Critical issue."""
    CONTROL_REPLICATED = "ControlReplicated"
    """The control bucket (breaker state) survives the loss of a server: False only for R1 on
    a clustered NATS (:mod:`jetpool_operator.core.control_bucket`)."""


class Reason(StrEnum):
    # Ready
    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    RECONCILE_FAILED = "ReconcileFailed"
    TEMPLATE_REFUSED = "TemplateRefused"
    """The template uses what the operator's settings do not allow; no Deployment is written."""
    CHILD_CONFLICT = "ChildConflict"
    """A child's name is taken by an object this pool does not own; it is left untouched."""
    # NatsReady
    STREAMS_READY = "StreamsReady"
    NATS_UNREACHABLE = "NatsUnreachable"
    STREAM_CONFLICT = "StreamConflict"
    CONSUMER_CONFLICT = "ConsumerConflict"
    NATS_ERROR = "NatsError"
    INVALID_CREDENTIALS = "InvalidCredentials"
    """The credentials Secret holds no usable .creds file (the message says what is wrong)."""
    INVALID_TLS = "InvalidTLS"
    """A CA, certificate or key in the TLS Secrets is not usable PEM."""
    # CircuitOpen
    CLOSED = "Closed"
    ERROR_RATE_EXCEEDED = "ErrorRateExceeded"
    PROBING = "Probing"
    BREAKER_DISABLED = "BreakerDisabled"
    # ScalingLimited
    WITHIN_LIMITS = "WithinLimits"
    AT_MAX_REPLICAS = "AtMaxReplicas"
    AT_MIN_REPLICAS = "AtMinReplicas"
    HELD_BY_ERROR_RATE = "HeldByErrorRate"
    SCALING_DISABLED = "ScalingDisabled"
    # Degraded
    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    # ControlReplicated
    REPLICATED = "Replicated"
    SINGLE_SERVER = "SingleServer"
    SINGLE_REPLICA_ON_CLUSTER = "SingleReplicaOnCluster"
    # any
    UNKNOWN = "Unknown"


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    found = find_condition(conditions, type_)
    return found is not None and found.status is ConditionStatus.TRUE


def status_of(conditions: Sequence[Condition], type_: str) -> ConditionStatus:
    """A missing condition is Unknown (Kubernetes API conventions)."""
    found = find_condition(conditions, type_)
    return ConditionStatus.UNKNOWN if found is None else found.status


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus | bool,
    *,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Return the conditions with ``type_`` set; the others keep their place and values.

    ``lastTransitionTime`` is ``now`` only when the status flips (or the condition is new);
    a changed reason or message alone keeps the old time.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    now = now.replace(microsecond=0)  # metav1.Time has second precision
    previous = find_condition(conditions, type_)
    transition = (
        now
        if previous is None or previous.status is not status
        else (previous.last_transition_time)
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def remove_condition(conditions: Sequence[Condition], type_: str) -> list[Condition]:
    return [c for c in conditions if c.type != type_]
