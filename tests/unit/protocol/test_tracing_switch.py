"""Tracing is switched on, and refused, by the standard OTEL_* environment alone."""

from __future__ import annotations

import pytest

from jetpool_protocol.telemetry import tracing_choice


def test_tracing_is_off_when_nothing_asks_for_it() -> None:
    assert not tracing_choice({}).enabled


def test_an_otlp_endpoint_alone_switches_the_otlp_exporter_on() -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        assert tracing_choice({name: "http://collector:4318"}).exporters == ("otlp",)


def test_named_exporters_are_taken_once_each_in_order() -> None:
    choice = tracing_choice({"OTEL_TRACES_EXPORTER": "console, otlp,console"})
    assert choice.exporters == ("console", "otlp")


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
    ],
)
def test_none_and_a_disabled_sdk_win_over_everything(env: dict[str, str]) -> None:
    assert not tracing_choice(env).enabled


def test_an_exporter_the_images_do_not_carry_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="zipkin"):
        tracing_choice({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})


@pytest.mark.parametrize(
    "protocol_env", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_otlp_over_grpc_is_refused_with_the_port_to_use_instead(protocol_env: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", protocol_env: "grpc"}
    with pytest.raises(ValueError, match="4318"):
        tracing_choice(env)


def test_the_traces_protocol_overrides_the_general_one() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    assert tracing_choice(env).exporters == ("otlp",)


def test_grpc_does_not_matter_when_only_the_console_exports() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert tracing_choice(env).exporters == ("console",)
