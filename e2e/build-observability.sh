#!/usr/bin/env bash
# Build the observability binaries the tests run, from pinned Go modules, into the cache outside
# git. Builds only what is missing; prints the directory holding the binary on the last line.
#
#   e2e/build-observability.sh promtool     the chart's alert rules are unit-tested with it
#                                           (tests/packaging/test_alert_rules.py)
#   e2e/build-observability.sh prometheus   scrapes the kind e2e's operator and worker pods
#                                           (tests/e2e/test_observability.py)
#   e2e/build-observability.sh jaeger       the trace collector of the same e2e
set -euo pipefail

# Pinned here, not in versions.env: that file keys the kind node image, which none of these are
# part of. The Prometheus module's v0.3xx.y is Prometheus 3.xx.y; the Jaeger module's v1.76.0
# tag carries the Jaeger v2 binary (cmd/jaeger, built on the OpenTelemetry Collector).
PROMETHEUS_MODULE_VERSION=0.316.0
JAEGER_MODULE_VERSION=1.76.0

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache=${JETPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetpool}

log() { printf '[build-observability %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

prometheus_bin() {
  local tool=$1 bin="$cache/bin/prometheus-$PROMETHEUS_MODULE_VERSION"
  mkdir -p "$bin"
  if [ ! -x "$bin/$tool" ]; then
    log "building $tool (prometheus module v$PROMETHEUS_MODULE_VERSION)"
    # Only the Kubernetes service discovery: the other SDs would triple the build for nothing.
    GOBIN="$bin" go install -trimpath -ldflags '-s -w' -tags remove_all_sd,enable_kubernetes_sd \
      "github.com/prometheus/prometheus/cmd/$tool@v$PROMETHEUS_MODULE_VERSION"
  fi
  echo "$bin"
}

jaeger_bin() {
  local bin="$cache/bin/jaeger-$JAEGER_MODULE_VERSION" module
  mkdir -p "$bin"
  if [ ! -x "$bin/jaeger" ]; then
    log "building jaeger (jaeger module v$JAEGER_MODULE_VERSION; a few minutes cold)"
    # A throwaway tool module: `go install pkg@version` refuses modules with replace directives.
    module=$(mktemp -d "${TMPDIR:-/tmp}/jetpool-jaeger.XXXXXX")
    trap 'rm -rf "$module"' RETURN
    (
      cd "$module"
      go mod init jetpool.invalid/jaeger-build >/dev/null 2>&1
      go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_MODULE_VERSION" >&2
      go build -trimpath -ldflags '-s -w' -o "$bin/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
    )
  fi
  echo "$bin"
}

case "${1:-}" in
  promtool | prometheus) prometheus_bin "$1" ;;
  jaeger) jaeger_bin ;;
  *)
    echo "usage: $0 promtool|prometheus|jaeger" >&2
    exit 2
    ;;
esac
