"""OpenTelemetry tracing switched on by the standard ``OTEL_*`` environment, one home for the
operator, the worker and the CLI.

Tracing is off unless the environment asks for it: a pod without a collector must not log
export failures forever. It is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``
or ``console``), or when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), the variable people set first. The rest is read by
the SDK itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
(``_ARG``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``. The images carry the OTLP
exporter over HTTP/protobuf only (no gRPC stack), so ``grpc`` is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace

SDK_DISABLED_ENV = "OTEL_SDK_DISABLED"
TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SUPPORTED_EXPORTERS = ("otlp", "console")
SUPPORTED_PROTOCOL = "http/protobuf"


@dataclass(frozen=True)
class TracingChoice:
    """Which span exporters the environment asks for; none means tracing stays off."""

    exporters: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)


def tracing_choice(env: Mapping[str, str]) -> TracingChoice:
    """Read the ``OTEL_*`` variables; raises ValueError for what the images cannot honour."""
    if env.get(SDK_DISABLED_ENV, "").strip().lower() == "true":
        return TracingChoice()
    named = [n.strip().lower() for n in env.get(TRACES_EXPORTER_ENV, "").split(",") if n.strip()]
    if "none" in named:
        return TracingChoice()
    if not named and any(env.get(name, "").strip() for name in ENDPOINT_ENVS):
        named = ["otlp"]
    unknown = sorted(set(named) - set(SUPPORTED_EXPORTERS))
    if unknown:
        raise ValueError(
            f"{TRACES_EXPORTER_ENV}={env[TRACES_EXPORTER_ENV]!r}: unsupported exporter(s) "
            f"{', '.join(unknown)} (supported: {', '.join(SUPPORTED_EXPORTERS)}, none)"
        )
    if "otlp" in named:
        protocol = next((env[n].strip() for n in PROTOCOL_ENVS if env.get(n, "").strip()), "")
        if protocol and protocol != SUPPORTED_PROTOCOL:
            raise ValueError(
                f"OTLP protocol {protocol!r} is not available: the images carry the "
                f"{SUPPORTED_PROTOCOL} exporter (use the collector's HTTP port, 4318)"
            )
    return TracingChoice(tuple(dict.fromkeys(named)))


def tracing_enabled() -> bool:
    """False until an SDK tracer provider is installed: until then spans cost nothing."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def configure_tracing(
    service_name: str, env: Mapping[str, str], attributes: Mapping[str, str] | None = None
) -> TracingChoice:
    """Install an SDK tracer provider exporting in batches, if the environment asks for one.

    ``service_name`` and ``attributes`` are defaults: ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` win. Spans still buffered are flushed at interpreter exit.
    Raises ValueError for a setting the images cannot honour (see :func:`tracing_choice`).
    """
    choice = tracing_choice(env)
    if not choice.enabled or tracing_enabled():
        return choice
    # Imported here: the SDK is the `tracing` extra, absent where nobody traces.
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    defaults = Resource({SERVICE_NAME: service_name, **(attributes or {})})
    from_env = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME, sdk info
    if str(from_env.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        from_env = Resource({**from_env.attributes, SERVICE_NAME: service_name})
    provider = TracerProvider(resource=defaults.merge(from_env))
    for name in choice.exporters:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return choice


def flush_tracing(timeout_millis: int = 5000) -> None:
    """Export buffered spans now: for exits that skip the interpreter's ``atexit`` hooks."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush(timeout_millis)
