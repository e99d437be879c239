"""Tenant isolation: who owns a JetStream resource, and which subjects a pool may capture.

Pure decisions the NATS adapter and the controller act on. Ownership lives in the JetStream
``metadata`` of each stream and consumer the operator creates (nats-server >= 2.10), so it
survives operator restarts and is visible to ``nats stream info``. A pool may only take
subjects under ``tasks.<its namespace>.`` plus the prefixes the operator's configuration grants
its namespace (:class:`SubjectGrants`), which keeps one tenant's pools from capturing another's
tasks (JetStream refuses overlapping streams, so first come would be first served).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import TypeAdapter, ValidationError

from jetpool_protocol.naming import (
    DLQ_SUBJECT_PREFIX,
    DLQ_SUFFIX,
    STREAM_PREFIX,
    PoolNames,
    nats_token,
)

OWNER_NAMESPACE = "jetpool.dev/owner-namespace"
OWNER_NAME = "jetpool.dev/owner-name"
OWNER_UID = "jetpool.dev/owner-uid"
OWNER_KEYS = (OWNER_NAMESPACE, OWNER_NAME, OWNER_UID)
EXTRA_SUBJECT_SPACES_ENV = "JETPOOL_EXTRA_SUBJECT_SPACES"


class Refusal(StrEnum):
    """NatsReady reasons of a pool the isolation rules stop."""

    OWNED_BY_ANOTHER_POOL = "OwnedByAnotherPool"
    ADOPTION_REQUIRED = "AdoptionRequired"
    """The resource exists and nobody owns it: adopting needs ``spec.nats.adoptExisting``."""
    ADOPTION_REFUSED = "AdoptionRefused"
    """Nobody owns the stream, but it captures subjects of another namespace."""
    SUBJECTS_OUTSIDE_NAMESPACE = "SubjectsOutsideNamespace"
    RESERVED_STREAM_NAME = "ReservedStreamName"
    """A custom stream name that only the operator hands out (another pool's default, a KV
    bucket's backing stream)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """The WorkerPool a resource belongs to."""

    namespace: str
    name: str
    uid: str = ""

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The owner keys as sorted pairs (hashable, so plans stay comparable)."""
        return tuple(
            sorted(
                {
                    OWNER_NAMESPACE: self.namespace,
                    OWNER_NAME: self.name,
                    OWNER_UID: self.uid,
                }.items()
            )
        )

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> Owner | None:
        """The recorded owner; ``None`` when no owner key is present at all. A partial record
        yields an owner with empty fields, which matches no pool (never silently ours)."""
        metadata = metadata or {}
        if not any(k in metadata for k in OWNER_KEYS):
            return None
        return cls(
            metadata.get(OWNER_NAMESPACE, ""),
            metadata.get(OWNER_NAME, ""),
            metadata.get(OWNER_UID, ""),
        )


def owner_metadata(metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Only the owner keys of observed metadata (the server adds ``_nats.*`` keys of its own)."""
    return tuple(sorted((k, v) for k, v in (metadata or {}).items() if k in OWNER_KEYS))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the pool may act on an existing resource; ``reason`` and ``message`` when not."""

    allowed: bool
    reason: str = ""
    message: str = ""


def namespace_spaces(namespace: str) -> tuple[str, str]:
    """Subject prefixes of a namespace: its tasks and its dead letters."""
    return PoolNames(namespace, "-").subject_space, f"{DLQ_SUBJECT_PREFIX}.{nats_token(namespace)}."


# --- extra subject spaces (operator configuration) ------------------------------------------

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LITERAL_TOKEN = re.compile(r"^[^.*>\s]+$")
_RESERVED_ROOTS = ("tasks", "$", "_INBOX", DLQ_SUBJECT_PREFIX.split(".")[0])
_GRANTS_SHAPE: TypeAdapter[dict[str, list[str]]] = TypeAdapter(dict[str, list[str]])


def _prefix_error(prefix: str) -> str | None:
    tokens = prefix.split(".")
    if not prefix.endswith(".") or len(tokens) < 3:
        return "must be at least two literal tokens and end with '.' (e.g. invoices.billing.)"
    if not all(_LITERAL_TOKEN.match(t) for t in tokens[:-1]):
        return "must be literal tokens (no wildcards, empty tokens or whitespace)"
    if tokens[0] in _RESERVED_ROOTS or tokens[0].startswith(("$", "_INBOX")):
        return (
            f"may not start with {tokens[0]!r} "
            "(tasks.<namespace>., $ system, _INBOX… inboxes, jetpool)"
        )
    return None


@dataclass(frozen=True, slots=True)
class SubjectGrants:
    """Subject prefixes a namespace may use besides ``tasks.<namespace>.``, granted by the
    cluster admin. Parsed so that no granted prefix lies inside another namespace's: a prefix
    granted to one namespace can never let another in."""

    by_namespace: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    def extra(self, namespace: str) -> tuple[str, ...]:
        return dict(self.by_namespace).get(namespace, ())

    @classmethod
    def parse(cls, raw: str) -> SubjectGrants:
        """``{"billing": ["invoices.billing."]}`` (JSON); ValueError says what is wrong."""
        if not raw.strip():
            return cls()
        where = f"{EXTRA_SUBJECT_SPACES_ENV}"
        try:
            grants = _GRANTS_SHAPE.validate_python(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise ValueError(
                f"{where}: expected a JSON object namespace -> list of subject prefixes, "
                f'e.g. {{"billing": ["invoices.billing."]}} ({str(exc).splitlines()[0]})'
            ) from exc
        owner: dict[str, str] = {}
        for namespace, prefixes in sorted(grants.items()):
            if not _NAMESPACE.match(namespace):
                raise ValueError(f"{where}: {namespace!r} is not a namespace name")
            for prefix in prefixes:
                error = _prefix_error(prefix)
                if error is not None:
                    raise ValueError(f"{where}: prefix {prefix!r} of {namespace}: {error}")
                for other, holder in owner.items():
                    if holder != namespace and (
                        other.startswith(prefix) or prefix.startswith(other)
                    ):
                        raise ValueError(
                            f"{where}: prefix {prefix!r} of {namespace} overlaps {other!r} of "
                            f"{holder}: one namespace could capture the other's tasks"
                        )
                owner[prefix] = namespace
        return cls(
            tuple(
                (ns, tuple(sorted(set(prefixes))))
                for ns, prefixes in sorted(grants.items())
                if prefixes
            )
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SubjectGrants:
        return cls.parse(env.get(EXTRA_SUBJECT_SPACES_ENV, ""))

    def as_json(self) -> str:
        return json.dumps({ns: list(prefixes) for ns, prefixes in self.by_namespace})


NO_GRANTS = SubjectGrants()


def judge_claim(
    kind: str,
    name: str,
    me: Owner,
    observed: Mapping[str, str] | None,
    *,
    adopt_existing: bool,
    observed_subjects: Iterable[str] | None = None,
    extra_spaces: Iterable[str] = (),
) -> Verdict:
    """May ``me`` reconcile (update, re-stamp) the existing ``kind`` ``name``?

    Ours (same namespace and name; a different UID is the same pool recreated after a Retain
    deletion, and is re-stamped): yes. Another pool's: never. Unowned (made by hand or by an
    earlier jetpool version): only with ``spec.nats.adoptExisting``, and, for a stream
    (``observed_subjects`` given), only when all its subjects lie in ``me``'s namespace: the
    opt-in must not let a tenant take over another namespace's unmigrated stream
    (``extra_spaces``: the prefixes the operator grants that namespace count as its own).
    """
    owner = Owner.from_metadata(observed)
    if owner is None:
        subjects = list(observed_subjects or ())
        spaces = (*namespace_spaces(me.namespace), *extra_spaces)
        foreign = [
            s
            for s in subjects
            if not any(s.startswith(space) and len(s) > len(space) for space in spaces)
        ]
        if adopt_existing and (observed_subjects is None or (subjects and not foreign)):
            return Verdict(True)
        if adopt_existing:
            return Verdict(
                False,
                Refusal.ADOPTION_REFUSED,
                f"{kind} {name!r} has no owner but captures subjects outside namespace "
                f"{me.namespace} ({', '.join(foreign) or 'none listed'}): adopting it could take "
                f"another tenant's tasks; a NATS administrator can move its subjects under "
                f"{spaces[0]} first, or use another name",
            )
        return Verdict(
            False,
            Refusal.ADOPTION_REQUIRED,
            f"{kind} {name!r} already exists and no WorkerPool owns it (made by hand or by an "
            f"earlier jetpool version); set spec.nats.adoptExisting: true to adopt it, or use "
            f"another name",
        )
    if (owner.namespace, owner.name) == (me.namespace, me.name):
        return Verdict(True)
    return Verdict(
        False,
        Refusal.OWNED_BY_ANOTHER_POOL,
        f"{kind} {name!r} belongs to WorkerPool {owner.label}; jetpool never adopts, changes "
        f"or deletes another pool's {kind}: use another name",
    )


def judge_delete(kind: str, name: str, me: Owner, observed: Mapping[str, str] | None) -> Verdict:
    """May ``me`` delete ``name``? Only if its metadata names exactly this pool, UID included:
    an unowned or foreign resource is kept, and so is one a deleted namesake left behind."""
    owner = Owner.from_metadata(observed)
    if owner is not None and owner == me and me.uid:
        return Verdict(True)
    who = "no WorkerPool" if owner is None else f"WorkerPool {owner.label} (uid {owner.uid})"
    return Verdict(
        False,
        Refusal.OWNED_BY_ANOTHER_POOL if owner is not None else Refusal.ADOPTION_REQUIRED,
        f"{kind} {name!r} kept: it belongs to {who}, not to {me.label} (uid {me.uid})",
    )


# --- subjects --------------------------------------------------------------------------------


def _subject_error(subject: str) -> str | None:
    tokens = subject.split(".")
    if any(not t or any(c.isspace() for c in t) for t in tokens):
        return "is not a valid subject (empty token or whitespace)"
    for i, token in enumerate(tokens):
        if token == ">" and i != len(tokens) - 1:
            return "is not a valid subject ('>' must be the last token)"
        if token not in ("*", ">") and ("*" in token or ">" in token):
            return "is not a valid subject (wildcards must be whole tokens)"
    return None


def _spaces(namespace: str, grants: SubjectGrants) -> tuple[str, ...]:
    return (PoolNames(namespace, "-").subject_space, *grants.extra(namespace))


def _spaces_text(spaces: tuple[str, ...]) -> str:
    return " or ".join(f"{space}>" for space in spaces)


def subject_problems(
    namespace: str, subjects: Iterable[str], grants: SubjectGrants = NO_GRANTS
) -> list[str]:
    """Why each subject is refused; empty when every one lies inside ``tasks.<namespace>.``
    or a prefix ``grants`` gives the namespace.

    Spaces are literal prefixes (``tasks.*.x`` or ``tasks.>`` reach into every namespace) and
    at least one token must follow them.
    """
    spaces = _spaces(namespace, grants)
    problems = []
    for subject in subjects:
        error = _subject_error(subject)
        inside = any(subject.startswith(s) and len(subject) > len(s) for s in spaces)
        if error is None and not inside:
            error = (
                f"is outside namespace {namespace}'s subject space {_spaces_text(spaces)} (it "
                "would capture or collide with other tenants' tasks)"
            )
        if error is not None:
            problems.append(f"subject {subject!r} {error}")
    return problems


def subjects_verdict(
    namespace: str, subjects: Iterable[str], grants: SubjectGrants = NO_GRANTS
) -> Verdict:
    """The NatsReady refusal for subjects outside the namespace's spaces, or allowed."""
    problems = subject_problems(namespace, subjects, grants)
    if not problems:
        return Verdict(True)
    spaces = _spaces_text(_spaces(namespace, grants))
    return Verdict(
        False,
        Refusal.SUBJECTS_OUTSIDE_NAMESPACE,
        "; ".join(problems) + f"; a pool in {namespace} may only use subjects under {spaces}",
    )


# --- stream names ----------------------------------------------------------------------------

RESERVED_STREAM_PREFIXES = (STREAM_PREFIX, "KV_", "OBJ_")
"""``jetpool-`` is every pool's default name; ``KV_``/``OBJ_`` back key-value and object stores
(the operator's own control bucket is ``KV_jetpool-control``)."""


def stream_names_verdict(
    namespace: str,
    pool: str,
    custom: Iterable[tuple[str, str | None]],
) -> Verdict:
    """May a pool use its custom stream names (``(field, name)`` pairs, None when unset)?

    A default name belongs to the pool it is derived from; a custom name that takes one
    would be first come, first served across namespaces, so a tenant could squat another
    namespace's default before that pool exists. Only the pool's own defaults (today's and
    the legacy ``jetpool-<ns>-<pool>`` of earlier versions) may be spelled out.
    """
    defaults = PoolNames(namespace, pool)
    own = {defaults.stream, defaults.dead_letter_stream}
    own |= {defaults.legacy_stream, f"{defaults.legacy_stream}{DLQ_SUFFIX}"}
    problems = [
        f"{field} {name!r}"
        for field, name in custom
        if name is not None and name not in own and name.startswith(RESERVED_STREAM_PREFIXES)
    ]
    if not problems:
        return Verdict(True)
    return Verdict(
        False,
        Refusal.RESERVED_STREAM_NAME,
        f"{', '.join(problems)}: names starting with "
        f"{', '.join(repr(p) for p in RESERVED_STREAM_PREFIXES)} are reserved for the defaults "
        f"jetpool derives for each pool and for key-value stores; leave the field unset "
        f"(this pool's default is {defaults.stream!r}) or choose another name",
    )
