#!/usr/bin/env bash
# Run the jetpool e2e suite on a kind cluster with real images (`make e2e-kind`).
#
#   e2e/kind/run.sh [PYTEST ARGS...]
#
# 1. Makes a Docker engine reachable (e2e/docker/engine.sh: a user's own engine is used
#    untouched; otherwise Debian's docker.io is installed and started, and stopped at the end).
# 2. Builds the images from the repository's Dockerfiles: jetpool-operator, jetpool-worker, and
#    the e2e handler image FROM the worker image (as docs/packaging.md tells users), plus the
#    NATS image (e2e/kind/nats.Dockerfile). The Python base is `python:*-slim` where a registry
#    answers, else one built from Debian packages (e2e/docker/python-base.sh).
# 3. Creates a kind cluster (kind pinned in e2e/versions.env) from a node image built here
#    (e2e/kind/node-image.sh), or from kind's published one with KIND_NODE_IMAGE=default.
# 4. Installs NATS with JetStream, JWT accounts and TLS (e2e/kind/secure_nats.py), then the
#    chart with `helm install` into a namespace that enforces the restricted pod security level.
# 5. Runs the e2e suite with JETPOOL_E2E_PROVIDER=kind: the suite shared with the local test bed
#    plus the tests only real containers can show (tests/e2e/kind/).
# The cluster is deleted at the end (KEEP_CLUSTER=1 keeps it for debugging).
#
# Environment: KIND_CLUSTER (jetpool-e2e), KIND_NODE_IMAGE (built here; "default" = kind's),
# PYTHON_IMAGE (the Dockerfiles' default, else built here), IMAGE_TAG (e2e), KEEP_CLUSTER (0).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/versions.env
source "$repo/e2e/versions.env"
cluster=${KIND_CLUSTER:-jetpool-e2e}
tag=${IMAGE_TAG:-e2e}
keep=${KEEP_CLUSTER:-0}
state="$repo/.jetpool/kind-$cluster"
kubeconfig="$state/kubeconfig"
operator_image="jetpool-operator:$tag"
worker_image="jetpool-worker:$tag"
handler_image="jetpool-e2e-handlers:$tag"
nats_version=$("$repo/.venv/bin/nats-server" --version | grep -o '[0-9][0-9.]*' | head -n 1)
nats_image="jetpool-e2e-nats:$nats_version"
release=jetpool
release_namespace=jetpool-system
python="$repo/.venv/bin/python"

log() { printf '[kind-e2e %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

tools() {
  local bin
  bin=$("$repo/e2e/build-testbed.sh" kind | tail -n 1)
  kind_bin="$bin/kind"
  helm_bin="$("$repo/e2e/build-testbed.sh" helm | tail -n 1)/helm"
  kubectl_bin="$repo/.venv/bin/kubectl"
  [ -x "$kubectl_bin" ] || die "kubectl is required (make venv installs one)"
  [ -x "$repo/.venv/bin/pytest" ] || die "pytest is required (make venv)"
}

kctl() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

cleanup() {
  local rc=$?
  if [ "$keep" = 1 ]; then
    log "keeping cluster $cluster; kubeconfig: $kubeconfig"
  else
    if [ -n "${kind_bin:-}" ] && [ "$rc" != 0 ]; then
      log "exporting kind logs to $state/logs"
      "$kind_bin" export logs --name "$cluster" "$state/logs" >/dev/null 2>&1 || true
    fi
    [ -z "${kind_bin:-}" ] || "$kind_bin" delete cluster --name "$cluster" >/dev/null 2>&1 || true
    "$repo/e2e/docker/engine.sh" down || true
  fi
  exit "$rc"
}

python_image() {
  local default
  default=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$repo/worker/Dockerfile")
  if [ -n "${PYTHON_IMAGE:-}" ]; then
    echo "$PYTHON_IMAGE"
  elif docker image inspect "$default" >/dev/null 2>&1 || docker pull -q "$default" >/dev/null 2>&1; then
    echo "$default"
  else
    log "no registry answers for $default: building a Python base from Debian packages"
    "$repo/e2e/docker/python-base.sh"
  fi
}

build_images() {
  local base context
  base=$(python_image)
  log "building $operator_image, $worker_image, $handler_image (base $base) and $nats_image"
  export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} # the Dockerfiles need nothing BuildKit adds
  docker build -q --build-arg "PYTHON_IMAGE=$base" -f "$repo/operator/Dockerfile" \
    -t "$operator_image" "$repo" >/dev/null
  docker build -q --build-arg "PYTHON_IMAGE=$base" -f "$repo/worker/Dockerfile" \
    -t "$worker_image" "$repo" >/dev/null
  # The handler image's context is tests/ only, as a user's is their handler package.
  context=$(mktemp -d)
  tar -C "$repo" -c --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache tests \
    | tar -C "$context" -x
  docker build -q --build-arg "WORKER_IMAGE=$worker_image" -f "$here/handlers.Dockerfile" \
    -t "$handler_image" "$context" >/dev/null
  rm -rf "$context"
  context=$(mktemp -d)
  cp "$repo/.venv/bin/nats-server" "$context/"
  docker build -q -f "$here/nats.Dockerfile" -t "$nats_image" "$context" >/dev/null
  rm -rf "$context"
  docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "^(jetpool-operator|jetpool-worker|jetpool-e2e-handlers|jetpool-e2e-nats):" >&2
}

node_image() {
  if [ "${KIND_NODE_IMAGE:-}" = default ]; then
    echo ""
  elif [ -n "${KIND_NODE_IMAGE:-}" ]; then
    echo "$KIND_NODE_IMAGE"
  elif [ "$(id -u)" != 0 ]; then
    log "not root: using kind's published node image (building one here needs debootstrap)"
    echo ""
  else
    "$here/node-image.sh"
  fi
}

create_cluster() {
  local image
  image=$(node_image)
  mkdir -p "$state"
  local args=(create cluster --name "$cluster" --config "$here/kind-config.yaml"
    --kubeconfig "$kubeconfig" --wait 5m)
  [ -z "$image" ] || args+=(--image "$image")
  "$kind_bin" delete cluster --name "$cluster" >/dev/null 2>&1 || true
  log "creating kind cluster $cluster (node image: ${image:-kind\'s default})"
  "$kind_bin" "${args[@]}" >&2
  log "loading the images into the node"
  "$kind_bin" load docker-image --name "$cluster" \
    "$operator_image" "$handler_image" "$nats_image" >&2
  kctl get nodes -o wide >&2
}

install_nats() {
  log "installing NATS with JetStream, JWT accounts and TLS"
  "$python" "$here/secure_nats.py" --kubeconfig "$kubeconfig" --kubectl "$kubectl_bin" \
    --image "$nats_image" --state "$state/nats" --node "$cluster-control-plane" >&2
  kctl -n nats rollout status statefulset/nats --timeout 3m >&2
}

install_chart() {
  log "installing the jetpool chart ($operator_image) into $release_namespace"
  kctl create namespace "$release_namespace" --dry-run=client -o yaml \
    | kctl label --local -f - -o yaml \
      pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/warn=restricted \
    | kctl apply -f - >&2
  "$helm_bin" upgrade --install "$release" "$repo/charts/jetpool" \
    --kubeconfig "$kubeconfig" --namespace "$release_namespace" \
    --set image.repository=jetpool-operator --set "image.tag=$tag" \
    --set image.pullPolicy=Never --set logging.verbose=true \
    --wait --timeout 5m >&2
  kctl -n "$release_namespace" rollout status "deployment/$release-operator" --timeout 3m >&2
}

run_suite() {
  log "running the e2e suite on kind"
  (
    cd "$repo"
    # shellcheck disable=SC1091 # written by secure_nats.py
    source "$state/nats/env"
    JETPOOL_KUBECONFIG="$kubeconfig" \
      JETPOOL_E2E_PROVIDER=kind \
      JETPOOL_E2E_WORKER_IMAGE="$handler_image" \
      JETPOOL_E2E_OPERATOR_NAMESPACE="$release_namespace" \
      JETPOOL_E2E_HELM="$helm_bin" \
      JETPOOL_E2E_HELM_RELEASE="$release" \
      JETPOOL_E2E_OPERATOR_IMAGE_TAG="$tag" \
      "$repo/.venv/bin/pytest" -m e2e -p no:cacheprovider "$@"
  )
}

main() {
  [ -x "$python" ] || die "run \`make venv\` first"
  trap cleanup EXIT
  "$repo/e2e/docker/engine.sh" up
  tools
  build_images
  create_cluster
  install_nats
  install_chart
  run_suite "$@"
}

main "$@"
