"""The worker's configuration contract: environment variables ``JETPOOL_<FIELD>``.

The operator renders a WorkerPool into these variables (:meth:`WorkerSettings.to_env`), the
worker reads them back (:meth:`WorkerSettings.from_env`). One model, so the two sides cannot
drift. Every variable is documented in ``docs/worker-contract.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from jetpool_protocol.lanes import Lane, decode_lanes
from jetpool_protocol.naming import PoolNames

ENV_PREFIX = "JETPOOL_"


class Jitter(StrEnum):
    FULL = "full"
    """Sleep uniformly in [0, backoff] (AWS "full jitter"): best at spreading retry storms."""
    EQUAL = "equal"
    """Sleep in [backoff/2, backoff]: keeps a floor under the delay."""
    NONE = "none"


def server_urls(url: str) -> list[str]:
    """The servers of a NATS URL setting: ``spec.nats.url``, ``JETPOOL_NATS_URL`` and the CLI's
    ``--nats-url`` may list several, comma-separated (a cluster's seeds), tried in turn."""
    return [u.strip() for u in url.split(",") if u.strip()]


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class WorkerSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # identity
    pool_name: str
    pool_namespace: str = "default"
    worker_id: str = Field("", description="Unique per process; the pod name in Kubernetes.")
    handler: str = Field(description="'package.module:function' or an entry-point name.")

    # NATS
    nats_url: str = "nats://127.0.0.1:4222"
    nats_credentials_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    nats_ping_interval_seconds: float = Field(10.0, gt=0)
    """Seconds between the client's pings; 3 unanswered move the worker to another server of
    the URL list: a frozen or partitioned server is left in ~30-40 s (nats-py's own default
    would take 4 minutes)."""
    stream: str
    consumer: str
    dead_letter_stream: str
    dead_letter_subject_prefix: str
    control_bucket: str = "jetpool-control"
    control_key: str
    stats_subject: str
    stats_interval_seconds: float = Field(1.0, gt=0)
    task_state_bucket: str | None = None
    """KV bucket of the pool's task states (``spec.tracking``); None: tasks are not tracked
    and an attempt is a delivery."""
    task_results_max_bytes: int | None = Field(None, ge=1)
    """Keep handlers' return values up to this size (``spec.tracking.results``); None: off."""
    rate_limit_subject_prefix: str | None = None
    """Counter subjects of the pool's rate limits (``spec.rateLimit``); None: no limit."""
    rate_limit_per_second: float | None = Field(None, gt=0)
    """The pool-wide limit (with ``rate_limit_burst``); None: none."""
    rate_limit_burst: int | None = Field(None, ge=1)
    rate_limit_key_header: str | None = None
    """The per-key limit's header (with the two below); None: no per-key limit."""
    rate_limit_key_per_second: float | None = Field(None, gt=0)
    rate_limit_key_burst: int | None = Field(None, ge=1)
    key_lease_bucket: str | None = None
    """KV bucket of the keys' leases (``spec.keyedConcurrency``); None: no per-key limit."""
    key_header: str | None = None
    """The task header whose value is the key."""
    key_max_running: int = Field(1, ge=1)
    key_lease_seconds: float = Field(30.0, ge=1)
    lanes: tuple[str, ...] = ()
    """Laned pools (``spec.priorities``, ``spec.ordered``): every consumer to pull, as
    ``<consumer>:<weight>:<label>:<single>`` (:class:`jetpool_protocol.lanes.Lane`); empty:
    the one consumer ``consumer``."""
    ordered_pulls_per_worker: int = Field(1, ge=1)
    """Ordered partitions (``single`` lanes) this worker keeps a pull waiting on while the
    priority levels keep it busy (``spec.ordered.pullsPerWorker``)."""

    # execution
    concurrency: int = Field(4, ge=1)
    fetch_batch: int = Field(0, ge=0, description="0 means 'same as concurrency'.")
    task_timeout_seconds: float = Field(300.0, gt=0)
    max_payload_bytes: int = Field(1_048_576, ge=1)
    task_ttl_seconds: float | None = Field(None, gt=0)
    heartbeat_seconds: float = Field(0.0, ge=0, description="0 means 'ack wait / 3'.")
    ack_wait_seconds: float = Field(60.0, gt=0)

    # retries
    retry_max_attempts: int = Field(5, ge=1)
    retry_initial_seconds: float = Field(1.0, ge=0)
    retry_max_seconds: float = Field(300.0, ge=0)
    retry_multiplier: float = Field(2.0, ge=1)
    retry_jitter: Jitter = Jitter.FULL
    non_retryable: tuple[str, ...] = ()
    """Exception type names (``ValueError`` or ``pkg.mod.Error``) that skip retries."""

    # safety and lifecycle
    memory_limit_bytes: int | None = Field(None, ge=1)
    """Above this RSS the worker stops fetching until memory drops below 90 % of it."""
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    metrics_port: int = Field(9090, ge=0, le=65535)
    log_format: LogFormat = LogFormat.JSON
    log_level: str = "INFO"

    # security
    signing_key_file: str | None = None
    require_signed: bool = False
    encryption_key_file: str | None = None

    @model_validator(mode="after")
    def _backoff_bounds(self) -> WorkerSettings:
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError("retry_initial_seconds must not exceed retry_max_seconds")
        return self

    @model_validator(mode="after")
    def _signing_needs_a_key(self) -> WorkerSettings:
        # Without a key every signed task would be dead-lettered as invalid: refuse to start.
        if self.require_signed and not self.signing_key_file:
            raise ValueError("require_signed needs signing_key_file")
        return self

    @model_validator(mode="after")
    def _rate_limit_complete(self) -> WorkerSettings:
        pool = (self.rate_limit_per_second, self.rate_limit_burst)
        key = (
            self.rate_limit_key_header,
            self.rate_limit_key_per_second,
            self.rate_limit_key_burst,
        )
        if any(v is not None for v in pool) and any(v is None for v in pool):
            raise ValueError("rate_limit_per_second and rate_limit_burst go together")
        if any(v is not None for v in key) and any(v is None for v in key):
            raise ValueError(
                "rate_limit_key_header, rate_limit_key_per_second and rate_limit_key_burst go "
                "together"
            )
        limited = pool[0] is not None or key[0] is not None
        if limited != (self.rate_limit_subject_prefix is not None):
            raise ValueError("rate_limit_subject_prefix goes with a rate limit, and only with one")
        return self

    @model_validator(mode="after")
    def _key_limit_complete(self) -> WorkerSettings:
        if (self.key_lease_bucket is None) != (self.key_header is None):
            raise ValueError("key_lease_bucket and key_header go together")
        return self

    @model_validator(mode="after")
    def _lanes_well_formed(self) -> WorkerSettings:
        lanes = decode_lanes(self.lanes)
        names = [lane.consumer for lane in lanes]
        if len(set(names)) != len(names):
            raise ValueError("lanes name a consumer twice")
        if lanes and self.consumer not in names:
            raise ValueError("lanes must include the pool's consumer")
        return self

    @property
    def pull_lanes(self) -> tuple[Lane, ...]:
        """The consumers to pull, with their weights (one lane for a plain pool)."""
        return decode_lanes(self.lanes) or (Lane(self.consumer, 1, "default"),)

    @model_validator(mode="after")
    def _heartbeat_inside_ack_wait(self) -> WorkerSettings:
        # A heartbeat at or past the ack wait cannot keep a long task's lease.
        if self.heartbeat_seconds and self.heartbeat_seconds >= self.ack_wait_seconds:
            raise ValueError("heartbeat_seconds must be below ack_wait_seconds")
        return self

    @property
    def inbox_prefix(self) -> str:
        """The inbox prefix of the pool's NATS connections, derived from the pool's identity
        (never configured), so the worker and its permission set cannot disagree."""
        return PoolNames(self.pool_namespace, self.pool_name).inbox_prefix

    @property
    def effective_fetch_batch(self) -> int:
        return self.fetch_batch or self.concurrency

    @property
    def effective_heartbeat_seconds(self) -> float:
        return self.heartbeat_seconds or self.ack_wait_seconds / 3

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerSettings:
        """Read ``JETPOOL_*`` variables; raises ``ValueError`` naming every bad variable."""
        values: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = env.get(cls.env_name(name))
            if raw is None or raw == "":
                continue
            values[name] = (
                tuple(filter(None, map(str.strip, raw.split(","))))
                if (info.annotation == tuple[str, ...])
                else raw
            )
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.env_name(str(err['loc'][0])) if err['loc'] else 'settings'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ValueError(f"invalid worker configuration: {problems}") from exc

    def to_env(self) -> dict[str, str]:
        """Only non-default values, so rendered Deployments stay short and readable."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            if value is None:
                continue
            if isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out[self.env_name(name)] = text
        return out
