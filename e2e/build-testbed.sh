#!/usr/bin/env bash
# Build the local Kubernetes test bed from pinned Go modules into a cache outside git:
# kube-apiserver, kube-controller-manager, kube-scheduler (k8s.io/kubernetes), etcd
# (go.etcd.io/etcd/server/v3), kwok + kwokctl and helm. Builds only what is missing.
#
# With the parts `node containerd kind pause` it also builds what a kind node image needs
# (e2e/kind/node-image.sh): kubelet, kubeadm, kubectl and kube-proxy from the same
# k8s.io/kubernetes module, containerd + its runc shim + ctr, the kind CLI and the static pause
# binary (compiled from build/pause/linux/pause.c in the k8s module).
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod requires staging modules at v0.0.0
# and maps them with local replaces), so each component is built inside a scratch main module
# whose replace block is derived from the downloaded k8s go.mod.
#
# Usage: e2e/build-testbed.sh [PART...]  -> prints the bin directory on the last line
#        (parts: kubernetes etcd kwok helm [node containerd kind pause]; default: the first four)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=e2e/versions.env
source "$here/versions.env"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
cache=${JETPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetpool}
bin="$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
# What only the kind node image needs has a directory of its own, named by its own versions.
nodebin="$cache/bin/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-kind-$KIND_VERSION"
src="$cache/gomod"
mkdir -p "$bin" "$nodebin" "$src"

log() { printf '[build-testbed %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

have() { for b in "$@"; do [ -x "$bin/$b" ] || return 1; done; }

k8s_commands=(kube-apiserver kube-controller-manager kube-scheduler)

build_kubernetes() {
  have "${k8s_commands[@]}" && return 0
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
  for cmd in "${k8s_commands[@]}"; do
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

build_node() {
  # Same scratch module as build_kubernetes; kubectl's main is k8s.io/kubernetes/cmd/kubectl.
  local testbed_bin=$bin
  bin=$nodebin k8s_commands=(kubelet kubeadm kube-proxy kubectl)
  build_kubernetes
  bin=$testbed_bin k8s_commands=(kube-apiserver kube-controller-manager kube-scheduler)
}

build_containerd() {
  bin=$nodebin have containerd containerd-shim-runc-v2 ctr && return 0
  local m=github.com/containerd/containerd/v2
  log "building containerd, containerd-shim-runc-v2 and ctr v$CONTAINERD_VERSION"
  # The optional snapshotters kind never selects are left out, as kind's base image does.
  GOBIN="$nodebin" go install -trimpath -tags 'no_aufs no_zfs no_btrfs no_devmapper' \
    -ldflags "-s -w -X $m/version.Version=v$CONTAINERD_VERSION" \
    "$m/cmd/containerd@v$CONTAINERD_VERSION" \
    "$m/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" \
    "$m/cmd/ctr@v$CONTAINERD_VERSION"
}

build_kind() {
  bin=$nodebin have kind && return 0
  log "building kind v$KIND_VERSION"
  GOBIN="$nodebin" go install -trimpath -ldflags '-s -w' "sigs.k8s.io/kind@v$KIND_VERSION"
}

build_pause() {
  bin=$nodebin have pause && return 0
  local dir
  dir=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  log "compiling the static pause binary from k8s.io/kubernetes v$K8S_VERSION"
  cc -Os -Wall -Werror -static -DVERSION="v$K8S_VERSION-jetpool" \
    -o "$nodebin/pause.tmp" "$dir/build/pause/linux/pause.c"
  mv "$nodebin/pause.tmp" "$nodebin/pause"
}

want=${*:-kubernetes etcd kwok helm}
out=$bin
for part in $want; do
  "build_$part"
  case $part in node | containerd | kind | pause) out=$nodebin ;; esac
done
log "binaries ready in $out"
echo "$out"
