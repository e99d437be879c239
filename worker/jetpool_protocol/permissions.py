"""The NATS permission set a worker of one pool needs, and nothing more.

A platform team that gives each pool its own NATS user puts these allow lists in the user's
JWT (``nats.pub.allow`` / ``nats.sub.allow``) or in a server ``authorization`` block. With
them a pool's workers can pull and ack only their own consumer, dead-letter only under their
own prefix, publish only their own stats subject and only read their breaker key; they cannot
publish another pool's stats, write any control key or cancellation, or create, change or
delete streams and consumers (no ``$JS.API.STREAM.*`` admin subject is ever listed, and the only
``$KV.`` publishes are the task states and results in the pool's own task-state bucket).
They subscribe only to their pool's own inboxes (``_INBOX_<ns>_<pool>.>``, the prefix the
worker connects with), never to another connection's replies or pulled tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from jetpool_protocol.worker_settings import WorkerSettings


@dataclass(frozen=True, slots=True)
class NatsPermissions:
    """Subjects a NATS user may publish to and subscribe to (allow lists; the rest is denied)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def as_jwt_claims(self) -> dict[str, dict[str, list[str]]]:
        """The ``pub``/``sub`` part of a user JWT's ``nats`` claims."""
        return {"pub": {"allow": list(self.publish)}, "sub": {"allow": list(self.subscribe)}}


def worker_permissions(settings: WorkerSettings) -> NatsPermissions:
    """What a worker with ``settings`` publishes and subscribes to, as NATS allow lists.

    The control bucket is shared by every pool of an account, so reading it needs a consumer
    on its stream (``KV_<bucket>``): nats-py's watch asks for one without a filter in the
    subject, so the permission cannot narrow *reading* to one key. Writing needs a publish on
    ``$KV.<bucket>.<key>``, which no worker gets: control cannot be forged from a worker user.
    """
    stream = settings.stream
    kv_stream = f"KV_{settings.control_bucket}"
    control_subject = f"$KV.{settings.control_bucket}.{settings.control_key}"
    publish: tuple[str, ...] = (
        *(
            subject
            for lane in settings.pull_lanes
            # bind, pull and acknowledge (ack, nak, term, in-progress go to the reply subject)
            for subject in (
                f"$JS.API.CONSUMER.INFO.{stream}.{lane.consumer}",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{lane.consumer}",
                f"$JS.ACK.{stream}.{lane.consumer}.>",
            )
        ),
        # dead letters: the DLQ stream's subjects under this pool's prefix only
        f"{settings.dead_letter_subject_prefix}.>",
        # stats: this pool's subject only
        settings.stats_subject,
        # breaker control: bind the bucket, watch and read this pool's key
        f"$JS.API.STREAM.INFO.{kv_stream}",
        f"$JS.API.CONSUMER.CREATE.{kv_stream}",
        f"$JS.API.CONSUMER.CREATE.{kv_stream}.*.{control_subject}",
        f"$JS.API.CONSUMER.INFO.{kv_stream}.*",
        f"$JS.API.CONSUMER.DELETE.{kv_stream}.*",
        f"$JS.API.DIRECT.GET.{kv_stream}.{control_subject}",
        f"$JS.API.STREAM.MSG.GET.{kv_stream}",
        f"$JS.FC.{kv_stream}.>",
    )
    if settings.task_state_bucket is not None:
        publish += task_state_permissions(settings.task_state_bucket)
    if settings.key_lease_bucket is not None:
        publish += key_lease_permissions(settings.key_lease_bucket)
    if settings.rate_limit_subject_prefix is not None:
        # count task starts in the pool's own rate-limit windows (the PubAck is the answer)
        publish += (f"{settings.rate_limit_subject_prefix}.>",)
    # replies (JetStream API answers, PubAcks), pulled tasks and KV watch deliveries all come
    # to inboxes under the pool's own prefix (WorkerSettings.inbox_prefix)
    subscribe = (f"{settings.inbox_prefix}.>",)
    return NatsPermissions(publish=publish, subscribe=subscribe)


def task_state_permissions(bucket: str) -> tuple[str, ...]:
    """The pool's own task-state bucket: write states and results, read a state (run
    counting), watch the cancellations. Writing a ``cancel.`` key is not granted: a worker
    user cannot cancel tasks."""
    kv_stream = f"KV_{bucket}"
    return (
        f"$KV.{bucket}.state.>",
        f"$KV.{bucket}.result.>",
        f"$JS.API.DIRECT.GET.{kv_stream}.$KV.{bucket}.state.>",
        f"$JS.API.STREAM.INFO.{kv_stream}",
        f"$JS.API.CONSUMER.CREATE.{kv_stream}",
        f"$JS.API.CONSUMER.CREATE.{kv_stream}.*.$KV.{bucket}.cancel.>",
        f"$JS.API.CONSUMER.INFO.{kv_stream}.*",
        f"$JS.API.CONSUMER.DELETE.{kv_stream}.*",
        f"$JS.FC.{kv_stream}.>",
    )


def key_lease_permissions(bucket: str) -> tuple[str, ...]:
    """The pool's own key-lease bucket: bind it, read a slot, take, renew and free one."""
    kv_stream = f"KV_{bucket}"
    return (
        f"$KV.{bucket}.conc.>",
        f"$JS.API.STREAM.INFO.{kv_stream}",
        f"$JS.API.DIRECT.GET.{kv_stream}.$KV.{bucket}.conc.>",
    )
