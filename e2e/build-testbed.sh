#!/usr/bin/env bash
# Build the local Kubernetes test bed from pinned Go modules into a cache outside git:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3), kwok + kwokctl and helm. Builds only what is missing.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod requires staging modules at v0.0.0
# and maps them with local replaces), so each component is built inside a scratch main module
# whose replace block is derived from the downloaded k8s go.mod.
#
# Usage: e2e/build-testbed.sh            -> prints the bin directory on the last line
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/versions.env
source "$here/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache=${JETPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetpool}
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
src="$cache/gomod"
mkdir -p "$bin" "$src"

log() { printf '[build-testbed %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

have() { for b in "$@"; do [ -x "$bin/$b" ] || return 1; done; }

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler && return 0
  local w="$src/k8s-$K8S_VERSION" sv="v0.${K8S_VERSION#1.}" minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  mkdir -p "$w" && cd "$w"
  if [ ! -f go.mod ]; then
    log "preparing scratch module for k8s.io/kubernetes v$K8S_VERSION"
    go mod init local/k8sbin >/dev/null 2>&1
    local kmod
    kmod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    go mod edit -go="$(awk '/^go /{print $2}' "$kmod")"
    if grep -q '^godebug' "$kmod"; then
      go mod edit -godebug="$(awk '/^godebug /{print $2}' "$kmod")"
    fi
    # Every staging module the k8s go.mod requires at v0.0.0 maps to its published v0.MINOR.PATCH.
    awk '$1 ~ /^k8s\.io\// && $2=="v0.0.0" {print $1}' "$kmod" | while read -r m; do
      go mod edit -replace="$m=$m@$sv"
    done
    go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
    go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION"
    go mod tidy
  fi
  local cv=k8s.io/component-base/version
  local ldf="-s -w -X $cv.gitVersion=v$K8S_VERSION -X $cv.gitMajor=1 -X $cv.gitMinor=$minor"
  ldf+=" -X $cv.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$bin/$cmd" ] && continue
    log "building $cmd v$K8S_VERSION (cold: several minutes)"
    go build -trimpath -ldflags "$ldf" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$bin/$cmd.tmp" "$bin/$cmd"
  done
}

build_etcd() {
  have etcd && return 0
  local w="$src/etcd-$ETCD_VERSION"
  mkdir -p "$w" && cd "$w"
  if [ ! -f go.mod ]; then
    log "preparing scratch module for etcd v$ETCD_VERSION"
    go mod init local/etcdbin >/dev/null 2>&1
    go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    go mod tidy
  fi
  log "building etcd v$ETCD_VERSION"
  go build -trimpath -ldflags '-s -w' -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$bin/etcd.tmp" "$bin/etcd"
}

build_kwok() {
  have kwok kwokctl && return 0
  log "building kwok and kwokctl v$KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags '-s -w' \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@v$KWOK_VERSION"
}

build_helm() {
  have helm && return 0
  log "building helm v$HELM_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags '-s -w' "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
}

want=${*:-kubernetes etcd kwok helm}
for part in $want; do "build_$part"; done
log "test bed binaries ready in $bin"
echo "$bin"
