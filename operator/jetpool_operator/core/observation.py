"""How the operator observes a thousand pools without asking NATS a thousand questions a second.

Per-pool polling (one consumer-info request per pool per tick) costs a core at a thousand idle
pools. Batched observation instead lists every stream once per tick per NATS connection (a
paged ``$JS.API.STREAM.LIST``) and derives what it can from the listing alone:

* a task stream is a WorkQueue stream, so a task leaves it when it is acknowledged or
  terminated: an **empty** task stream means no backlog and nothing in flight, and its
  consumer need not be asked; only pools with messages cost a consumer-info request;
* the dead-letter count is the dead-letter stream's message count;
* a pool with nothing to do is **quiescent**: its loop sleeps a long recheck interval and is
  woken when the listing shows its streams changed (the first task of a burst), or by the
  Kubernetes events that already wake it (spec, Deployment).

Pure decisions here; the listing is :mod:`jetpool_operator.adapters.stream_listing`, the loop
that runs it is :mod:`jetpool_operator.observer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

OBSERVATION_ENV = "JETPOOL_OBSERVATION"
LISTING_PERIOD_SECONDS = 1.0
"""How often each NATS connection's streams are listed (the idle pools' reaction time)."""
LISTING_MAX_AGE_SECONDS = 2.5 * LISTING_PERIOD_SECONDS
"""An older listing (NATS slow or down) is not trusted: the pool asks its consumer itself."""
QUIESCENT_RECHECK_SECONDS = 300.0
"""A quiescent pool re-verifies its streams, children and control state this often."""


class ObservationMode(StrEnum):
    BATCHED = "batched"
    """One stream listing per connection per tick; quiescent pools sleep until woken."""
    PER_POOL = "per-pool"
    """Every pool asks its own consumer every tick (the design before batching; kept as the
    benchmark's in-run baseline and as a fallback)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ObservationMode:
        raw = env.get(OBSERVATION_ENV, "").strip().lower() or cls.BATCHED.value
        try:
            return cls(raw)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"{OBSERVATION_ENV} must be one of {choices}, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class StreamState:
    """What the listing says of one stream."""

    messages: int
    last_sequence: int
    consumers: int


@dataclass(frozen=True, slots=True)
class PoolStreams:
    """A pool's two streams as one listing saw them (None: not in the listing)."""

    tasks: StreamState | None
    dead_letters: StreamState | None


def pool_streams(listing: Mapping[str, StreamState], stream: str, dead_letters: str) -> PoolStreams:
    return PoolStreams(listing.get(stream), listing.get(dead_letters))


def needs_consumer_info(streams: PoolStreams | None) -> bool:
    """Whether the consumer must be asked for the backlog: yes unless a fresh listing shows the
    task stream empty (a missing stream is asked too, so the error names what is wrong)."""
    return streams is None or streams.tasks is None or streams.tasks.messages > 0


def resources_listed(streams: PoolStreams) -> bool:
    """Both streams are listed and the task stream has a consumer; otherwise something was
    deleted behind the operator's back and must be recreated."""
    return (
        streams.tasks is not None
        and streams.tasks.consumers > 0
        and streams.dead_letters is not None
    )


def should_wake(read: PoolStreams | None, listed: PoolStreams) -> bool:
    """A quiescent pool wakes when a listing differs from what its loop last read: a first
    task (messages, last sequence), a purge, a dead letter, a stream or consumer deleted by
    hand. A pool that read no listing is not asleep on one (it asks its consumer itself)."""
    return read is not None and read != listed


@dataclass(frozen=True, slots=True)
class Activity:
    """What one tick saw and decided, as far as quiescence is concerned."""

    backlog: int | None
    """Pending plus ack-pending tasks; None when NATS could not be observed."""
    in_flight: int
    """Tasks the workers report running."""
    desired_replicas: int
    current_replicas: int
    ready_replicas: int
    floor_replicas: int
    """Where the autoscaler settles without work: minReplicas, or 0 for a paused pool."""
    breaker_closed: bool
    healthy: bool
    trouble: bool
    """A NATS problem or a held-back or failed child apply (retried on the short interval)."""
    listed: bool = True
    """A fresh listing covered the pool: only then can a change of its streams wake it."""


def quiescent(activity: Activity) -> bool:
    """Nothing to do and nothing that would change by itself: no work, no pending scale step
    (a scale-down waits out its delay, so desired must already be the floor), workers ready,
    breaker Closed (an Open one times out into HalfOpen), healthy, no error to retry, and a
    working listing to wake it again."""
    a = activity
    return (
        a.backlog == 0
        and a.in_flight == 0
        and a.desired_replicas == a.current_replicas == a.ready_replicas == a.floor_replicas
        and a.breaker_closed
        and a.healthy
        and not a.trouble
        and a.listed
    )
