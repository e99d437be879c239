"""The Kubernetes objects of one pool, built as plain dicts (camelCase Kubernetes JSON).

Pure, in the style of prometheus-operator's ``makeStatefulSet``: spec + owner identity +
replicas in, objects out. Equal inputs give equal objects, byte for byte, and every object
carries an input-hash annotation, so the adapter can skip no-op updates by comparing one
string. The Deployment's hash leaves ``spec.replicas`` out: the autoscaler changes replicas
through a separate patch (see docs/api.md, "Who owns replicas").
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jetpool_operator.api.v1alpha1 import API_VERSION, KIND, SecretKeyRef, WorkerPoolSpec
from jetpool_operator.core import lanes
from jetpool_operator.core.nats_resources import ack_wait_seconds, resolve_names
from jetpool_protocol.lanes import encode_lanes
from jetpool_protocol.worker_settings import WorkerSettings

CONTAINER_NAME = "worker"
METRICS_PORT = 9090
METRICS_PORT_NAME = "metrics"
RUN_AS_ID = 65532
"""Numeric non-root user/group (distroless "nonroot"), so runAsNonRoot is verifiable."""
SECRETS_DIR = "/var/run/jetpool/secrets"
SECRETS_VOLUME = "jetpool-secrets"
TMP_VOLUME = "tmp"
SECRET_FILE_MODE = 0o440
TERMINATION_MARGIN_SECONDS = 5
"""Time between the worker's own shutdown deadline and the kubelet's SIGKILL."""
MEMORY_GUARD_FRACTION = Decimal("0.85")
PDB_MAX_UNAVAILABLE = "25%"

INPUT_HASH_ANNOTATION = "jetpool.dev/input-hash"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POOL = "jetpool.dev/pool"
WORKER_APP = "jetpool-worker"
MANAGER = "jetpool"

MAX_NAME = 63
"""Child names are DNS-1035 labels (Service names must be), at most 63 characters."""


@dataclass(frozen=True, slots=True)
class PoolRef:
    """The owning WorkerPool's identity (from its metadata)."""

    name: str
    namespace: str
    uid: str
    recorded_stream: str | None = None
    """``status.nats.stream``: a pool that recorded the default of earlier jetpool versions
    keeps it (:func:`~jetpool_operator.core.nats_resources.default_stream`)."""


@dataclass(frozen=True, slots=True)
class Children:
    deployment: dict[str, Any]
    service_account: dict[str, Any] | None
    """None when ``template.serviceAccountName`` names another account."""
    pod_disruption_budget: dict[str, Any]
    metrics_service: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        objects = [self.service_account, self.deployment]
        objects += [self.pod_disruption_budget, self.metrics_service]
        return [o for o in objects if o is not None]


# --- names and labels -----------------------------------------------------------------------


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def child_name(pool: str, suffix: str) -> str:
    """``<pool>-<suffix>`` when that is a valid DNS-1035 label; otherwise a shortened,
    sanitized form with a hash of the pool name, so distinct pools never share a name."""
    plain = f"{pool}-{suffix}"
    base = pool.replace(".", "-")
    if not base[:1].isalpha():
        base = f"wp-{base}"
    if base == pool and len(plain) <= MAX_NAME:
        return plain
    keep = MAX_NAME - len(suffix) - 10
    return f"{base[:keep].rstrip('-')}-{_short_hash(pool)}-{suffix}"


def label_value(value: str) -> str:
    """Label values are at most 63 characters; longer names keep a prefix plus a hash."""
    if len(value) <= MAX_NAME:
        return value
    return f"{value[: MAX_NAME - 9].rstrip('-.')}-{_short_hash(value)}"


def selector_labels(pool: PoolRef) -> dict[str, str]:
    return {LABEL_NAME: WORKER_APP, LABEL_INSTANCE: label_value(pool.name)}


def pool_labels(pool: PoolRef) -> dict[str, str]:
    return {
        **selector_labels(pool),
        LABEL_MANAGED_BY: MANAGER,
        LABEL_POOL: label_value(pool.name),
    }


def selector_string(pool: PoolRef) -> str:
    """The serialized selector for ``status.selector`` (``kubectl get pods -l ...``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool).items()))


def deployment_name(pool: PoolRef) -> str:
    return child_name(pool.name, "worker")


def service_name(pool: PoolRef) -> str:
    return child_name(pool.name, "metrics")


def owner_reference(pool: PoolRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: PoolRef, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pool.namespace,
        "labels": pool_labels(pool),
        "ownerReferences": [owner_reference(pool)],
    }


# --- quantities -----------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def parse_quantity(quantity: int | str) -> Decimal:
    """A Kubernetes resource quantity as a number (``512Mi`` -> 536870912)."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SUFFIX[suffix]


def memory_guard_bytes(spec: WorkerPoolSpec) -> int | None:
    """Explicit ``memoryLimitBytes``, else 85% of the container's memory limit, else none:
    the worker pauses fetching before the kernel's OOM killer would end it mid-task."""
    if spec.memory_limit_bytes is not None:
        return spec.memory_limit_bytes
    limit = spec.template.resources.limits.get("memory")
    if limit is None:
        return None
    return max(1, int(parse_quantity(limit) * MEMORY_GUARD_FRACTION))


# --- worker configuration -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SecretFile:
    ref: SecretKeyRef
    path: str


_TLS_FILES = {"ca": "nats-ca.crt", "cert": "nats-tls.crt", "key": "nats-tls.key"}


def worker_credentials(spec: WorkerPoolSpec) -> SecretKeyRef | None:
    """The credentials workers get: their own when the pool names them, else the operator's
    (shared-account mode). Never both: handler code must not read what it need not use."""
    nats = spec.nats
    if nats.worker_credentials_secret is not None:
        return nats.worker_credentials_secret
    return nats.credentials_secret


def _secret_files(spec: WorkerPoolSpec) -> dict[str, _SecretFile]:
    """Secret keys the workers read, by role, each at a fixed path in one projected volume."""
    out: dict[str, _SecretFile] = {}
    creds = worker_credentials(spec)
    if creds is not None:
        out["creds"] = _SecretFile(creds, "nats.creds")
    tls = spec.nats.tls
    if tls is not None:
        if tls.secret_name is not None:
            for role, key in (("ca", "ca.crt"), ("cert", "tls.crt"), ("key", "tls.key")):
                ref = SecretKeyRef(name=tls.secret_name, key=key)
                out[role] = _SecretFile(ref, _TLS_FILES[role])
        for role, given in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            if given is not None:
                out[role] = _SecretFile(given, _TLS_FILES[role])
    if spec.security.signing_key_secret is not None:
        out["signing"] = _SecretFile(spec.security.signing_key_secret, "signing.key")
    if spec.security.encryption_key_secret is not None:
        out["encryption"] = _SecretFile(spec.security.encryption_key_secret, "encryption.key")
    return out


def _path(files: dict[str, _SecretFile], role: str) -> str | None:
    found = files.get(role)
    return None if found is None else f"{SECRETS_DIR}/{found.path}"


def worker_settings(pool: PoolRef, spec: WorkerPoolSpec) -> WorkerSettings:
    """The worker's whole configuration (the protocol's env contract) for this pool."""
    names = resolve_names(pool.namespace, pool.name, spec, pool.recorded_stream)
    laned = lanes.layout(pool.namespace, pool.name, names.consumer, spec)
    files = _secret_files(spec)
    backoff = spec.retry.backoff
    return WorkerSettings(
        pool_name=pool.name,
        pool_namespace=pool.namespace,
        handler=spec.handler,
        nats_url=spec.nats.url,
        nats_credentials_file=_path(files, "creds"),
        nats_tls_ca_file=_path(files, "ca"),
        nats_tls_cert_file=_path(files, "cert"),
        nats_tls_key_file=_path(files, "key"),
        stream=names.stream,
        consumer=names.consumer,
        dead_letter_stream=names.dead_letter_stream,
        dead_letter_subject_prefix=names.dead_letter_subject_prefix,
        control_key=names.control_key,
        stats_subject=names.stats_subject,
        task_state_bucket=names.task_state_bucket,
        task_results_max_bytes=(
            spec.tracking.results.max_bytes
            if spec.tracking.enabled and spec.tracking.results.enabled
            else None
        ),
        **_rate_limits(names.rate_limit_subject_prefix, spec),
        **_key_limit(names.key_lease_bucket, spec),
        lanes=() if laned is None else encode_lanes(laned.worker_lanes),
        ordered_pulls_per_worker=(
            spec.ordered.effective_pulls_per_worker(spec.concurrency) if spec.ordered else 1
        ),
        concurrency=spec.concurrency,
        task_timeout_seconds=float(spec.task.timeout_seconds),
        max_payload_bytes=spec.task.max_payload_bytes,
        task_ttl_seconds=None if spec.task.ttl_seconds is None else float(spec.task.ttl_seconds),
        ack_wait_seconds=ack_wait_seconds(spec),
        retry_max_attempts=spec.retry.max_attempts,
        retry_initial_seconds=backoff.initial_seconds,
        retry_max_seconds=backoff.max_seconds,
        retry_multiplier=backoff.multiplier,
        retry_jitter=backoff.jitter,
        non_retryable=tuple(spec.retry.non_retryable),
        memory_limit_bytes=memory_guard_bytes(spec),
        shutdown_grace_seconds=float(spec.shutdown_grace_seconds),
        metrics_port=METRICS_PORT,
        signing_key_file=_path(files, "signing"),
        require_signed=spec.security.require_signed,
        encryption_key_file=_path(files, "encryption"),
    )


def _rate_limits(prefix: str | None, spec: WorkerPoolSpec) -> dict[str, Any]:
    """The worker settings of ``spec.rateLimit`` (none when unset)."""
    limit = spec.rate_limit
    if limit is None or prefix is None:
        return {}
    per_key = limit.per_key
    return {
        "rate_limit_subject_prefix": prefix,
        "rate_limit_per_second": limit.per_second,
        "rate_limit_burst": limit.effective_burst,
        "rate_limit_key_header": per_key.header if per_key else None,
        "rate_limit_key_per_second": per_key.per_second if per_key else None,
        "rate_limit_key_burst": per_key.effective_burst if per_key else None,
    }


def _key_limit(bucket: str | None, spec: WorkerPoolSpec) -> dict[str, Any]:
    """The worker settings of ``spec.keyedConcurrency`` (none when unset)."""
    keyed = spec.keyed_concurrency
    if keyed is None or bucket is None:
        return {}
    return {
        "key_lease_bucket": bucket,
        "key_header": keyed.header,
        "key_max_running": keyed.max_per_key,
        "key_lease_seconds": float(keyed.lease_seconds),
    }


def worker_env(pool: PoolRef, spec: WorkerPoolSpec) -> list[dict[str, Any]]:
    """Rendered ``JETPOOL_*`` variables, the pod name as worker id, then the user's env.

    A user variable with the same name replaces the rendered one (no duplicates: the
    apiserver warns about them and only the last would count anyway).
    """
    user = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.template.env]
    overridden = {e["name"] for e in user}
    rendered: list[dict[str, Any]] = [
        {"name": k, "value": v} for k, v in worker_settings(pool, spec).to_env().items()
    ]
    rendered.append(
        {
            "name": WorkerSettings.env_name("worker_id"),
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        }
    )
    return [e for e in rendered if e["name"] not in overridden] + user


# --- the objects ----------------------------------------------------------------------------


def _secret_volume(files: dict[str, _SecretFile]) -> dict[str, Any] | None:
    if not files:
        return None
    by_secret: dict[str, list[dict[str, str]]] = {}
    for f in files.values():
        by_secret.setdefault(f.ref.name, []).append({"key": f.ref.key, "path": f.path})
    sources = [{"secret": {"name": n, "items": items}} for n, items in by_secret.items()]
    return {
        "name": SECRETS_VOLUME,
        "projected": {"defaultMode": SECRET_FILE_MODE, "sources": sources},
    }


def _restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": METRICS_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(pool: PoolRef, spec: WorkerPoolSpec, secrets: bool) -> dict[str, Any]:
    template = spec.template
    mounts: list[dict[str, Any]] = [{"name": TMP_VOLUME, "mountPath": "/tmp"}]
    if secrets:
        mounts.append({"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR, "readOnly": True})
    mounts += template.volume_mounts
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "env": worker_env(pool, spec),
    }
    if template.env_from:
        container["envFrom"] = template.env_from
    container["ports"] = [
        {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}
    ]
    resources = template.resources.model_dump(by_alias=True)
    container["resources"] = {k: v for k, v in resources.items() if v}
    container["securityContext"] = _restricted_container_security()
    # Slow imports get up to a minute before liveness can restart the worker.
    container["startupProbe"] = _probe("/healthz", period=2, failures=30)
    container["livenessProbe"] = _probe("/healthz", period=10, failures=3)
    container["readinessProbe"] = _probe("/readyz", period=5, failures=2)
    container["volumeMounts"] = mounts
    return container


def _pod_spec(pool: PoolRef, spec: WorkerPoolSpec) -> dict[str, Any]:
    template = spec.template
    secret_volume = _secret_volume(_secret_files(spec))
    volumes: list[dict[str, Any]] = [{"name": TMP_VOLUME, "emptyDir": {}}]
    if secret_volume is not None:
        volumes.append(secret_volume)
    volumes += template.volumes
    pod: dict[str, Any] = {
        "serviceAccountName": template.service_account_name or deployment_name(pool),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.shutdown_grace_seconds + TERMINATION_MARGIN_SECONDS,
        "securityContext": _pod_security(),
        "containers": [_container(pool, spec, secrets=secret_volume is not None)],
        "volumes": volumes,
    }
    optional: dict[str, Any] = {
        "imagePullSecrets": [r.model_dump(by_alias=True) for r in template.image_pull_secrets],
        "nodeSelector": dict(template.node_selector),
        "affinity": template.affinity,
        "tolerations": template.tolerations,
        "topologySpreadConstraints": template.topology_spread_constraints,
        "priorityClassName": template.priority_class_name,
    }
    pod.update({k: v for k, v in optional.items() if v})
    return pod


def input_hash(obj: dict[str, Any]) -> str:
    """Hash of an object's content, ignoring its own hash annotation and Deployment replicas."""
    content = json.loads(json.dumps(obj))
    content.get("metadata", {}).get("annotations", {}).pop(INPUT_HASH_ANNOTATION, None)
    if content.get("kind") == "Deployment":
        content["spec"].pop("replicas", None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Annotate with the input hash; the JSON round trip leaves plain, unshared data."""
    obj["metadata"].setdefault("annotations", {})[INPUT_HASH_ANNOTATION] = input_hash(obj)
    plain: dict[str, Any] = json.loads(json.dumps(obj))
    return plain


def build_deployment(pool: PoolRef, spec: WorkerPoolSpec, replicas: int) -> dict[str, Any]:
    """The worker Deployment; ``replicas`` comes from the autoscaler (0 while paused)."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    pod_labels = {**spec.template.labels, **pool_labels(pool)}
    pod_annotations = {
        **spec.template.annotations,
        "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool, deployment_name(pool)),
        "spec": {
            "replicas": 0 if spec.paused else replicas,
            "selector": {"matchLabels": selector_labels(pool)},
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _pod_spec(pool, spec),
            },
        },
    }
    return _with_hash(deployment)


def build_service_account(pool: PoolRef, spec: WorkerPoolSpec) -> dict[str, Any] | None:
    """The pool's own token-less account; naming it in the template still makes it ours."""
    if spec.template.service_account_name not in (None, deployment_name(pool)):
        return None
    return _with_hash(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(pool, deployment_name(pool)),
            "automountServiceAccountToken": False,
        }
    )


def build_pod_disruption_budget(pool: PoolRef) -> dict[str, Any]:
    """Drains take at most a quarter of the workers at a time (at least one); stuck pods
    may always be evicted, so a crash-looping pool never blocks a node drain."""
    return _with_hash(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _metadata(pool, deployment_name(pool)),
            "spec": {
                "maxUnavailable": PDB_MAX_UNAVAILABLE,
                "selector": {"matchLabels": selector_labels(pool)},
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }
    )


def build_metrics_service(pool: PoolRef) -> dict[str, Any]:
    """Headless: every worker is its own scrape target (averaging them makes no sense)."""
    return _with_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(pool, service_name(pool)),
            "spec": {
                "clusterIP": "None",
                "selector": selector_labels(pool),
                "ports": [
                    {
                        "name": METRICS_PORT_NAME,
                        "port": METRICS_PORT,
                        "targetPort": METRICS_PORT_NAME,
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )


def build_children(pool: PoolRef, spec: WorkerPoolSpec, replicas: int) -> Children:
    return Children(
        deployment=build_deployment(pool, spec, replicas),
        service_account=build_service_account(pool, spec),
        pod_disruption_budget=build_pod_disruption_budget(pool),
        metrics_service=build_metrics_service(pool),
    )
