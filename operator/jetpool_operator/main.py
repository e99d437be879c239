"""`jetpool-operator`: run the kopf operator with jetpool's handlers, metrics and liveness."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import kopf
from prometheus_client import start_http_server

from jetpool_operator.core.observation import OBSERVATION_ENV, ObservationMode
from jetpool_operator.core.pod_template_policy import (
    ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV,
    ALLOW_PROJECTED_TOKENS_ENV,
    TemplateAllowances,
    allowances_from_env,
)
from jetpool_operator.core.tenancy import EXTRA_SUBJECT_SPACES_ENV, SubjectGrants

log = logging.getLogger("jetpool.operator")


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
    except ValueError as exc:
        parser.error(str(exc))
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
    args = parse_args(argv)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.FULL,
        log_refkey="object" if args.log_format == "json" else None,
    )
    # Imported for its side effect: registering the kopf handlers.
    from jetpool_operator import handlers  # noqa: F401

    if args.metrics_port:
        start_http_server(args.metrics_port)
    peering = args.peering if not args.standalone else ""
    log.info(
        "starting jetpool-operator",
        extra={
            "namespaces": args.namespace or ["*"],
            "peering": peering or None,
            ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV: args.allowances.foreign_service_accounts,
            ALLOW_PROJECTED_TOKENS_ENV: args.allowances.projected_tokens,
            EXTRA_SUBJECT_SPACES_ENV: args.extra_subject_spaces.as_json(),
            OBSERVATION_ENV: args.observation.value,
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
                ),
            )
        )
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        sys.exit(0)


if __name__ == "__main__":
    main()
