"""Kubernetes access through the official client, always off the event loop.

Children are written with server-side apply (field manager ``jetpool-operator``): applying the
same desired object twice is a no-op, and drift (an edited or deleted child) is undone by
applying again. Status goes through the ``status`` subresource as a JSON merge patch.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

log = logging.getLogger(__name__)

FIELD_MANAGER = "jetpool-operator"
REQUEST_TIMEOUT = (5, 30)
"""(connect, read) seconds: a hung apiserver connection must not block a pool's loop forever."""
CONCURRENT_REQUESTS = 32
"""Threads (and pooled connections) for API calls. asyncio's default executor has cpu+4
threads: with a thousand pools starting at once, calls queued behind a handful of threads
each waiting on the apiserver, and pools took a minute to converge with the CPU half idle."""
T = TypeVar("T")
GROUP = "jetpool.dev"
VERSION = "v1alpha1"
PLURAL = "workerpools"


class MissingSecret(Exception):
    """A Secret (or key in it) the pool refers to does not exist."""


@dataclass(frozen=True, slots=True)
class AppliedObject:
    kind: str
    name: str
    generation: int
    resource_version: str


def load_configuration() -> kubernetes.client.Configuration:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    return configuration


class KubeAdapter:
    """Thin async facade over the official client; every call runs in a worker thread."""

    def __init__(self, configuration: kubernetes.client.Configuration | None = None) -> None:
        configuration = configuration or load_configuration()
        configuration.connection_pool_maxsize = CONCURRENT_REQUESTS
        self._api_client = kubernetes.client.ApiClient(configuration)
        self._executor = ThreadPoolExecutor(CONCURRENT_REQUESTS, thread_name_prefix="kube")
        self._dynamic: DynamicClient | None = None
        self._dynamic_lock = threading.Lock()
        self._core = kubernetes.client.CoreV1Api(self._api_client)
        self._custom = kubernetes.client.CustomObjectsApi(self._api_client)

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _dyn(self) -> DynamicClient:
        with self._dynamic_lock:  # built once, by whichever thread needs it first
            if self._dynamic is None:
                self._dynamic = DynamicClient(self._api_client)
            return self._dynamic

    async def apply(self, obj: dict[str, Any]) -> AppliedObject:
        """Server-side apply one object; returns its generation after the apply."""

        def call() -> AppliedObject:
            resource = self._dyn().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            result = self._dyn().server_side_apply(
                resource,
                body=obj,
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
            meta = result.metadata
            return AppliedObject(
                kind=obj["kind"],
                name=meta.name,
                generation=int(meta.generation or 0),
                resource_version=str(meta.resourceVersion),
            )

        return await self._run(call)

    async def read_metadata(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The live metadata of the object ``obj`` would be applied to; None if there is none."""

        def call() -> dict[str, Any] | None:
            resource = self._dyn().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            meta = obj["metadata"]
            try:
                found = resource.get(
                    name=meta["name"],
                    namespace=meta.get("namespace"),
                    _request_timeout=REQUEST_TIMEOUT,
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            metadata: dict[str, Any] = found.to_dict()["metadata"]
            return metadata

        return await self._run(call)

    async def patch_pool_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch ``status`` of a WorkerPool (``None`` values delete keys)."""

        def call() -> None:
            self._custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )

        await self._run(call)

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        def call() -> bytes:
            try:
                secret = self._core.read_namespaced_secret(
                    name, namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise MissingSecret(f"Secret {namespace}/{name} not found") from exc
                raise
            data = secret.data or {}
            if key not in data:
                raise MissingSecret(f"Secret {namespace}/{name} has no key {key!r}")
            return base64.b64decode(data[key])

        return await self._run(call)

    async def close(self) -> None:
        await self._run(self._api_client.close)
        self._executor.shutdown(wait=False)
