#!/usr/bin/env bash
# Build a Python base image from Debian packages, for hosts with no container registry.
#
#   e2e/docker/python-base.sh     -> prints the image name (jetpool-python:3.11-bookworm-<hash>)
#
# jetpool's Dockerfiles default to `python:*-slim-bookworm` (what users build with). Here, with no
# registry, this image is passed instead through their PYTHON_IMAGE build argument: Debian
# bookworm's python3 (3.11) with venv and pip, `python` on PATH, and the machine's own CA bundle
# (so pip inside a build trusts what pip on this machine trusts). It stays on this machine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates

log() { printf '[python-base %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-10)
image="jetpool-python:3.11-bookworm-$hash"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "building the Python base image needs root (debootstrap)"
command -v debootstrap >/dev/null 2>&1 || {
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q debootstrap >&2
}

work=$(mktemp -d "${TMPDIR:-/tmp}/jetpool-python-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "debootstrap bookworm with $packages (about a minute)"
debootstrap --variant=minbase --include="$packages" bookworm "$work/rootfs" "$debian_mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
host_bundle=/etc/ssl/certs/ca-certificates.crt
[ ! -f "$host_bundle" ] || cp "$host_bundle" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
tar -C "$work/rootfs" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  - "$image" >/dev/null
log "built $image ($here)"
echo "$image"
