"""Properties of the stranded-task sweep against a model of one WorkQueue consumer.

The model keeps what nats-server 2.15 keeps for a durable explicit-ack pull consumer
(``server/consumer.go``, ``server/filestore.go``): each pending message with its original
delivery sequence, redelivery counts, and the *store's* ack floor that
``$JS.API.CONSUMER.INFO`` reports. That floor moves on an ack of the delivery right above it
(then up to the next pending delivery) or to the delivered sequence when nothing is left
pending (``consumerFileStore.UpdateAcks``); a message the server gives up on only leaves the
pending set (``UpdateDelivered``), stays in the stream and keeps its redelivery count. Filter
changes never rewind the consumer. The real server is exercised by
``tests/adapters/test_stranded_sweep.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from jetpool_operator.core.stranded import (
    ConsumerView,
    Finding,
    attribute,
    covered,
    still_valid,
    sweep_plan,
)

SUBJECTS = ("x", "y")


@dataclass
class Consumer:
    max_deliver: int
    filters: frozenset[str] = frozenset(SUBJECTS)
    stream: dict[int, str] = field(default_factory=dict)
    """Sequence -> subject of every message still in the stream."""
    last_seq: int = 0
    next_sseq: int = 1
    next_dseq: int = 1
    pending: dict[int, int] = field(default_factory=dict)
    """Sequence -> original delivery sequence."""
    deliveries: dict[int, int] = field(default_factory=dict)
    given_up: set[int] = field(default_factory=set)
    gave_up: int = 0
    """How many tasks were ever given up (the sweep removes them from ``given_up``)."""
    floor: tuple[int, int] = (0, 0)
    """The store's ack floor: (consumer sequence, stream sequence)."""
    delivered: tuple[int, int] = (0, 0)

    # --- what the server does ------------------------------------------------------------------

    def publish(self, subject: str) -> None:
        self.last_seq += 1
        self.stream[self.last_seq] = subject

    def deliver_new(self) -> None:
        """A pull with nothing to redeliver: the next message the filter takes."""
        for seq in range(self.next_sseq, self.last_seq + 1):
            if self.stream.get(seq) in self.filters:
                dseq = self.next_dseq
                self.next_dseq += 1
                self.next_sseq = seq + 1
                self.pending[seq] = dseq
                self.deliveries[seq] = 1
                self.delivered = (dseq, max(self.delivered[1], seq))
                return
        self.next_sseq = self.last_seq + 1  # in memory only: the store keeps its delivered

    def redeliver(self, index: int) -> None:
        """A pending message's ack wait ran out and a worker pulls: delivered again, or given
        up when it already was delivered ``max_deliver`` times."""
        if not self.pending:
            return
        seq = sorted(self.pending)[index % len(self.pending)]
        if 0 < self.max_deliver <= self.deliveries[seq]:
            del self.pending[seq]
            self.given_up.add(seq)
            self.gave_up += 1
            self.deliveries[seq] += 1
            return
        self.deliveries[seq] += 1
        dseq = self.next_dseq
        self.next_dseq += 1
        self.delivered = (dseq, self.delivered[1])

    def ack(self, index: int) -> None:
        if not self.pending:
            return
        seq = sorted(self.pending)[index % len(self.pending)]
        dseq = self.pending.pop(seq)
        self._remove(seq)
        if not self.pending:
            self.floor = self.delivered
        elif dseq == self.floor[0] + 1:
            self.floor = (dseq, seq)
            if self.delivered[0] > dseq:
                for ss in range(seq + 1, self.delivered[1] + 1):
                    if ss in self.pending:
                        self.floor = (self.pending[ss] - 1, ss - 1)
                        break

    def _remove(self, seq: int) -> None:
        self.stream.pop(seq, None)
        self.deliveries.pop(seq, None)
        self.given_up.discard(seq)

    # --- what the consumer reports, what the sweep sees ---------------------------------------

    def redelivered(self) -> int:
        if self.max_deliver == 1:
            return 0  # the server reports none with maxDeliver 1
        return sum(1 for seq, n in self.deliveries.items() if n > 1)

    def view(self) -> ConsumerView:
        return ConsumerView(
            ack_pending=len(self.pending),
            delivered_stream_sequence=self.delivered[1],
            ack_floor_stream_sequence=self.floor[1],
            redelivered=self.redelivered(),
            max_deliver=self.max_deliver,
            filter_subjects=tuple(sorted(self.filters)),
            created="c1",
        )

    def candidates(self, up_to: int) -> list[int]:
        return [s for s, subj in self.stream.items() if s <= up_to and subj in self.filters]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(SUBJECTS)),
        st.tuples(st.just("deliver"), st.just(0)),
        st.tuples(st.just("redeliver"), st.integers(0, 5)),
        st.tuples(st.just("ack"), st.integers(0, 5)),
        st.tuples(st.just("filters"), st.sampled_from([("x",), ("y",), SUBJECTS])),
        st.tuples(st.just("sweep"), st.just(0)),
    ),
    max_size=60,
)


def _apply(consumer: Consumer, op: str, arg: object) -> None:
    if op == "publish":
        consumer.publish(str(arg))
    elif op == "deliver":
        consumer.deliver_new()
    elif op == "redeliver":
        consumer.redeliver(int(str(arg)))
    elif op == "ack":
        consumer.ack(int(str(arg)))
    elif op == "filters":
        consumer.filters = frozenset(arg)  # type: ignore[arg-type]
    elif op == "sweep":
        plan = sweep_plan(consumer.view())
        if plan is not None and still_valid(plan, consumer.view()):
            for seq in covered(consumer.candidates(plan.up_to_sequence), plan)[:5]:
                consumer._remove(seq)  # dead-lettered, deleted from the stream


@settings(max_examples=400)
@given(st.sampled_from([-1, 1, 2, 3]), operations)
def test_a_sweep_never_takes_a_task_that_is_pending_or_can_still_be_delivered(
    max_deliver: int, ops: list[tuple[str, object]]
) -> None:
    consumer = Consumer(max_deliver)
    for op, arg in ops:
        _apply(consumer, op, arg)
        plan = sweep_plan(consumer.view())
        if plan is None:
            continue
        for seq in consumer.candidates(plan.up_to_sequence):
            assert seq not in consumer.pending
            assert seq < consumer.next_sseq


@settings(max_examples=400)
@given(st.sampled_from([1, 2, 3]), operations)
def test_an_idle_consumer_is_swept_of_every_task_given_up_in_its_filter(
    max_deliver: int, ops: list[tuple[str, object]]
) -> None:
    consumer = Consumer(max_deliver)
    for op, arg in ops:
        _apply(consumer, op, arg)
        if consumer.pending:
            continue
        plan = sweep_plan(consumer.view())
        for seq in consumer.given_up:
            if consumer.stream[seq] in consumer.filters:
                assert plan is not None
                assert seq <= plan.up_to_sequence


MIXED = [
    ("publish", "y"),  # waits on y ...
    ("filters", ("x",)),  # ... while the pool's subjects exclude it
    ("publish", "x"),
    ("deliver", 0),  # the consumer passes y over
    ("redeliver", 0),
    ("redeliver", 0),
    ("redeliver", 0),  # x is given up
    ("filters", SUBJECTS),
]


@settings(max_examples=400)
@given(st.sampled_from([-1, 1, 2, 3]), operations)
@example(2, MIXED)
@example(3, MIXED)
def test_a_record_never_claims_more_than_the_counts_allow(
    max_deliver: int, ops: list[tuple[str, object]]
) -> None:
    consumer = Consumer(max_deliver)
    for op, arg in ops:
        _apply(consumer, op, arg)
        view = consumer.view()
        plan = sweep_plan(view)
        if plan is None:
            continue
        found = consumer.candidates(plan.up_to_sequence)
        if not found:
            continue
        verdict = attribute(len(found), view)
        if verdict.finding is Finding.PASSED_OVER:
            assert not consumer.given_up.intersection(found)
        if verdict.finding is Finding.MAX_DELIVERIES:
            assert len(found) <= view.redelivered
            exact = not consumer.pending and all(
                consumer.stream[s] in consumer.filters for s in consumer.given_up
            )
            if exact:
                assert set(found) <= consumer.given_up


@settings(max_examples=200)
@given(st.sampled_from([2, 3]), operations, st.randoms(use_true_random=False))
def test_a_task_given_up_after_an_older_delivery_is_found_once_that_one_is_acked(
    max_deliver: int, ops: list[tuple[str, object]], rnd: random.Random
) -> None:
    """Under load: the floor passes a given-up task once every delivery older than it is
    acked (in any order), whatever newer ones are still pending. (A task given up while it was
    the oldest delivery holds the floor below itself until an ack leaves nothing pending, even
    once swept: the sweep's documented limit, so none is here.)"""
    consumer = Consumer(max_deliver)
    for op, arg in ops:
        if op != "filters":
            _apply(consumer, op, arg)
    assume(consumer.gave_up == 0)

    def publish_and_deliver() -> int:
        consumer.publish("x")
        while consumer.next_sseq <= consumer.last_seq:
            consumer.deliver_new()
        return consumer.last_seq

    older = publish_and_deliver()
    stuck = publish_and_deliver()
    while stuck in consumer.pending:
        consumer.redeliver(sorted(consumer.pending).index(stuck))
    assert stuck in consumer.given_up
    running = publish_and_deliver()
    assert older in consumer.pending
    assert sweep_plan(consumer.view()) is None or stuck not in consumer.candidates(
        sweep_plan(consumer.view()).up_to_sequence  # type: ignore[union-attr]
    )
    while any(seq < stuck for seq in consumer.pending):
        consumer.ack(rnd.randrange(sum(1 for seq in consumer.pending if seq < stuck)))
    assert running in consumer.pending
    plan = sweep_plan(consumer.view())
    assert plan is not None
    assert stuck in consumer.candidates(plan.up_to_sequence)
