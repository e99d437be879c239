"""constraints.txt pins every runtime dependency, so an image built from it is reproducible.

Regenerate it with ``scripts/compile-constraints.sh`` (docs/packaging.md). These checks read
files and the installed metadata only: no network.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.packaging.conftest import REPO

CONSTRAINTS = REPO / "constraints.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)\s*$")
EXTRAS = ("operator", "tracing")


def pinned() -> dict[str, str]:
    """Canonical name -> exact version of every requirement line in constraints.txt."""
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"constraints.txt line is not an exact pin: {raw!r}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match["version"]
    return pins


def runtime_requirements() -> list[Requirement]:
    """pyproject's dependencies plus the extras the operator image installs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in EXTRAS:
        names += project["optional-dependencies"][extra]
    return [Requirement(r) for r in names]


def test_every_line_of_the_constraints_file_is_an_exact_pin() -> None:
    assert pinned(), "constraints.txt pins nothing"


def test_every_direct_runtime_dependency_is_pinned() -> None:
    pins = pinned()
    missing = [str(r) for r in runtime_requirements() if canonicalize_name(r.name) not in pins]
    assert not missing, f"not in constraints.txt (run scripts/compile-constraints.sh): {missing}"


def test_every_pin_satisfies_the_range_pyproject_asks_for() -> None:
    pins = pinned()
    outside = [
        f"{r} (pinned {pins[canonicalize_name(r.name)]})"
        for r in runtime_requirements()
        if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, outside


def test_the_installed_dependency_tree_has_no_unpinned_package() -> None:
    """Transitive dependencies too, walked through the installed metadata of this venv."""
    pins = pinned()
    environment = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
    seen: set[str] = set()
    todo = [(r, "") for r in runtime_requirements()]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for child in metadata.requires(req.name) or []:
            todo += [(Requirement(child), e) for e in ("", *sorted(req.extras))]
    unpinned = sorted(seen - set(pins))
    assert not unpinned, f"installed but not pinned: {unpinned}"
