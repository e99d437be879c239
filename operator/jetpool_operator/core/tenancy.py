"""Tenant isolation: who owns a JetStream resource, and which subjects a pool may capture.

Pure decisions the NATS adapter and the controller act on. Ownership lives in the JetStream
``metadata`` of each stream and consumer the operator creates (nats-server >= 2.10), so it
survives operator restarts and is visible to ``nats stream info``. A pool may only take
subjects under ``tasks.<its namespace>.``, which keeps one tenant's pools from capturing
another's tasks (JetStream refuses overlapping streams, so first come would be first served).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from jetpool_protocol.naming import DLQ_SUBJECT_PREFIX, PoolNames, nats_token

OWNER_NAMESPACE = "jetpool.dev/owner-namespace"
OWNER_NAME = "jetpool.dev/owner-name"
OWNER_UID = "jetpool.dev/owner-uid"
OWNER_KEYS = (OWNER_NAMESPACE, OWNER_NAME, OWNER_UID)


class Refusal(StrEnum):
    """NatsReady reasons of a pool the isolation rules stop."""

    OWNED_BY_ANOTHER_POOL = "OwnedByAnotherPool"
    ADOPTION_REQUIRED = "AdoptionRequired"
    """The resource exists and nobody owns it: adopting needs ``spec.nats.adoptExisting``."""
    ADOPTION_REFUSED = "AdoptionRefused"
    """Nobody owns the stream, but it captures subjects of another namespace."""
    SUBJECTS_OUTSIDE_NAMESPACE = "SubjectsOutsideNamespace"


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


def judge_claim(
    kind: str,
    name: str,
    me: Owner,
    observed: Mapping[str, str] | None,
    *,
    adopt_existing: bool,
    observed_subjects: Iterable[str] | None = None,
) -> Verdict:
    """May ``me`` reconcile (update, re-stamp) the existing ``kind`` ``name``?

    Ours (same namespace and name; a different UID is the same pool recreated after a Retain
    deletion, and is re-stamped): yes. Another pool's: never. Unowned (made by hand or by an
    earlier jetpool version): only with ``spec.nats.adoptExisting``, and, for a stream
    (``observed_subjects`` given), only when all its subjects lie in ``me``'s namespace: the
    opt-in must not let a tenant take over another namespace's unmigrated stream.
    """
    owner = Owner.from_metadata(observed)
    if owner is None:
        subjects = list(observed_subjects or ())
        spaces = namespace_spaces(me.namespace)
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


def subject_problems(namespace: str, subjects: Iterable[str]) -> list[str]:
    """Why each subject is refused; empty when every one lies inside ``tasks.<namespace>.``.

    The namespace token must be literal (``tasks.*.x`` or ``tasks.>`` reach into every
    namespace) and at least one token must follow it.
    """
    space = PoolNames(namespace, "-").subject_space
    problems = []
    for subject in subjects:
        error = _subject_error(subject)
        if error is None and not (subject.startswith(space) and len(subject) > len(space)):
            error = (
                f"is outside namespace {namespace}'s subject space {space}> (it would capture "
                "or collide with other tenants' tasks)"
            )
        if error is not None:
            problems.append(f"subject {subject!r} {error}")
    return problems


def subjects_verdict(namespace: str, subjects: Iterable[str]) -> Verdict:
    """The NatsReady refusal for subjects outside the namespace, or allowed."""
    problems = subject_problems(namespace, subjects)
    if not problems:
        return Verdict(True)
    space = PoolNames(namespace, "-").subject_space
    return Verdict(
        False,
        Refusal.SUBJECTS_OUTSIDE_NAMESPACE,
        "; ".join(problems) + f"; a pool in {namespace} may only use subjects under {space}>",
    )
