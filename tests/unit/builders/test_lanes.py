"""Laned pools (priorities, ordered keys): subjects, transform and consumers, over plain data."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core import lanes
from jetpool_operator.core.nats_resources import (
    UNLIMITED,
    ConsumerConfig,
    InSync,
    Update,
    diff_consumer,
    diff_stream,
    plan,
)
from jetpool_protocol.lanes import Lane, decode_lanes
from tests.unit.subjects import matches, overlap

from .support import spec

BASE = "tasks.media.resize"
LEVELS = [{"name": "high", "weight": 100}, {"name": "normal", "weight": 10}, {"name": "low"}]
PRIORITIES = {"levels": LEVELS, "default": "normal"}


def stored(subject: str, transform: tuple[str, str] | None, partition: int) -> str:
    """The subject a message is stored under (the partition the server's hash would pick)."""
    if transform is None or not matches(transform[0], subject):
        return subject
    key = subject.rsplit(".", 1)[1]
    return f"{subject.rsplit('.', 2)[0]}.ordered.{partition}.{key}"


class TestHelpers:
    @pytest.mark.parametrize(
        ("pattern", "subject", "expected"),
        [
            ("a.*", "a.b", True),
            ("a.*", "a.b.c", False),
            ("a.>", "a.b.c", True),
            ("a.>", "a", False),
            ("a.b", "a.b", True),
            ("a.b", "a.c", False),
        ],
    )
    def test_matches(self, pattern: str, subject: str, expected: bool) -> None:
        assert matches(pattern, subject) is expected

    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [
            ("a.*", "a.b.>", False),
            ("a.>", "a.b.>", True),
            ("a.*", "a.b", True),
            ("a.x.>", "a.y.>", False),
            ("a.o.1.*", "a.o.2.*", False),
            ("a.o.*", "a.o.1.*", False),
        ],
    )
    def test_overlap(self, a: str, b: str, expected: bool) -> None:
        assert overlap(a, b) is expected


class TestLayout:
    def test_a_plain_pool_has_none_and_keeps_one_consumer_over_its_subjects(self) -> None:
        assert lanes.layout("media", "resize", "workers", spec()) is None
        resources = plan("media", "resize", spec())
        assert resources.lane_consumers == ()
        assert resources.lanes == ()
        assert resources.consumer.filter_subjects == (f"{BASE}.>",)
        assert resources.task_stream.subject_transform is None
        assert resources.consumers == (resources.consumer,)

    def test_priorities_give_each_level_its_subject_space_and_consumer(self) -> None:
        resources = plan("media", "resize", spec(priorities=PRIORITIES))
        assert resources.task_stream.subjects[:4] == (
            f"{BASE}.*",
            f"{BASE}.high.>",
            f"{BASE}.normal.>",
            f"{BASE}.low.>",
        )
        assert resources.task_stream.subject_transform is None
        assert resources.consumer.durable_name == "workers"
        assert resources.consumer.filter_subjects == (f"{BASE}.*", f"{BASE}.normal.>")
        assert [(c.durable_name, c.filter_subjects) for c in resources.lane_consumers] == [
            ("workers-high", (f"{BASE}.high.>",)),
            ("workers-low", (f"{BASE}.low.>",)),
        ]
        assert resources.lanes == (
            Lane("workers-high", 100, "high"),
            Lane("workers", 10, "normal"),
            Lane("workers-low", 1, "low"),
        )

    def test_ordered_keys_get_a_transform_and_one_single_task_consumer_per_partition(
        self,
    ) -> None:
        resources = plan("media", "resize", spec(ordered={"partitions": 3}))
        stream = resources.task_stream
        assert stream.subjects[:2] == (f"{BASE}.*", f"{BASE}.ordered.*")
        assert stream.subject_transform == (
            f"{BASE}.ordered.*",
            f"{BASE}.ordered.{{{{partition(3,1)}}}}.{{{{wildcard(1)}}}}",
        )
        assert resources.consumer.filter_subjects == (f"{BASE}.*",)
        assert resources.consumer.max_ack_pending == -1  # a sweep at a limit would be held
        assert [(c.durable_name, c.filter_subjects) for c in resources.lane_consumers] == [
            (f"workers-ordered-{p}", (f"{BASE}.ordered.{p}.*",)) for p in range(3)
        ]
        assert {c.max_ack_pending for c in resources.lane_consumers} == {1}
        assert resources.lanes == (
            Lane("workers", 1, "default"),
            *(Lane(f"workers-ordered-{p}", 1, "ordered", True) for p in range(3)),
        )

    def test_every_consumer_of_a_laned_pool_has_no_delivery_cap_and_the_same_ack_wait(
        self,
    ) -> None:
        resources = plan("media", "resize", spec(priorities=PRIORITIES, ordered={}))
        assert {c.max_deliver for c in resources.consumers} == {UNLIMITED}
        assert len({c.ack_wait_seconds for c in resources.consumers}) == 1
        assert {c.metadata for c in resources.consumers} == {resources.consumer.metadata}
        assert len(resources.consumers) == 3 + 8

    def test_the_consumer_name_follows_nats_consumer(self) -> None:
        resources = plan(
            "media", "resize", spec(nats={"url": "nats://n", "consumer": "w"}, ordered={})
        )
        assert [c.durable_name for c in resources.consumers][:2] == ["w", "w-ordered-0"]

    def test_the_schedules_stay_on_their_own_subjects_beside_the_lanes(self) -> None:
        stream = plan("media", "resize", spec(ordered={})).task_stream
        assert stream.subjects[-1].startswith("jetpool.schedules.media.resize")

    def test_the_lanes_the_plan_names_are_the_workers_lanes(self) -> None:
        resources = plan("media", "resize", spec(priorities=PRIORITIES, ordered={}))
        assert {lane.consumer for lane in resources.lanes} == {
            c.durable_name for c in resources.consumers
        }


class TestReconcile:
    def test_a_plain_pool_gaining_priorities_narrows_workers_in_place(self) -> None:
        before = plan("media", "resize", spec()).consumer
        after = plan("media", "resize", spec(priorities=PRIORITIES)).consumer
        diff = diff_consumer(after, before)
        assert isinstance(diff, Update)
        assert {c.field for c in diff.changes} >= {"filter_subjects", "max_deliver"}

    def test_a_changed_partition_count_updates_the_transform_in_place(self) -> None:
        before = plan("media", "resize", spec(ordered={"partitions": 8})).task_stream
        after = plan("media", "resize", spec(ordered={"partitions": 16})).task_stream
        diff = diff_stream(after, before)
        assert isinstance(diff, Update)
        assert [c.field for c in diff.changes] == ["subject_transform"]
        assert diff_stream(after, dataclasses.replace(after)) == InSync()


def _filters(consumers: tuple[ConsumerConfig, ...]) -> list[tuple[str, str]]:
    return [(c.durable_name, f) for c in consumers for f in c.filter_subjects]


_LEVEL_NAME = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True).filter(
    lambda n: n != "ordered"
)


@st.composite
def _laned(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = draw(st.lists(_LEVEL_NAME, min_size=2, max_size=5, unique=True) | st.none())
    if names is not None:
        out["priorities"] = {
            "levels": [{"name": n, "weight": draw(st.integers(1, 1000))} for n in names],
            "default": draw(st.sampled_from(names)),
        }
    if names is None or draw(st.booleans()):
        out["ordered"] = {"partitions": draw(st.integers(1, 64))}
    return out


_TOKEN = st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True)


@given(laned=_laned(), tokens=st.lists(_TOKEN, min_size=1, max_size=3), data=st.data())
def test_no_two_consumers_share_a_subject_and_every_stored_task_has_exactly_one(
    laned: dict[str, Any], tokens: list[str], data: st.DataObject
) -> None:
    resources = plan("media", "resize", spec(**laned))
    filters = _filters(resources.consumers)
    for (a, fa), (b, fb) in itertools.combinations(filters, 2):
        assert a == b or not overlap(fa, fb), (fa, fb)
    stream = resources.task_stream
    levels = [lv["name"] for lv in laned.get("priorities", {}).get("levels", [])]
    # a publish on some subject under the pool: a known level, the ordered space, or anything
    head = data.draw(st.sampled_from([*levels, "ordered", tokens[0]]))
    subject = ".".join([BASE, head, *tokens[1:]] if head != tokens[0] else [BASE, *tokens])
    captured = [s for s in stream.subjects if matches(s, subject)]
    assert len(captured) <= 1, captured
    documented = (
        subject.count(".") == 3  # tasks.<ns>.<pool>.<name>
        or (head in levels and len(tokens) > 1)  # <level>.<name...>
        or (head == "ordered" and "ordered" in laned and len(tokens) == 2)  # ordered.<key>
    )
    assert bool(captured) == documented, subject
    partitions = laned.get("ordered", {}).get("partitions", 1)
    where = stored(subject, stream.subject_transform, data.draw(st.integers(0, partitions - 1)))
    readers = {
        c.durable_name
        for c in resources.consumers
        if any(matches(f, where) for f in c.filter_subjects)
    }
    # a task the stream stores is read by exactly one consumer (one it refuses is stored
    # nowhere: a publish straight onto a partition's subject is refused too)
    assert not captured or len(readers) == 1, (subject, where, readers)


@given(laned=_laned())
def test_every_consumer_reads_only_subjects_the_stream_stores(laned: dict[str, Any]) -> None:
    """A filter no stream subject overlaps reads nothing (nats-server would refuse it too),
    except the partitions, which read what the transform stores."""
    resources = plan("media", "resize", spec(**laned))
    stream = resources.task_stream
    partitions = laned.get("ordered", {}).get("partitions", 0)
    for _, f in _filters(resources.consumers):
        if f.startswith(f"{BASE}.ordered."):
            assert f in {f"{BASE}.ordered.{p}.*" for p in range(partitions)}
        else:
            assert any(overlap(s, f) for s in stream.subjects), f


@given(laned=_laned())
def test_the_lanes_survive_the_worker_env(laned: dict[str, Any]) -> None:
    resources = plan("media", "resize", spec(**laned))
    encoded = tuple(lane.encode() for lane in resources.lanes)
    assert decode_lanes(encoded) == resources.lanes
    assert resources.lanes[0].consumer in {c.durable_name for c in resources.consumers}


class TestBacklogByLabel:
    def test_partitions_sum_under_ordered_and_levels_keep_their_order(self) -> None:
        worker_lanes = plan("m", "p", spec(priorities=PRIORITIES, ordered={"partitions": 3})).lanes
        backlogs = {"workers": 4, "workers-high": 1, "workers-ordered-0": 2, "workers-ordered-2": 5}
        assert lanes.backlog_by_label(worker_lanes, backlogs) == {
            "high": 1,
            "normal": 4,
            "low": 0,
            "ordered": 7,
        }
        assert list(lanes.backlog_by_label(worker_lanes, backlogs)) == [
            "high",
            "normal",
            "low",
            "ordered",
        ]

    def test_no_lanes_no_labels(self) -> None:
        assert lanes.backlog_by_label((), {"workers": 3}) == {}


class TestScalingBacklog:
    def test_ordered_tasks_ask_only_for_the_workers_that_can_run_them(self) -> None:
        pool = spec(
            concurrency=4,
            ordered={"partitions": 8},
            scaling={"targetBacklogPerReplica": 10},
        )
        # 8 partitions run 8 tasks at once: two workers of 4, i.e. 20 tasks of backlog
        assert lanes.scaling_backlog(1000, {"default": 0, "ordered": 1000}, pool) == 20
        assert lanes.scaling_backlog(1015, {"default": 1000, "ordered": 15}, pool) == 1015
        assert lanes.scaling_backlog(1100, {"default": 1000, "ordered": 100}, pool) == 1020

    def test_pools_without_ordered_keys_scale_on_the_whole_backlog(self) -> None:
        assert (
            lanes.scaling_backlog(500, {"high": 400, "normal": 100}, spec(priorities=PRIORITIES))
            == 500
        )
        assert lanes.scaling_backlog(500, None, spec()) == 500
