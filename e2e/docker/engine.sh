#!/usr/bin/env bash
# Make a Docker engine reachable for the targets that need real containers (kind, image builds).
#
#   e2e/docker/engine.sh up     # use the reachable engine, else install (Debian docker.io) and start one
#   e2e/docker/engine.sh down   # stop the engine only if `up` started it
#
# A user's own engine is used untouched. An engine started here runs as root without systemd,
# logs to .jetpool/docker/dockerd.log, and runs containers through e2e/docker/capfilter-runtime
# (runc limited to the capabilities this host can grant; needed for kind's privileged nodes in
# sandboxes whose capability bounding set is smaller than the kernel's list).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
state="$repo/.jetpool/docker"
pidfile="$state/dockerd.pid"
marker="$state/started-here"

log() { printf '[docker-engine %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

reachable() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

install_engine() {
  [ "$(id -u)" = 0 ] || die "no Docker engine reachable, and installing one needs root"
  command -v apt-get >/dev/null 2>&1 || die "no Docker engine reachable; install Docker first"
  log "installing Debian's docker.io (no engine found)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends docker.io >&2
}

up() {
  if reachable; then
    log "using the reachable Docker engine ($(docker version --format '{{.Server.Version}}'))"
    return 0
  fi
  command -v dockerd >/dev/null 2>&1 || install_engine
  [ "$(id -u)" = 0 ] || die "dockerd is installed but not running; start it (needs root)"
  mkdir -p "$state"
  log "starting dockerd (log: $state/dockerd.log)"
  setsid dockerd \
    --pidfile "$pidfile" \
    --add-runtime "capfilter=$here/capfilter-runtime" \
    --default-runtime capfilter \
    >"$state/dockerd.log" 2>&1 </dev/null &
  touch "$marker"
  for _ in $(seq 1 120); do
    reachable && { log "Docker engine ready"; return 0; }
    sleep 0.5
  done
  tail -n 20 "$state/dockerd.log" >&2 || true
  die "dockerd did not become ready within 60 s"
}

down() {
  [ -f "$marker" ] || { log "engine not started here; leaving it alone"; return 0; }
  if [ -f "$pidfile" ]; then
    local pid
    pid=$(cat "$pidfile")
    log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
  fi
  rm -f "$marker"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down" ;;
esac
