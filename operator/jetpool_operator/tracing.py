"""Reconcile spans: one per control-loop tick of a pool, so a slow or failing tick can be found
by pool in the tracing backend (switched on by the ``OTEL_*`` environment:
:mod:`jetpool_protocol.telemetry`). Without an SDK the spans are no-ops that cost nothing."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

_tracer = trace.get_tracer("jetpool_operator")

_STATUS_ATTRIBUTES = {
    "replicas": "jetpool.replicas",
    "desiredReplicas": "jetpool.desired_replicas",
    "backlog": "jetpool.backlog",
    "inFlight": "jetpool.in_flight",
}


@contextmanager
def reconcile_span(namespace: str, name: str) -> Iterator[trace.Span]:
    """A failing tick's exception is recorded on its span, which is marked as an error."""
    with _tracer.start_as_current_span(
        "jetpool.reconcile",
        attributes={"k8s.namespace.name": namespace, "jetpool.pool": name},
    ) as span:
        yield span


def record_tick(
    span: trace.Span, status: Mapping[str, Any], *, patched: bool, next_tick_seconds: float
) -> None:
    """What the tick decided, as span attributes (a tick without a status change too)."""
    if not span.is_recording():
        return
    for key, attribute in _STATUS_ATTRIBUTES.items():
        value = status.get(key)
        if isinstance(value, int | float):
            span.set_attribute(attribute, value)
    breaker = (status.get("circuitBreaker") or {}).get("state")
    if isinstance(breaker, str):
        span.set_attribute("jetpool.breaker", breaker)
    span.set_attribute("jetpool.status_patched", patched)
    span.set_attribute("jetpool.next_tick_seconds", next_tick_seconds)
