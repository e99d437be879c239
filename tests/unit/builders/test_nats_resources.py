"""Desired JetStream resources of a pool, and the update-or-conflict decision."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.nats_resources import (
    MAX_ACK_WAIT_SECONDS,
    MAX_DELIVER_MARGIN,
    AckPolicy,
    Conflict,
    Discard,
    InSync,
    Retention,
    Storage,
    Update,
    diff_consumer,
    diff_stream,
    plan,
)
from jetpool_operator.core.tenancy import Owner
from jetpool_protocol.naming import PoolNames

from .support import spec


class TestTaskStream:
    def test_defaults_come_from_the_protocols_pool_names(self) -> None:
        stream = plan("media", "resize", spec()).task_stream
        names = PoolNames(namespace="media", pool="resize")
        assert stream.name == names.stream
        assert list(stream.subjects) == [
            *names.default_subjects,
            f"{names.schedule_subject_prefix}.>",
        ]

    def test_it_is_a_durable_work_queue_that_holds_schedules_when_nothing_limits_it(self) -> None:
        stream = plan("media", "resize", spec()).task_stream
        assert stream.retention is Retention.WORK_QUEUE
        assert stream.storage is Storage.FILE
        # nats-server needs discard old for schedules; without limits it never drops a task
        assert (stream.max_msgs, stream.max_bytes) == (-1, -1)
        assert stream.discard is Discard.OLD
        assert stream.allow_msg_schedules
        assert stream.allow_rollup

    @pytest.mark.parametrize("limit", [{"maxMsgs": 100}, {"maxBytes": 1_000_000}])
    def test_a_limited_stream_refuses_rather_than_drops_and_holds_no_schedules(
        self, limit: dict[str, int]
    ) -> None:
        resources = plan("media", "resize", spec(nats={"url": "nats://n", **limit}))
        stream = resources.task_stream
        assert stream.discard is Discard.NEW
        assert not stream.allow_msg_schedules
        assert list(stream.subjects) == PoolNames("media", "resize").default_subjects
        assert resources.names.schedule_subject_prefix is None

    def test_the_task_state_bucket_keeps_states_in_the_storage_asked_for(self) -> None:
        default = plan("m", "p", spec()).task_state
        memory = plan("m", "p", spec(tracking={"storage": "Memory"})).task_state
        assert default is not None
        assert memory is not None
        assert (default.storage, memory.storage) == (Storage.FILE, Storage.MEMORY)
        assert plan("m", "p", spec(tracking={"enabled": False})).task_state is None

    def test_a_rate_limit_gets_a_counter_stream_of_its_own_subjects_in_memory(self) -> None:
        resources = plan("m", "p", spec(rateLimit={"perSecond": 50}))
        counter = resources.rate_limit
        names = PoolNames("m", "p")
        assert counter is not None
        assert counter.name == names.rate_limit_stream == f"{names.stream}-rate"
        assert counter.subjects == (f"{names.rate_limit_subject_prefix}.>",)
        assert (counter.allow_msg_counter, counter.storage) == (True, Storage.MEMORY)
        assert (counter.max_msgs_per_subject, counter.retention) == (1, Retention.LIMITS)
        assert counter.metadata == resources.task_stream.metadata  # the pool owns it
        assert plan("m", "p", spec()).rate_limit is None

    def test_keyed_concurrency_gets_a_lease_bucket_and_no_delivery_limit(self) -> None:
        keyed = {"header": "Customer", "maxPerKey": 2}
        resources = plan("m", "p", spec(keyedConcurrency=keyed))
        leases = resources.key_leases
        assert leases is not None
        assert leases.name == f"KV_{PoolNames('m', 'p').key_lease_bucket}"
        assert (leases.allow_msg_ttl, leases.storage, leases.max_msgs_per_subject) == (
            True,
            Storage.MEMORY,
            1,
        )
        # busy keys send tasks back unrun: the workers count runs instead of the server
        assert resources.consumer.max_deliver == -1
        per_key = {"perKey": {"header": "Customer", "perSecond": 5}}
        assert plan("m", "p", spec(rateLimit=per_key)).consumer.max_deliver == -1
        unkeyed = plan("m", "p", spec())
        assert unkeyed.key_leases is None
        assert unkeyed.consumer.max_deliver == 5 + MAX_DELIVER_MARGIN

    def test_schedules_can_be_turned_off(self) -> None:
        stream = plan("m", "p", spec(schedules={"enabled": False})).task_stream
        assert (stream.discard, stream.allow_msg_schedules) == (Discard.NEW, False)

    def test_zero_limits_mean_unlimited(self) -> None:
        stream = plan("media", "resize", spec()).task_stream
        assert (stream.max_bytes, stream.max_msgs, stream.max_age_seconds) == (-1, -1, 0.0)

    def test_spec_overrides_name_subjects_limits_and_replicas(self) -> None:
        stream = plan(
            "media",
            "resize",
            spec(
                nats={
                    "url": "nats://n",
                    "stream": "IMAGES",
                    "subjects": ["tasks.m.images.>", "tasks.m.thumbs.>"],
                    "replicas": 3,
                    "maxBytes": 1_000_000,
                    "maxAgeSeconds": 3600,
                    "duplicateWindowSeconds": 30,
                }
            ),
        ).task_stream
        assert (stream.name, stream.subjects) == (
            "IMAGES",
            ("tasks.m.images.>", "tasks.m.thumbs.>"),
        )
        assert (stream.replicas, stream.max_bytes, stream.max_age_seconds) == (3, 1_000_000, 3600)
        assert stream.duplicate_window_seconds == 30

    def test_the_stream_refuses_payloads_far_above_the_task_limit(self) -> None:
        stream = plan("m", "p", spec(task={"maxPayloadBytes": 1000})).task_stream
        assert 1000 < stream.max_msg_size <= 1000 + 64 * 1024


class TestConsumer:
    def test_it_is_the_durable_explicit_ack_consumer_on_the_task_subjects(self) -> None:
        resources = plan("media", "resize", spec())
        consumer = resources.consumer
        assert consumer.durable_name == "workers"
        assert consumer.stream == resources.task_stream.name
        # the task subjects only: the schedules waiting in the stream are never delivered
        assert consumer.filter_subjects == resources.names.subjects
        assert set(resources.task_stream.subjects) - set(consumer.filter_subjects) == {
            f"{PoolNames('media', 'resize').schedule_subject_prefix}.>"
        }
        assert consumer.ack_policy is AckPolicy.EXPLICIT

    def test_ack_wait_outlasts_a_short_task_and_is_at_most_a_minute(self) -> None:
        assert plan("m", "p", spec(task={"timeoutSeconds": 20})).consumer.ack_wait_seconds > 20
        long = plan("m", "p", spec(task={"timeoutSeconds": 120})).consumer
        assert long.ack_wait_seconds == MAX_ACK_WAIT_SECONDS  # heartbeats keep longer tasks

    def test_max_deliver_is_a_backstop_above_the_retry_budget(self) -> None:
        consumer = plan("m", "p", spec(retry={"maxAttempts": 4})).consumer
        assert consumer.max_deliver == 4 + MAX_DELIVER_MARGIN

    def test_max_ack_pending_fits_every_worker_at_full_concurrency(self) -> None:
        big = spec(concurrency=50, scaling={"maxReplicas": 100})
        consumer = plan("m", "p", big).consumer
        assert consumer.max_ack_pending >= 100 * 50
        assert plan("m", "p", spec()).consumer.max_ack_pending >= 1000

    def test_max_ack_pending_can_be_set_explicitly(self) -> None:
        pinned = spec(nats={"url": "nats://n", "maxAckPending": 64})
        assert plan("m", "p", pinned).consumer.max_ack_pending == 64


class TestDeadLetterStream:
    def test_it_keeps_dead_letters_by_age_under_the_pools_dlq_subjects(self) -> None:
        resources = plan("media", "resize", spec(deadLetter={"maxAgeSeconds": 86400}))
        dlq = resources.dead_letter_stream
        prefix = PoolNames(namespace="media", pool="resize").dead_letter_subject_prefix
        assert dlq.retention is Retention.LIMITS
        assert dlq.subjects == (f"{prefix}.>",)
        assert dlq.max_age_seconds == 86400
        assert dlq.name == f"{resources.task_stream.name}-dlq"

    def test_its_name_follows_an_overridden_task_stream_or_its_own_override(self) -> None:
        renamed = spec(nats={"url": "nats://n", "stream": "IMAGES"})
        assert plan("m", "p", renamed).dead_letter_stream.name == "IMAGES-dlq"
        own = spec(deadLetter={"stream": "FAILED"})
        assert plan("m", "p", own).dead_letter_stream.name == "FAILED"


class TestDiff:
    def test_an_identical_stream_needs_nothing(self) -> None:
        desired = plan("m", "p", spec()).task_stream
        assert diff_stream(desired, desired) == InSync()

    def test_subject_order_does_not_matter(self) -> None:
        desired = plan(
            "m", "p", spec(nats={"url": "nats://n", "subjects": ["tasks.m.a.>", "tasks.m.b.>"]})
        )
        observed = dataclasses.replace(
            desired.task_stream, subjects=tuple(reversed(desired.task_stream.subjects))
        )
        assert isinstance(diff_stream(desired.task_stream, observed), InSync)

    def test_changed_limits_are_an_in_place_update_listing_each_change(self) -> None:
        desired = plan("m", "p", spec()).task_stream
        observed = dataclasses.replace(desired, max_bytes=5, replicas=3)
        result = diff_stream(desired, observed)
        assert isinstance(result, Update)
        assert {c.field for c in result.changes} == {"max_bytes", "replicas"}

    def test_turning_schedules_off_is_a_conflict_nats_server_would_refuse(self) -> None:
        observed = plan("m", "p", spec()).task_stream
        desired = plan("m", "p", spec(schedules={"enabled": False})).task_stream
        result = diff_stream(desired, observed)
        assert isinstance(result, Conflict)
        assert "cannot turn off" in result.message

    def test_turning_schedules_on_is_an_in_place_update(self) -> None:
        observed = plan("m", "p", spec(schedules={"enabled": False})).task_stream
        desired = plan("m", "p", spec()).task_stream
        result = diff_stream(desired, observed)
        assert isinstance(result, Update)
        assert {c.field for c in result.changes} == {
            "subjects",
            "discard",
            "allow_rollup",
            "allow_msg_schedules",
        }

    def test_a_stream_with_other_retention_is_a_conflict_never_a_delete(self) -> None:
        desired = plan("m", "p", spec()).task_stream
        observed = dataclasses.replace(desired, retention=Retention.LIMITS, max_bytes=5)
        result = diff_stream(desired, observed)
        assert isinstance(result, Conflict)
        assert "retention" in result.message
        assert desired.name in result.message
        assert "never deletes" in result.message

    def test_a_consumer_with_another_ack_policy_is_a_conflict(self) -> None:
        desired = plan("m", "p", spec()).consumer
        observed = dataclasses.replace(desired, ack_policy=AckPolicy.NONE)
        assert isinstance(diff_consumer(desired, observed), Conflict)

    def test_a_consumer_with_another_ack_wait_is_updated_in_place(self) -> None:
        desired = plan("m", "p", spec()).consumer
        observed = dataclasses.replace(desired, ack_wait_seconds=5.0, max_deliver=99)
        result = diff_consumer(desired, observed)
        assert isinstance(result, Update)
        assert {c.field for c in result.changes} == {"ack_wait_seconds", "max_deliver"}


@given(
    timeout=st.integers(1, 86400),
    attempts=st.integers(1, 100),
    concurrency=st.integers(1, 1024),
    max_replicas=st.integers(1, 10000),
)
def test_planned_resources_are_always_consistent(
    timeout: int, attempts: int, concurrency: int, max_replicas: int
) -> None:
    resources = plan(
        "ns",
        "pool",
        spec(
            task={"timeoutSeconds": timeout},
            retry={"maxAttempts": attempts},
            concurrency=concurrency,
            scaling={"maxReplicas": max_replicas},
        ),
    )
    consumer = resources.consumer
    assert consumer.ack_wait_seconds == min(timeout + 30, MAX_ACK_WAIT_SECONDS)
    assert consumer.max_deliver > attempts
    assert consumer.max_ack_pending >= max_replicas * concurrency
    assert diff_stream(resources.task_stream, resources.task_stream) == InSync()
    assert diff_consumer(consumer, consumer) == InSync()
    assert resources.dead_letter_stream.name != resources.task_stream.name
    assert not set(resources.dead_letter_stream.subjects) & set(resources.task_stream.subjects)


class TestOwnership:
    def test_every_resource_of_the_plan_is_stamped_with_the_pool_as_owner(self) -> None:
        resources = plan("media", "resize", spec(), uid="u-1")
        stamp = Owner("media", "resize", "u-1").metadata()
        assert resources.owner == Owner("media", "resize", "u-1")
        for config in (resources.task_stream, resources.consumer, resources.dead_letter_stream):
            assert config.metadata == stamp

    def test_adoption_is_off_unless_the_spec_opts_in(self) -> None:
        assert not plan("m", "p", spec()).adopt_existing
        opted = spec(nats={"url": "nats://n", "adoptExisting": True})
        assert plan("m", "p", opted).adopt_existing

    def test_an_unstamped_stream_is_an_update_not_a_conflict(self) -> None:
        desired = plan("m", "p", spec(), uid="u").task_stream
        observed = dataclasses.replace(desired, metadata=())
        diff = diff_stream(desired, observed)
        assert isinstance(diff, Update)
        assert [c.field for c in diff.changes] == ["metadata"]

    def test_a_pool_that_recorded_the_legacy_default_keeps_its_streams(self) -> None:
        legacy = PoolNames("a-b", "c").legacy_stream
        resources = plan("a-b", "c", spec(), recorded_stream=legacy)
        assert resources.task_stream.name == "jetpool-a-b-c"
        assert resources.dead_letter_stream.name == "jetpool-a-b-c-dlq"

    def test_a_recorded_stream_other_than_the_legacy_default_is_not_trusted(self) -> None:
        resources = plan("b", "x", spec(), recorded_stream="jetpool-a_victim-tasks")
        assert resources.task_stream.name == PoolNames("b", "x").stream

    def test_an_explicit_stream_gets_the_classic_dlq_suffix(self) -> None:
        named = spec(nats={"url": "nats://n", "stream": "ORDERS"})
        assert plan("m", "p", named).dead_letter_stream.name == "ORDERS-dlq"
