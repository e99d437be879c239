"""`jetpool-operator`: run the kopf operator with jetpool's handlers, metrics and liveness."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import start_http_server

from jetpool_operator.core.control_bucket import (
    CONTROL_REPLICAS_ENV,
    DEFAULT_CONTROL_REPLICAS,
    control_replicas_from_env,
)
from jetpool_operator.core.observation import OBSERVATION_ENV, ObservationMode
from jetpool_operator.core.pod_template_policy import (
    ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV,
    ALLOW_PROJECTED_TOKENS_ENV,
    TemplateAllowances,
    allowances_from_env,
)
from jetpool_operator.core.tenancy import EXTRA_SUBJECT_SPACES_ENV, SubjectGrants
from jetpool_operator.memory import limit_malloc_arenas
from jetpool_protocol import telemetry

log = logging.getLogger("jetpool.operator")

SHARD_SELECTOR_ENV = "JETPOOL_SHARD_SELECTOR"
PEERING_LIFETIME_ENV = "JETPOOL_PEERING_LIFETIME"
DEFAULT_PEERING_LIFETIME = 10
"""Seconds a peer's keep-alive counts (kopf's default is 60). A SIGKILLed active replica is
taken over by its standby this long after its last keep-alive, which kopf renews every
``max(1, lifetime - 5..10)`` seconds, plus the standby's restart of every pool's loop: with 10,
8-11 s for 52 pools (bench/operator_failover.py), for a keep-alive PATCH every 1-5 s."""
PEERING_LIFETIME_RANGE = (5, 3600)

# A Kubernetes label selector, as `kubectl get -l` takes it (k8s.io/apimachinery labels.Parse):
# requirements joined by commas, each `key`, `!key`, `key=value` (`==`), `key!=value`,
# `key in (v1,v2)` or `key notin (v1,v2)`. Checked here, so a typo stops the operator at start
# instead of making every list of WorkerPools fail with 400 forever.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_KEY = rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})*/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_EXISTS = re.compile(rf"(!?)\s*({_KEY})")
_EQUALS = re.compile(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})")
_SET = re.compile(rf"({_KEY})\s+(in|notin)\s*\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)")


def _check_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if len(name) > 63 or len(prefix) > 253:
        raise ValueError(f"label key {key!r} is too long (name at most 63, prefix 253 characters)")


def _check_value(value: str) -> None:
    if len(value) > 63:
        raise ValueError(f"label value {value!r} is longer than 63 characters")


def _requirements(text: str) -> list[str]:
    """Split on the commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def label_selector(text: str) -> str:
    """A label selector in its canonical form (``a=b,c in (d,e),!f``); ``""`` selects every
    WorkerPool. Raises ValueError naming the requirement that is not a label selector."""
    text = text.strip()
    if not text:
        return ""
    canonical = []
    for raw in _requirements(text):
        requirement = raw.strip()
        if match := _EXISTS.fullmatch(requirement):
            bang, key = match.groups()
            _check_key(key)
            canonical.append(f"{bang}{key}")
        elif match := _EQUALS.fullmatch(requirement):
            key, operator, value = match.groups()
            _check_key(key)
            _check_value(value)
            canonical.append(f"{key}{'!=' if operator == '!=' else '='}{value}")
        elif match := _SET.fullmatch(requirement):
            key, operator, values = match.groups()
            _check_key(key)
            items = sorted({v.strip() for v in values.split(",")})
            if items == [""]:
                raise ValueError(f"{requirement!r} in shard selector {text!r} lists no value")
            for value in items:
                _check_value(value)
            canonical.append(f"{key} {operator} ({','.join(items)})")
        else:
            raise ValueError(
                f"{requirement!r} in shard selector {text!r} is not a label selector requirement "
                "(key, !key, key=value, key!=value, key in (a,b), key notin (a,b))"
            )
    return ",".join(canonical)


def peering_lifetime(text: str) -> int:
    low, high = PEERING_LIFETIME_RANGE
    try:
        seconds = int(text)
    except ValueError:
        raise ValueError(f"peering lifetime {text!r} is not a whole number of seconds") from None
    if not low <= seconds <= high:
        raise ValueError(f"peering lifetime {seconds} s is outside {low}..{high} s")
    return seconds


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` whose ValueError message argparse shows as is."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return checked


def _grants(raw: str) -> SubjectGrants:
    try:
        return SubjectGrants.parse(raw)
    except ValueError as exc:  # argparse shows ArgumentTypeError's message as is
        raise argparse.ArgumentTypeError(str(exc)) from exc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="jetpool-operator",
        description="Reconcile jetpool WorkerPools into JetStream resources and worker fleets.",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[n for n in env("JETPOOL_WATCH_NAMESPACES", "").split(",") if n],
        help="Namespace (or glob) to watch; repeatable. Default: all namespaces. "
        "Env: JETPOOL_WATCH_NAMESPACES (comma-separated).",
    )
    parser.add_argument(
        "--liveness",
        default=env("JETPOOL_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf liveness endpoint ('' disables). Env: JETPOOL_LIVENESS.",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("JETPOOL_METRICS_PORT", "8080")),
        help="Prometheus /metrics port, 0 disables. Env: JETPOOL_METRICS_PORT.",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=env("JETPOOL_LOG_FORMAT", "json"),
        help="Env: JETPOOL_LOG_FORMAT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    ha = parser.add_mutually_exclusive_group()
    ha.add_argument(
        "--peering",
        default=env("JETPOOL_PEERING", ""),
        help="Name of the ClusterKopfPeering for HA: only the highest-priority replica acts. "
        "Env: JETPOOL_PEERING. Default: standalone.",
    )
    ha.add_argument("--standalone", action="store_true", help="Never coordinate with peers.")
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env("JETPOOL_PRIORITY", "0")) or random.randint(1, 2**31 - 1),
        help="Peering priority; must differ between replicas (default: random).",
    )
    try:
        from_env = allowances_from_env(os.environ)
        grants = SubjectGrants.from_env(os.environ)
        observation = ObservationMode.from_env(os.environ)
        control_replicas = control_replicas_from_env(os.environ)
        selector = label_selector(env(SHARD_SELECTOR_ENV, ""))
        lifetime = peering_lifetime(env(PEERING_LIFETIME_ENV, str(DEFAULT_PEERING_LIFETIME)))
        telemetry.tracing_choice(os.environ)  # an unusable OTEL_* stops the start, not a tick
    except ValueError as exc:
        parser.error(str(exc))
    parser.add_argument(
        "--peering-lifetime",
        type=_argument(peering_lifetime),
        default=lifetime,
        metavar="SECONDS",
        help="How long a replica's peering keep-alive counts: a killed active replica is "
        "taken over by a standby within about this time (kopf renews it every "
        f"max(1, lifetime - 5..10) s). {PEERING_LIFETIME_RANGE[0]}..{PEERING_LIFETIME_RANGE[1]}"
        f", default {DEFAULT_PEERING_LIFETIME}. Env: {PEERING_LIFETIME_ENV}.",
    )
    parser.add_argument(
        "--shard-selector",
        type=_argument(label_selector),
        default=selector,
        metavar="SELECTOR",
        help="Act only on WorkerPools whose labels match this label selector (kubectl -l "
        "syntax, e.g. 'jetpool.dev/shard=blue' or '!jetpool.dev/shard'); the API server "
        "filters the watch, so other pools never reach this operator. Default: every pool. "
        f"Env: {SHARD_SELECTOR_ENV}.",
    )
    parser.add_argument(
        "--extra-subject-spaces",
        type=_grants,
        default=grants,
        help="JSON object namespace -> subject prefixes (ending in '.') its pools may use "
        'besides tasks.<namespace>., e.g. \'{"billing": ["invoices.billing."]}\'. '
        f"Env: {EXTRA_SUBJECT_SPACES_ENV}.",
    )
    parser.add_argument(
        "--allow-foreign-service-accounts",
        action="store_true",
        default=from_env.foreign_service_accounts,
        help="Let pools run under a ServiceAccount other than their own "
        f"(template.serviceAccountName). Env: {ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV}=true.",
    )
    parser.add_argument(
        "--allow-projected-tokens",
        action="store_true",
        default=from_env.projected_tokens,
        help="Let pools project serviceAccountToken volumes. "
        f"Env: {ALLOW_PROJECTED_TOKENS_ENV}=true.",
    )
    parser.add_argument(
        "--observation",
        type=ObservationMode,
        choices=list(ObservationMode),
        default=observation,
        help="batched (default): one stream listing per NATS connection per second, idle pools "
        "sleep until their first task; per-pool: every pool asks its consumer every tick. "
        f"Env: {OBSERVATION_ENV}.",
    )
    parser.add_argument(
        "--control-replicas",
        type=_argument(lambda text: control_replicas_from_env({CONTROL_REPLICAS_ENV: text})),
        default=control_replicas,
        metavar="N",
        help="JetStream replicas of the control bucket (every pool's breaker state), 1..5, "
        f"default {DEFAULT_CONTROL_REPLICAS}; raised when a pool's spec.nats.replicas is "
        f"higher, R1 on a single server. Env: {CONTROL_REPLICAS_ENV}.",
    )
    args = parser.parse_args(argv)
    args.allowances = TemplateAllowances(
        foreign_service_accounts=args.allow_foreign_service_accounts,
        projected_tokens=args.allow_projected_tokens,
    )
    return args


def peer_identity() -> str:
    """This replica's name among peers, in kopf's own shape (``who@host/started/random``).

    kopf's default asks ``getpass.getuser()``, which raises for a uid with no passwd entry: the
    image's numeric non-root user (65532) has none, so the operator crashed at start in a pod.
    """
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    suffix = "".join(random.choices("abcdefhijklmnopqrstuvwxyz0123456789", k=3))
    return f"jetpool-operator@{socket.gethostname()}/{started}/{suffix}"


def main(argv: Sequence[str] | None = None) -> None:
    limit_malloc_arenas()  # before any thread exists
    args = parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if args.log_format == "json" else None,
    )
    # Imported for its side effect: registering the kopf handlers.
    from jetpool_operator import handlers  # noqa: F401

    tracing = telemetry.configure_tracing("jetpool-operator", os.environ)

    if args.metrics_port:
        start_http_server(args.metrics_port)
    peering = args.peering if not args.standalone else ""
    log.info(
        "starting jetpool-operator",
        extra={
            "namespaces": args.namespace or ["*"],
            "peering": peering or None,
            "peering_lifetime": args.peering_lifetime if peering else None,
            "shard_selector": args.shard_selector or None,
            ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV: args.allowances.foreign_service_accounts,
            ALLOW_PROJECTED_TOKENS_ENV: args.allowances.projected_tokens,
            EXTRA_SUBJECT_SPACES_ENV: args.extra_subject_spaces.as_json(),
            OBSERVATION_ENV: args.observation.value,
            CONTROL_REPLICAS_ENV: args.control_replicas,
            "tracing": ",".join(tracing.exporters) or None,
        },
    )
    try:
        asyncio.run(
            kopf.operator(
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                liveness_endpoint=args.liveness or None,
                standalone=not peering,
                peering_name=peering or None,
                priority=args.priority,
                # kopf types it as its private NewType Identity (a str).
                identity=peer_identity(),  # type: ignore[arg-type]
                memo=kopf.Memo(
                    allowances=args.allowances,
                    subject_grants=args.extra_subject_spaces,
                    observation=args.observation,
                    control_replicas=args.control_replicas,
                    shard_selector=args.shard_selector,
                    peering_lifetime=args.peering_lifetime,
                ),
            )
        )
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        sys.exit(0)


if __name__ == "__main__":
    main()
