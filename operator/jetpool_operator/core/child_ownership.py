"""Whether the operator may write a child: only when it does not exist yet or this pool is
its controller. Anything else is someone else's object and is left exactly as it is: no
apply (which would change its fields) and no owner reference (which would let the garbage
collector delete it with the pool)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ChildConflict:
    """A name the pool's child needs is taken by an object this pool does not control."""

    kind: str
    name: str
    owner: str | None
    """``Kind/name`` of the existing object's controller (or first owner), None if none."""

    def message(self) -> str:
        held = f"owned by {self.owner}" if self.owner else "not owned by any object"
        return (
            f"{self.kind} {self.name} already exists, {held}: it is left untouched; delete or "
            "rename it, or rename the pool"
        )


def _owner(references: list[Mapping[str, Any]]) -> str | None:
    chosen = next((r for r in references if r.get("controller")), None)
    chosen = chosen or (references[0] if references else None)
    return None if chosen is None else f"{chosen.get('kind')}/{chosen.get('name')}"


def child_conflict(
    pool_uid: str, kind: str, name: str, existing: Mapping[str, Any] | None
) -> ChildConflict | None:
    """None when the child may be applied: ``existing`` (its metadata) is None or carries this
    pool's UID in a controller owner reference. A matching name alone proves nothing."""
    if existing is None:
        return None
    references: list[Mapping[str, Any]] = list(existing.get("ownerReferences") or [])
    if pool_uid and any(r.get("uid") == pool_uid and r.get("controller") for r in references):
        return None
    return ChildConflict(kind=kind, name=name, owner=_owner(references))
