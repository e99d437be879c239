#!/usr/bin/env bash
# Run the jetpool e2e suite against a kind cluster with real images (`make e2e-kind`).
#
#   e2e/kind/run.sh [PYTEST ARGS...]
#
# Builds the operator, worker and e2e handler images, creates a kind cluster, loads the images,
# installs NATS (e2e/kind/nats.yaml) and the Helm chart, runs `pytest -m e2e` with
# JETPOOL_E2E_PROVIDER=kind, and deletes the cluster (KEEP_CLUSTER=1 keeps it for debugging).
#
# Needs: a Docker engine, kind (else built with `go install` when Go is present), helm (else
# built by e2e/build-testbed.sh), kubectl (the venv's, else PATH).
#
# Environment: KIND_CLUSTER (jetpool-e2e), KIND_NODE_IMAGE (kind's default), IMAGE_TAG (e2e),
# NATS_IMAGE (as in nats.yaml), KEEP_CLUSTER (0), KIND_VERSION (v0.33.0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER:-jetpool-e2e}
tag=${IMAGE_TAG:-e2e}
keep=${KEEP_CLUSTER:-0}
kind_version=${KIND_VERSION:-v0.33.0}
state="$repo/.jetpool/kind-$cluster"
kubeconfig="$state/kubeconfig"
operator_image="jetpool-operator:$tag"
worker_image="jetpool-worker:$tag"
handler_image="jetpool-e2e-handlers:$tag"
release=jetpool
release_namespace=jetpool-system

log() { printf '[kind-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

find_tool() {
  # $1: name; prints the path of a usable binary or nothing.
  local name=$1
  if [ -x "$repo/.venv/bin/$name" ]; then
    echo "$repo/.venv/bin/$name"
  elif command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
  fi
}

tools() {
  command -v docker >/dev/null 2>&1 || die "docker is required (this script needs a Docker engine)"
  docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
  kind_bin=$(find_tool kind)
  if [ -z "$kind_bin" ]; then
    command -v go >/dev/null 2>&1 || die "kind is required (or Go, to build it)"
    log "building kind $kind_version"
    GOBIN="$state/bin" go install "sigs.k8s.io/kind@$kind_version"
    kind_bin="$state/bin/kind"
  fi
  helm_bin=$(find_tool helm)
  if [ -z "$helm_bin" ]; then
    helm_bin="$("$repo/e2e/build-testbed.sh" helm | tail -n 1)/helm"
  fi
  kubectl_bin=$(find_tool kubectl)
  [ -n "$kubectl_bin" ] || die "kubectl is required (make venv installs one)"
  pytest_bin=$(find_tool pytest)
  [ -n "$pytest_bin" ] || die "pytest is required (make venv)"
}

kctl() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    log "keeping cluster $cluster; kubeconfig: $kubeconfig"
  elif [ -n "${kind_bin:-}" ]; then
    log "deleting cluster $cluster"
    "$kind_bin" delete cluster --name "$cluster" >&2 || true
  fi
  exit "$rc"
}

build_images() {
  log "building $operator_image, $worker_image and $handler_image"
  docker build -f "$repo/operator/Dockerfile" -t "$operator_image" "$repo"
  docker build -f "$repo/worker/Dockerfile" -t "$worker_image" "$repo"
  docker build -f "$here/handlers.Dockerfile" --build-arg "WORKER_IMAGE=$worker_image" \
    -t "$handler_image" "$repo"
}

create_cluster() {
  mkdir -p "$state"
  local args=(create cluster --name "$cluster" --config "$here/kind-config.yaml"
    --kubeconfig "$kubeconfig" --wait 5m)
  [ -z "${KIND_NODE_IMAGE:-}" ] || args+=(--image "$KIND_NODE_IMAGE")
  "$kind_bin" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  log "creating kind cluster $cluster"
  "$kind_bin" "${args[@]}" >&2
  for image in "$operator_image" "$worker_image" "$handler_image"; do
    "$kind_bin" load docker-image --name "$cluster" "$image" >&2
  done
}

install_nats() {
  log "installing NATS with JetStream"
  kctl apply -f "$here/nats.yaml" >&2
  [ -z "${NATS_IMAGE:-}" ] || kctl -n nats set image statefulset/nats "nats=$NATS_IMAGE" >&2
  kctl -n nats rollout status statefulset/nats --timeout 3m >&2
}

install_chart() {
  log "installing the jetpool chart ($operator_image)"
  "$helm_bin" upgrade --install "$release" "$repo/charts/jetpool" \
    --kubeconfig "$kubeconfig" --namespace "$release_namespace" --create-namespace \
    --set image.repository=jetpool-operator --set "image.tag=$tag" \
    --set image.pullPolicy=Never --set logging.verbose=true \
    --wait --timeout 5m >&2
  kctl -n "$release_namespace" rollout status "deployment/$release-operator" --timeout 3m >&2
}

run_suite() {
  log "running the e2e suite"
  (
    cd "$repo"
    JETPOOL_KUBECONFIG="$kubeconfig" \
      JETPOOL_E2E_PROVIDER=kind \
      JETPOOL_E2E_WORKER_IMAGE="$handler_image" \
      JETPOOL_E2E_NATS_URL=nats://nats.nats.svc:4222 \
      JETPOOL_E2E_NATS_TEST_URL=nats://127.0.0.1:30422 \
      JETPOOL_E2E_OPERATOR_NAMESPACE="$release_namespace" \
      "$pytest_bin" -m e2e "$@"
  )
}

main() {
  tools
  trap cleanup EXIT
  build_images
  create_cluster
  install_nats
  install_chart
  run_suite "$@"
}

main "$@"
