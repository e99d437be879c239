#!/usr/bin/env bash
# Regenerate constraints.txt: every runtime dependency of jetpool[operator,tracing] pinned
# (==) for Linux CPython 3.11, the interpreter of the images. Resolved from PyPI with a pinned
# pip-compile in a throwaway virtualenv, so the result depends only on pyproject.toml and on
# what PyPI serves. Run from anywhere: scripts/compile-constraints.sh
set -euo pipefail

PIP_TOOLS_VERSION=7.5.3
PYTHON=${PYTHON:-python3.11}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "compile-constraints: $PYTHON is not CPython 3.11 (set PYTHON=...)" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
# pip-compile writes pyproject.toml's path into the "via" comments: run it from the root.
cd "$repo"
# Local wheel directories (PIP_FIND_LINKS) would make the result depend on this machine.
env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND=scripts/compile-constraints.sh \
  "$tmp/venv/bin/pip-compile" \
  --quiet \
  --no-emit-index-url \
  --no-emit-find-links \
  --strip-extras \
  --allow-unsafe \
  --extra operator \
  --extra tracing \
  --output-file constraints.txt \
  --cache-dir "$tmp/cache" \
  pyproject.toml
echo "compile-constraints: wrote $repo/constraints.txt"
