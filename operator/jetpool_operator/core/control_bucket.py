"""PURE: the replicas of the control bucket, the one KV bucket per NATS system that carries
every pool's breaker state to its workers.

Its replicas come from the operator's configuration (``JETPOOL_CONTROL_REPLICAS``, default 3)
and are raised when a pool asks for more (``spec.nats.replicas``); they are never lowered,
since other pools share the bucket. A single server takes R1 only. A bucket left at R1 on a
cluster (configured so, or raising it failed) is reported by each pool's ``ControlReplicated``
condition: losing that one server would lose every breaker state until the operator writes
it again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from jetpool_operator.api.v1alpha1 import ConditionStatus
from jetpool_operator.core.conditions import Reason
from jetpool_protocol.naming import CONTROL_BUCKET

CONTROL_REPLICAS_ENV = "JETPOOL_CONTROL_REPLICAS"
DEFAULT_CONTROL_REPLICAS = 3
MAX_REPLICAS = 5
"""JetStream's limit on replicas of a stream."""


def control_replicas_from_env(env: Mapping[str, str] = os.environ) -> int:
    """The configured replicas; raises ValueError naming the variable and the range."""
    raw = env.get(CONTROL_REPLICAS_ENV, "").strip() or str(DEFAULT_CONTROL_REPLICAS)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"{CONTROL_REPLICAS_ENV}={raw!r}: a number of replicas, 1..{MAX_REPLICAS}")
    return value


@dataclass(frozen=True, slots=True)
class ControlBucket:
    """What the operator last saw of the bucket on one NATS system."""

    replicas: int
    clustered: bool
    problem: str | None = None
    """Why the replicas could not be raised to what is wanted (the server's answer)."""


def wanted_replicas(
    *, configured: int, pool_replicas: int, current: int | None, clustered: bool | None
) -> int | None:
    """Replicas to create the bucket with (``current`` None) or raise it to; None: leave it.

    ``clustered`` None means not known yet (before the bucket exists): the wanted count is
    tried, and a single server's refusal is answered with R1 by the adapter.
    """
    if clustered is False:
        return 1 if current is None else None
    want = min(max(configured, pool_replicas, 1), MAX_REPLICAS)
    if current is None:
        return want
    return want if want > current else None


def replication_condition(bucket: ControlBucket | None) -> tuple[ConditionStatus, str, str]:
    """(status, reason, message) of a pool's ``ControlReplicated`` condition."""
    if bucket is None:
        return ConditionStatus.UNKNOWN, Reason.UNKNOWN, "control bucket not read yet"
    if not bucket.clustered:
        return (
            ConditionStatus.TRUE,
            Reason.SINGLE_SERVER,
            f"control bucket {CONTROL_BUCKET}: R1 on a single server (nothing to replicate to)",
        )
    if bucket.replicas > 1:
        return (
            ConditionStatus.TRUE,
            Reason.REPLICATED,
            f"control bucket {CONTROL_BUCKET}: {bucket.replicas} replicas",
        )
    why = f" ({bucket.problem})" if bucket.problem else ""
    return (
        ConditionStatus.FALSE,
        Reason.SINGLE_REPLICA_ON_CLUSTER,
        f"control bucket {CONTROL_BUCKET} has 1 replica on a clustered NATS{why}: losing its "
        f"server loses every pool's breaker state until the operator writes it again; set "
        f"{CONTROL_REPLICAS_ENV} (chart: controlBucket.replicas) to 3",
    )
