#!/usr/bin/env bash
# Build promtool from the pinned github.com/prometheus/prometheus module into the cache outside
# git (the chart's alert rules are unit-tested with it: tests/packaging/test_alert_rules.py).
# Builds only when missing. Prints the directory holding promtool on the last line.
set -euo pipefail

# Pinned here, not in versions.env: that file keys the kind node image, which promtool is no
# part of. The module's v0.3xx.y is Prometheus 3.xx.y.
PROMETHEUS_MODULE_VERSION=0.316.0

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache=${JETPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetpool}
bin="$cache/bin/prometheus-$PROMETHEUS_MODULE_VERSION"
mkdir -p "$bin"

if [ ! -x "$bin/promtool" ]; then
  printf '[build-promtool %(%H:%M:%S)T] building promtool (prometheus module v%s)\n' -1 \
    "$PROMETHEUS_MODULE_VERSION" >&2
  GOBIN="$bin" go install -trimpath -ldflags '-s -w' \
    "github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_MODULE_VERSION"
fi
echo "$bin"
