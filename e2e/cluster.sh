#!/usr/bin/env bash
# Start or stop a local Kubernetes cluster made of real kube-apiserver, etcd,
# kube-controller-manager and kube-scheduler processes plus kwok (simulated nodes), all
# built from pinned Go modules by e2e/build-testbed.sh. No Docker, no downloads.
#
#   e2e/cluster.sh up   [NAME]   # idempotent; writes $JETPOOL_STATE/<NAME>/kubeconfig
#   e2e/cluster.sh down [NAME]   # idempotent; leaves no process behind
#
# JETPOOL_STATE defaults to <repo>/.jetpool. The cluster named "jetpool" also gets its
# kubeconfig copied to .jetpool/kubeconfig (the one the README and Makefile use).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
action=${1:?usage: cluster.sh up|down|status [NAME]}
name=${2:-jetpool}
state=${JETPOOL_STATE:-$repo/.jetpool}
workdir="$state/kwok"
kubeconfig="$state/$name/kubeconfig"

log() { printf '[cluster %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

bin=$("$here/build-testbed.sh" kubernetes etcd kwok | tail -n 1)
kubectl_bin=${KUBECTL:-$repo/.venv/bin/kubectl}
[ -x "$kubectl_bin" ] || kubectl_bin=$(command -v kubectl)

export KWOK_WORKDIR="$workdir" KWOK_KUBECTL_BINARY="$kubectl_bin"
kwokctl() { "$bin/kwokctl" --name "$name" "$@"; }
kctl() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

cluster_exists() { [ -d "$workdir/clusters/$name" ]; }

wait_ready() {
  local deadline=$((SECONDS + ${JETPOOL_CLUSTER_TIMEOUT:-240}))
  until kctl get --raw /readyz >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "apiserver not ready in time"; return 1; }
    sleep 1
  done
  until kctl get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' \
      2>/dev/null | grep -q True; do
    [ $SECONDS -lt $deadline ] || { log "no Ready node in time"; return 1; }
    sleep 1
  done
  until kctl -n default get serviceaccount default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "default ServiceAccount never appeared"; return 1; }
    sleep 1
  done
}

up() {
  mkdir -p "$state/$name"
  if cluster_exists; then
    if kctl get --raw /readyz >/dev/null 2>&1; then
      log "cluster $name already running"
      return 0
    fi
    log "cluster $name exists but is not running; starting it"
    kwokctl start cluster --wait 3m >&2 || { down; up; return; }
  else
    log "creating cluster $name (kube-apiserver, etcd, controller-manager, scheduler, kwok)"
    kwokctl create cluster --runtime binary \
      --kube-apiserver-binary "$bin/kube-apiserver" \
      --kube-controller-manager-binary "$bin/kube-controller-manager" \
      --kube-scheduler-binary "$bin/kube-scheduler" \
      --etcd-binary "$bin/etcd" \
      --kwok-controller-binary "$bin/kwok" \
      --kubeconfig "$kubeconfig" \
      --wait 3m >&2
  fi
  kwokctl get kubeconfig >"$kubeconfig.tmp" && mv "$kubeconfig.tmp" "$kubeconfig"
  if [ "$(kctl get nodes --no-headers 2>/dev/null | wc -l)" -lt 1 ]; then
    kwokctl scale node --replicas 1 >&2
  fi
  wait_ready
  [ "$name" != jetpool ] || cp "$kubeconfig" "$state/kubeconfig"
  log "cluster $name ready; kubeconfig: $kubeconfig"
}

down() {
  if cluster_exists; then
    log "deleting cluster $name"
    kwokctl delete cluster >&2 || true
  fi
  # Belt and braces: nothing of this cluster may survive (a half-created cluster leaves pids).
  pkill -f -- "$workdir/clusters/$name/" 2>/dev/null || true
  rm -rf "${workdir:?}/clusters/$name" "${state:?}/$name"
  [ "$name" != jetpool ] || rm -f "$state/kubeconfig"
  log "cluster $name is down"
}

case "$action" in
  up) up ;;
  down) down ;;
  status) cluster_exists && kctl get --raw /readyz && echo && kctl get nodes ;;
  *) echo "usage: cluster.sh up|down|status [NAME]" >&2; exit 2 ;;
esac
