"""The worker permission set: what a pool's user may publish, judged as nats-server would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_protocol.naming import PoolNames
from jetpool_protocol.permissions import worker_permissions
from jetpool_protocol.worker_settings import WorkerSettings
from tests.unit.subjects import matches


def _allowed(publish: tuple[str, ...], subject: str) -> bool:
    return any(matches(p, subject) for p in publish)


def _settings(namespace: str, pool: str) -> WorkerSettings:
    names = PoolNames(namespace, pool)
    return WorkerSettings(
        pool_name=pool,
        pool_namespace=namespace,
        handler="a:b",
        stream=names.stream,
        consumer=names.consumer,
        dead_letter_stream=names.dead_letter_stream,
        dead_letter_subject_prefix=names.dead_letter_subject_prefix,
        control_key=names.control_key,
        stats_subject=names.stats_subject,
    )


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
subdomain = st.lists(label, min_size=1, max_size=3).map(".".join)


def test_a_worker_may_pull_ack_dead_letter_report_and_read_its_control() -> None:
    settings = _settings("media", "resize")
    publish = worker_permissions(settings).publish
    for subject in (
        f"$JS.API.CONSUMER.MSG.NEXT.{settings.stream}.workers",
        f"$JS.ACK.{settings.stream}.workers.1.5.5.1700000000.0",
        f"{settings.dead_letter_subject_prefix}.failed.ValueError",
        settings.stats_subject,
        f"$JS.API.DIRECT.GET.KV_jetpool-control.$KV.jetpool-control.{settings.control_key}",
    ):
        assert _allowed(publish, subject), subject
    assert worker_permissions(settings).subscribe == ("_INBOX_media_resize.>",)


def test_a_worker_gets_no_stream_admin_and_no_kv_write() -> None:
    settings = _settings("media", "resize")
    publish = worker_permissions(settings).publish
    for subject in (
        f"$JS.API.STREAM.CREATE.{settings.stream}",
        f"$JS.API.STREAM.UPDATE.{settings.stream}",
        f"$JS.API.STREAM.DELETE.{settings.stream}",
        f"$JS.API.STREAM.PURGE.{settings.stream}",
        f"$JS.API.STREAM.MSG.DELETE.{settings.stream}",
        f"$JS.API.CONSUMER.DELETE.{settings.stream}.workers",
        f"$JS.API.CONSUMER.CREATE.{settings.stream}.workers",
        "$JS.API.STREAM.DELETE.KV_jetpool-control",
        "$JS.API.STREAM.PURGE.KV_jetpool-control",
        f"$KV.jetpool-control.{settings.control_key}",
        "tasks.media.resize.anything",
    ):
        assert not _allowed(publish, subject), subject


@given(label, subdomain, label, subdomain)
def test_one_pools_permissions_never_reach_another_pools_stats_control_or_queue(
    ns_a: str, pool_a: str, ns_b: str, pool_b: str
) -> None:
    if (ns_a, pool_a) == (ns_b, pool_b):
        return
    mine, theirs = _settings(ns_a, pool_a), _settings(ns_b, pool_b)
    publish = worker_permissions(mine).publish
    assert not _allowed(publish, theirs.stats_subject)
    assert not _allowed(publish, f"{theirs.dead_letter_subject_prefix}.failed.X")
    assert not _allowed(publish, f"$JS.API.CONSUMER.MSG.NEXT.{theirs.stream}.workers")
    assert not _allowed(publish, f"$JS.ACK.{theirs.stream}.workers.1.1.1.1.0")
    control = f"$KV.jetpool-control.{theirs.control_key}"
    assert not _allowed(publish, control)
    assert not _allowed(publish, f"$JS.API.DIRECT.GET.KV_jetpool-control.{control}")


def test_a_worker_subscribes_only_under_its_pools_inbox_prefix() -> None:
    settings = _settings("media", "resize")
    subscribe = worker_permissions(settings).subscribe
    # what nats-py makes with inbox_prefix: new_inbox(), the request mux, a KV watch's deliver
    for subject in (
        "_INBOX_media_resize.Rc2Zrub2Iyk9kJhN0wZXbV",
        "_INBOX_media_resize.Rc2Zrub2Iyk9kJhN0wZXbV.*",
        "_INBOX_media_resize.Rc2Zrub2Iyk9kJhN0wZXbV.Rc2Zrub2Iyk9kJhN0wZXdga3f",
    ):
        assert _allowed(subscribe, subject), subject
    for subject in (
        "_INBOX.Rc2Zrub2Iyk9kJhN0wZXbV",
        "_INBOX_media_resize",
        "_INBOX_media_resize-v2.x",
        "_INBOX_media_resize_v2.x",
        f"{settings.stats_subject}",
        "tasks.media.resize.job",
    ):
        assert not _allowed(subscribe, subject), subject


@given(label, subdomain, label, subdomain)
def test_one_pools_user_cannot_subscribe_to_another_pools_inboxes(
    ns_a: str, pool_a: str, ns_b: str, pool_b: str
) -> None:
    if (ns_a, pool_a) == (ns_b, pool_b):
        return
    mine, theirs = _settings(ns_a, pool_a), _settings(ns_b, pool_b)
    subscribe = worker_permissions(mine).subscribe
    assert _allowed(subscribe, f"{mine.inbox_prefix}.Rc2Zrub2Iyk9kJhN0wZXbV.1")
    assert not _allowed(subscribe, f"{theirs.inbox_prefix}.Rc2Zrub2Iyk9kJhN0wZXbV.1")
    assert not _allowed(subscribe, "_INBOX.Rc2Zrub2Iyk9kJhN0wZXbV")
