"""Cross-field rules: emitted as CEL for the apiserver, mirrored by the pydantic models."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec

from .schema_walk import at, nodes, root_schema

_REF = re.compile(r"\b(?:self|oldSelf)((?:\.[A-Za-z_]\w*(?!\w|\())+)")
"""Field paths read from self/oldSelf; a trailing ``.all(`` style call is a macro, not a field."""
_HAS = re.compile(r"has\((?:self|oldSelf)((?:\.[A-Za-z_]\w*)+)\)")


def _rules() -> dict[str, list[dict[str, Any]]]:
    return {
        path: node["x-kubernetes-validations"]
        for path, node in nodes(root_schema())
        if "x-kubernetes-validations" in node
    }


def _minimal(**spec: Any) -> dict[str, Any]:
    return {"image": "worker:1", "handler": "app:run", "nats": {"url": "nats://n:4222"}, **spec}


def test_rules_sit_on_the_objects_whose_fields_they_compare() -> None:
    assert {path: len(rules) for path, rules in _rules().items()} == {
        ".spec": 8,
        ".spec.nats": 3,
        ".spec.nats.tls": 2,
        ".spec.priorities": 2,
        ".spec.priorities.levels[]": 1,
        ".spec.rateLimit": 2,
        ".spec.rateLimit.perKey": 1,
        ".spec.retry.backoff": 1,
        ".spec.scaling": 1,
        ".spec.schedules": 1,
        ".spec.schedules.periodic[]": 2,
        ".spec.security": 1,
        ".spec.template.annotations": 1,
        ".spec.template.volumes[]": 1,
        ".spec.template.volumes[].projected.sources[]": 1,
    }


def test_min_replicas_rule_is_the_one_the_design_asks_for() -> None:
    [rule] = at(root_schema(), ".spec.scaling")["x-kubernetes-validations"]
    assert rule["rule"] == "self.minReplicas <= self.maxReplicas"
    assert "minReplicas" in rule["message"]
    assert "maxReplicas" in rule["message"]


def test_every_rule_has_a_message_naming_a_field() -> None:
    for path, rules in _rules().items():
        for rule in rules:
            assert rule["message"], path
            assert re.search(r"[a-z]+[A-Z.][a-zA-Z.]*", rule["message"]), rule["message"]


def test_rules_only_read_fields_that_exist_and_are_always_set_or_guarded_by_has() -> None:
    """CEL fails on an absent field, so each reference must be required, defaulted
    (defaults apply before validation) or checked with has() first."""
    for path, rules in _rules().items():
        scope = at(root_schema(), path)
        for rule in rules:
            guarded = set(_HAS.findall(rule["rule"]))
            for ref in _REF.findall(rule["rule"]):
                parent = scope
                parts = ref.strip(".").split(".")
                for i, part in enumerate(parts):
                    assert part in parent["properties"], f"{path}: {rule['rule']}"
                    node = parent["properties"][part]
                    always_set = part in parent.get("required", []) or "default" in node
                    upto = "." + ".".join(parts[: i + 1])  # has() of a prefix guards it too
                    assert always_set or upto in guarded, (
                        f"{path}: {upto} may be absent in {rule['rule']!r}"
                    )
                    parent = node


def test_a_defaulted_object_carries_every_field_its_rules_read_without_has() -> None:
    """The apiserver checks a default against the rules before nested defaulting
    (1.36 rejected a `default: {}` with "no such key: minReplicas")."""
    for path, rules in _rules().items():
        node = at(root_schema(), path)
        if "default" not in node:
            continue
        for rule in rules:
            guarded = set(_HAS.findall(rule["rule"]))
            for ref in _REF.findall(rule["rule"]):
                if ref in guarded:
                    continue
                value = node["default"]
                for part in ref.strip(".").split("."):
                    assert part in value, f"{path} default lacks {ref} for {rule['rule']!r}"
                    value = value[part]


def test_immutability_rules_are_transition_rules() -> None:
    transition = [
        rule["message"]
        for rules in _rules().values()
        for rule in rules
        if "oldSelf" in rule["rule"]
    ]
    assert len(transition) == 3
    assert all("cannot change after creation" in m for m in transition)


_LANED: tuple[dict[str, Any], ...] = (
    {"priorities": {"levels": [{"name": "high"}, {"name": "low"}], "default": "low"}},
    {"ordered": {}},
)

BAD_SPECS = [
    pytest.param(
        _minimal(
            keyedConcurrency={"header": "Customer", "maxPerKey": 2},
            tracking={"enabled": False},
        ),
        "keyedConcurrency and rateLimit.perKey need tracking.enabled: a task handed back while "
        "its key is busy must not use up an attempt",
        id="keyed-without-tracking",
    ),
    pytest.param(
        _minimal(
            rateLimit={"perKey": {"header": "Customer", "perSecond": 5}},
            tracking={"enabled": False},
        ),
        "keyedConcurrency and rateLimit.perKey need tracking.enabled: a task handed back while "
        "its key is busy must not use up an attempt",
        id="key-rate-without-tracking",
    ),
    *(
        pytest.param(
            _minimal(tracking={"enabled": False}, **laned),
            "priorities and ordered need tracking.enabled: their consumers have no delivery "
            "cap, so workers count a task's runs to dead-letter it",
            id=f"{next(iter(laned))}-without-tracking",
        )
        for laned in _LANED
    ),
    *(
        pytest.param(
            _minimal(nats={"url": "nats://n", "subjects": ["tasks.a.b.>"]}, **laned),
            "priorities and ordered need the default subjects (nats.subjects unset): their "
            "levels and partitions are laid out under tasks.<namespace>.<pool>",
            id=f"{next(iter(laned))}-with-custom-subjects",
        )
        for laned in _LANED
    ),
    *(
        pytest.param(
            _minimal(priorities={"levels": [{"name": "high"}, {"name": name}], "default": "high"}),
            "priorities.levels: a level's name cannot start with 'ordered': "
            "tasks.<namespace>.<pool>.ordered.<key> is where ordered tasks are published, and "
            "<consumer>-ordered-<n> are the ordered partitions' consumers",
            id=f"level-called-{name}",
        )
        for name in ("ordered", "ordered-0")
    ),
    pytest.param(
        _minimal(priorities={"levels": [{"name": "high"}, {"name": "high"}], "default": "high"}),
        "priorities.levels: each level needs a name of its own",
        id="levels-named-twice",
    ),
    pytest.param(
        _minimal(priorities={"levels": [{"name": "high"}, {"name": "low"}], "default": "normal"}),
        "priorities.default must be the name of one of priorities.levels",
        id="default-not-a-level",
    ),
    pytest.param(
        _minimal(rateLimit={"burst": 5}),
        "rateLimit needs perSecond, perKey or both",
        id="rate-limit-of-nothing",
    ),
    pytest.param(
        _minimal(rateLimit={"perKey": {"header": "Customer", "perSecond": 1, "burst": 40}}),
        "rateLimit.perKey: burst / perSecond (the window the limit is counted over) must be "
        "between 0.05 and 30 seconds",
        id="key-rate-window-too-long",
    ),
    pytest.param(
        _minimal(rateLimit={"perSecond": 50, "burst": 1}),
        "rateLimit: burst / perSecond (the window the limit is counted over) must be between "
        "0.05 and 30 seconds",
        id="rate-window-too-short",
    ),
    pytest.param(
        _minimal(rateLimit={"perSecond": 1, "burst": 31}),
        "rateLimit: burst / perSecond (the window the limit is counted over) must be between "
        "0.05 and 30 seconds",
        id="rate-window-too-long",
    ),
    pytest.param(
        _minimal(schedules={"periodic": [{"name": "a", "every": "1m", "cron": "@daily"}]}),
        "schedules.periodic: each schedule needs exactly one of every or cron",
        id="periodic-every-and-cron",
    ),
    pytest.param(
        _minimal(
            security={"requireSigned": True, "signingKeySecret": {"name": "k"}},
            schedules={"periodic": [{"name": "a", "every": "1m"}]},
        ),
        "schedules.periodic cannot feed a pool with security.requireSigned: the operator holds "
        "no signing key, so every firing would be dead-lettered as invalid",
        id="periodic-with-signed-tasks",
    ),
    pytest.param(
        _minimal(
            nats={"url": "nats://n", "subjects": ["tasks.a.b.>"]},
            schedules={"periodic": [{"name": "a", "every": "1m"}]},
        ),
        "schedules.periodic: with nats.subjects set, each schedule needs a subject (the default "
        "tasks.<namespace>.<pool>.<name> is not one of the pool's)",
        id="periodic-without-subject-beside-custom-subjects",
    ),
    pytest.param(
        _minimal(schedules={"enabled": False, "periodic": [{"name": "a", "every": "1m"}]}),
        "schedules.periodic needs schedules.enabled (unset or true)",
        id="periodic-with-schedules-off",
    ),
    pytest.param(
        _minimal(schedules={"periodic": [{"name": "a", "every": "1m", "timeZone": "UTC"}]}),
        "schedules.periodic: timeZone applies to cron schedules only",
        id="periodic-zone-without-cron",
    ),
    *(
        pytest.param(
            _minimal(nats={"url": "nats://n", **limit}, schedules=schedules),
            "schedules need a task stream without nats.maxMsgs/maxBytes limits: with them, "
            "nats-server would drop the oldest tasks when the stream is full",
            id=f"schedules-with-{next(iter(limit))}-{next(iter(schedules))}",
        )
        for limit in ({"maxMsgs": 10}, {"maxBytes": 1024})
        for schedules in ({"enabled": True}, {"periodic": [{"name": "a", "every": "1m"}]})
    ),
    pytest.param(
        _minimal(scaling={"minReplicas": 5, "maxReplicas": 2}),
        "scaling.minReplicas must not exceed scaling.maxReplicas",
        id="min-above-max",
    ),
    pytest.param(
        _minimal(retry={"backoff": {"initialSeconds": 10, "maxSeconds": 5}}),
        "retry.backoff.initialSeconds must not exceed retry.backoff.maxSeconds",
        id="backoff-initial-above-cap",
    ),
    pytest.param(
        _minimal(security={"requireSigned": True}),
        "security.requireSigned needs security.signingKeySecret",
        id="signed-without-key",
    ),
    pytest.param(
        _minimal(
            nats={"url": "nats://n", "tls": {"secretName": "t", "ca": {"name": "c", "key": "k"}}}
        ),
        "nats.tls: use either secretName or ca/cert/key references, not both",
        id="tls-both-styles",
    ),
    pytest.param(
        _minimal(nats={"url": "nats://n", "tls": {"cert": {"name": "c", "key": "k"}}}),
        "nats.tls: cert and key must be given together",
        id="tls-cert-without-key",
    ),
    pytest.param(
        _minimal(nats={"url": "nats://n", "stream": "same"}, deadLetter={"stream": "same"}),
        "deadLetter.stream must differ from nats.stream",
        id="dlq-is-task-stream",
    ),
    *(
        pytest.param(
            _minimal(nats={"url": "nats://n", "subjects": ["tasks.team-a.ok.>", subject]}),
            "nats.subjects must each start with tasks.<namespace>. or a prefix the operator"
            " grants the namespace (two literal tokens): a bare '>', a wildcard in the first two"
            " tokens, '$' system subjects or _INBOX replies would reach other tenants",
            id=f"subject-{subject}",
        )
        for subject in (
            ">",
            "*.x.y",
            "$JS.API.>",
            "$SYS.>",
            "$KV.jetpool-control.a.b",
            "_INBOX.abc.>",
            "_INBOX_team-a_orders.x.y",
            "tasks.>",
            "tasks.*.x",
            "orders.>",
            "tasks.a",
            "invoices.billing",
        )
    ),
    *(
        pytest.param(
            _minimal(template={"volumes": [{"name": "v", **volume}]}),
            "template.volumes: each volume needs exactly one of configMap, secret, emptyDir,"
            " projected, downwardAPI, persistentVolumeClaim, ephemeral; hostPath and other"
            " node-level volume types are not accepted",
            id=f"volume-{'-'.join(volume) or 'none'}",
        )
        for volume in (
            {"hostPath": {"path": "/"}},
            {"csi": {"driver": "x"}},
            {"nfs": {"server": "n", "path": "/"}},
            {},
            {"emptyDir": {}, "configMap": {"name": "c"}},
            {"emptyDir": {}, "hostPath": {"path": "/"}},
        )
    ),
    pytest.param(
        _minimal(
            template={
                "volumes": [{"name": "p", "projected": {"sources": [{"clusterTrustBundle": {}}]}}]
            }
        ),
        "template.volumes: each projected source needs exactly one of configMap, secret,"
        " downwardAPI, serviceAccountToken",
        id="projected-cluster-trust-bundle",
    ),
    pytest.param(
        _minimal(
            template={"annotations": {"container.apparmor.security.beta.kubernetes.io/worker": "u"}}
        ),
        "template.annotations must not set AppArmor or seccomp profiles: the workers keep the"
        " restricted profile the operator gives them",
        id="apparmor-unconfined",
    ),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_models_reject_what_the_cel_rules_reject_with_the_same_message(
    spec: dict[str, Any], message: str
) -> None:
    cel_messages = [r["message"] for rules in _rules().values() for r in rules]
    assert message in cel_messages
    with pytest.raises(ValidationError, match=re.escape(message)):
        WorkerPoolSpec.model_validate(spec)


def _subjects_rule() -> dict[str, Any]:
    return next(r for r in _rules()[".spec.nats"] if "subjects" in r["rule"])


@pytest.mark.parametrize(
    "subject",
    [
        "tasks.team-a.thumbs.>",
        "tasks.a.b",
        "tasks.a.*.x",
        "tasks.a.>",
        "tasks.a.$x",
        "invoices.billing.>",
        "invoices.billing.*.paid",
    ],
)
def test_subjects_with_two_literal_tokens_pass_the_subjects_rule(subject: str) -> None:
    pattern = _subjects_rule()["rule"].split("matches('")[1].split("')")[0]
    assert re.fullmatch(pattern.replace("\\\\", "\\"), subject)
    WorkerPoolSpec.model_validate(_minimal(nats={"url": "nats://n", "subjects": [subject]}))


def test_the_subjects_rule_tolerates_an_absent_subjects_list() -> None:
    assert _subjects_rule()["rule"].startswith("!has(self.subjects) || ")


def test_every_non_transition_rule_has_a_mirrored_bad_spec() -> None:
    mirrored = {p.values[1] for p in BAD_SPECS}
    stateless = {
        r["message"] for rules in _rules().values() for r in rules if "oldSelf" not in r["rule"]
    }
    assert stateless == mirrored


@pytest.mark.parametrize(
    "volume",
    [
        {"configMap": {"name": "c"}},
        {"secret": {"secretName": "s"}},
        {"emptyDir": {"medium": "Memory"}},
        {"persistentVolumeClaim": {"claimName": "data"}},
        {"downwardAPI": {"items": []}},
        {"ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"projected": {"sources": [{"secret": {"name": "s"}}, {"serviceAccountToken": {}}]}},
    ],
)
def test_whitelisted_volume_types_pass_the_volume_rules(volume: dict[str, Any]) -> None:
    WorkerPoolSpec.model_validate(_minimal(template={"volumes": [{"name": "v", **volume}]}))


def test_the_volume_item_schema_declares_only_whitelisted_sources() -> None:
    """Anything else (hostPath, csi, ...) is an unknown field: refused or pruned, never kept."""
    item = at(root_schema(), ".spec.template.volumes[]")
    assert "x-kubernetes-preserve-unknown-fields" not in item
    assert set(item["properties"]) == {
        "name",
        "configMap",
        "secret",
        "emptyDir",
        "projected",
        "downwardAPI",
        "persistentVolumeClaim",
        "ephemeral",
    }
