#!/usr/bin/env bash
# Build a kind node image with no container registry: every piece from Debian packages and
# pinned Go modules, assembled the way kind's own base image and `kind build node-image` do it.
#
#   e2e/kind/node-image.sh        -> prints the image name (jetpool-kind-node:v<K8S>-<hash>)
#
# Why: `kind build node-image` pulls the control-plane images and kind's base image from
# registries, which a sandbox without a registry cannot reach. On an ordinary Docker host,
# e2e/kind/run.sh uses kind's published node image instead (KIND_NODE_IMAGE=default).
#
# What goes in (versions: e2e/versions.env):
# - a Debian bookworm root file system (debootstrap) with the packages kind's base image lists,
#   Debian's runc and CNI plugins (ptp, host-local, portmap, loopback);
# - kind's own node files (entrypoint, systemd units, containerd config) from the kind module;
# - containerd, kubelet, kubeadm, kubectl (e2e/build-testbed.sh node containerd kind pause);
# - the control-plane images kubeadm asks for (`kubeadm config images list`): each is the
#   binary from the same builds in a minimal root file system (`docker import`), kube-proxy in
#   the Debian root file system (it needs nft), pause compiled statically; they are imported
#   into the node's containerd content store (`ctr images import --no-unpack`), as kind does.
# - a static CNI config (ptp + host-local on kind's default pod subnet, single node), and an
#   inert /kind/manifests/default-cni.yaml so kind's CNI step has nothing to install.
# CoreDNS is not built: e2e/kind/kind-config.yaml skips kubeadm's CoreDNS add-on, and clients in
# the cluster reach Services by ClusterIP.
#
# The image is rebuilt only when this script, e2e/versions.env or the inputs change (the hash
# in the tag). Needs root (debootstrap, chroot) and a Docker engine.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=e2e/versions.env
source "$repo/e2e/versions.env"

cache=${JETPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetpool}
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debian_suite=bookworm
packages=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount
packages+=,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,runc,containernetworking-plugins
pod_subnet=10.244.0.0/24

log() { printf '[node-image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "$*"; exit 1; }

hash=$(cat "${BASH_SOURCE[0]}" "$repo/e2e/versions.env" "$repo/e2e/build-testbed.sh" \
  | sha256sum | cut -c1-10)
image="jetpool-kind-node:v$K8S_VERSION-$hash"

if docker image inspect "$image" >/dev/null 2>&1; then
  log "$image is already built"
  echo "$image"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "building the node image needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null 2>&1 || {
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
}

testbed_bin=$("$repo/e2e/build-testbed.sh" kubernetes etcd | tail -n 1)
node_bin=$("$repo/e2e/build-testbed.sh" node containerd kind pause | tail -n 1)
kind_files=$(cd "$cache/gomod" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@v$KIND_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/images/base/files

work="$cache/kind/work-$hash"
rootfs="$work/rootfs"
images="$work/images"
rm -rf "$work"
mkdir -p "$work" "$images"
trap 'rm -rf "$work"' EXIT

log "debootstrap $debian_suite with kind's node packages (about a minute)"
debootstrap --variant=minbase --include="$packages" "$debian_suite" "$rootfs" "$debian_mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

# kube-proxy's image: the plain Debian root file system (nft, iptables) plus the binary, taken
# before the node's own files go in.
log "control-plane images"
make_image() {
  # $1: image name, $2: directory holding the root file system, $3...: docker import --change
  local name=$1 dir=$2
  shift 2
  local args=(--change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin')
  for change in "$@"; do args+=(--change "$change"); done
  tar -C "$dir" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . | docker import "${args[@]}" - "$name" >/dev/null
  docker save "$name" -o "$images/$(echo "$name" | tr '/:' '__').tar"
}
mapfile -t wanted < <("$node_bin/kubeadm" config images list --kubernetes-version "v$K8S_VERSION")
for name in "${wanted[@]}"; do
  component=${name##*/}
  component=${component%%:*}
  case $component in
    kube-apiserver | kube-controller-manager | kube-scheduler | etcd)
      # The local test bed's builds (etcd: its pinned ETCD_VERSION under kubeadm's image name).
      src=$testbed_bin/$component
      ;;
    kube-proxy)
      install -m 0755 "$node_bin/kube-proxy" "$rootfs/usr/local/bin/kube-proxy"
      make_image "$name" "$rootfs"
      rm "$rootfs/usr/local/bin/kube-proxy"
      continue
      ;;
    pause)
      pause_image=$name
      src=$node_bin/pause
      ;;
    coredns)
      log "skipping $name (kind-config.yaml skips the CoreDNS add-on)"
      continue
      ;;
    *) die "kubeadm wants $name, which this script does not know how to build" ;;
  esac
  dir="$work/img-$component"
  mkdir -p "$dir/usr/local/bin" "$dir/tmp" "$dir/etc"
  chmod 1777 "$dir/tmp"
  install -m 0755 "$src" "$dir/usr/local/bin/$component"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' \
    >"$dir/etc/passwd"
  entry=/usr/local/bin/$component
  make_image "$name" "$dir" "ENTRYPOINT [\"$entry\"]"
done
[ -n "${pause_image:-}" ] || die "kubeadm listed no pause image"

log "kind's node files and the Kubernetes node binaries"
install -m 0755 "$kind_files"/usr/local/bin/* "$rootfs/usr/local/bin/"
mkdir -p "$rootfs/kind/bin" "$rootfs/kind/manifests" "$rootfs/etc/containerd" \
  "$rootfs/etc/systemd/system/kubelet.service.d" "$rootfs/etc/kubernetes/manifests" \
  "$rootfs/opt/cni" "$rootfs/etc/cni/net.d"
install -m 0644 "$kind_files"/kind/README.txt "$rootfs/kind/" 2>/dev/null || true
install -m 0755 "$kind_files"/kind/bin/* "$rootfs/kind/bin/"
install -m 0644 "$kind_files"/etc/crictl.yaml "$rootfs/etc/"
install -m 0644 "$kind_files"/etc/containerd/* "$rootfs/etc/containerd/"
install -m 0644 "$kind_files"/etc/default/* "$rootfs/etc/default/"
install -m 0644 "$kind_files"/etc/sysctl.d/* "$rootfs/etc/sysctl.d/"
install -m 0644 "$kind_files"/etc/systemd/system/*.service "$kind_files"/etc/systemd/system/*.slice \
  "$rootfs/etc/systemd/system/"
install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* \
  "$rootfs/etc/systemd/system/kubelet.service.d/"
# Where the node's capability bounding set lacks CAP_SYS_RESOURCE (sandboxed hosts), runc cannot
# lower a container's oom_score_adj (the kubelet asks -998 for pod sandboxes) and every pod fails
# with "can't get final child's PID from pipe". containerd then clamps the scores to its own, the
# setting kind uses for rootless nodes; elsewhere nothing changes.
cat >"$rootfs/kind/bin/restrict-oom-score-adj.sh" <<'SH'
#!/bin/bash
set -euo pipefail
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
if (((0x$capbnd >> 24 & 1) == 0)); then
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml
fi
SH
chmod 0755 "$rootfs/kind/bin/restrict-oom-score-adj.sh"
mkdir -p "$rootfs/etc/systemd/system/containerd.service.d"
printf '[Service]\nExecStartPre=/kind/bin/restrict-oom-score-adj.sh\n' \
  >"$rootfs/etc/systemd/system/containerd.service.d/10-restrict-oom-score-adj.conf"
for b in containerd containerd-shim-runc-v2 ctr; do install -m 0755 "$node_bin/$b" "$rootfs/usr/local/bin/"; done
for b in kubelet kubeadm kubectl; do install -m 0755 "$node_bin/$b" "$rootfs/usr/bin/"; done
printf 'v%s' "$K8S_VERSION" >"$rootfs/kind/version"
sed -i "s|sandbox_image = .*|sandbox_image = \"$pause_image\"|" "$rootfs/etc/containerd/config.toml"
# kind's base image: the runtime spec with kind's product-files hook and without rlimits.
"$node_bin/ctr" oci spec | python3 -c '
import json, sys
spec = json.load(sys.stdin)
spec.setdefault("hooks", {}).setdefault("createContainer", []).append(
    {"path": "/kind/bin/mount-product-files.sh"})
spec["process"].pop("rlimits", None)
json.dump(spec, sys.stdout, indent=2)' >"$rootfs/etc/containerd/cri-base.json"
# Debian installs the CNI plugins in /usr/lib/cni; containerd's config looks in /opt/cni/bin.
ln -s /usr/lib/cni "$rootfs/opt/cni/bin"
cat >"$rootfs/etc/cni/net.d/10-jetpool-ptp.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "kind-ptp",
  "plugins": [
    {"type": "ptp", "ipMasq": true, "mtu": 1500,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_subnet"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
cat >"$rootfs/kind/manifests/default-cni.yaml" <<'CNI'
# The pod network of this node image is the static CNI config in /etc/cni/net.d (ptp +
# host-local, single node), so kind's CNI step only records that fact.
apiVersion: v1
kind: ConfigMap
metadata:
  name: jetpool-static-cni
  namespace: kube-system
data:
  config: /etc/cni/net.d/10-jetpool-ptp.conflist
CNI

log "systemd units, as kind's base image sets them"
find "$rootfs/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$rootfs"/lib/systemd/system/multi-user.target.wants/* \
  "$rootfs"/etc/systemd/system/*.wants/* \
  "$rootfs"/lib/systemd/system/local-fs.target.wants/* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*udev* \
  "$rootfs"/lib/systemd/system/sockets.target.wants/*initctl* \
  "$rootfs"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$rootfs/etc/systemd/journald.conf"
chroot "$rootfs" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >&2
chroot "$rootfs" systemctl mask systemd-binfmt.service >&2
: >"$rootfs/etc/machine-id"

log "importing the control-plane images into the node's containerd content store"
ctrd_state="$work/containerd-state"
mkdir -p "$ctrd_state"
printf 'version = 2\n' >"$work/containerd.toml"
"$node_bin/containerd" --config "$work/containerd.toml" --root "$rootfs/var/lib/containerd" \
  --state "$ctrd_state" --address "$ctrd_state/containerd.sock" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
# An import that fails must not leave this containerd running on a deleted root.
# (Under set -e a failing command in the trap would decide the exit status: hence || true.)
trap '{ kill "$ctrd_pid" && wait "$ctrd_pid"; } 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do [ -S "$ctrd_state/containerd.sock" ] && break; sleep 0.2; done
for tarball in "$images"/*.tar; do
  "$node_bin/ctr" --address "$ctrd_state/containerd.sock" --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests "$tarball" >&2
done
"$node_bin/ctr" --address "$ctrd_state/containerd.sock" --namespace=k8s.io images list -q >&2
kill "$ctrd_pid"
wait "$ctrd_pid" || true

log "docker import $image"
tar -C "$rootfs" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . | docker import \
  --change 'ENV container=docker' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
  - "$image-rootfs" >/dev/null
# `docker import` cannot set STOPSIGNAL (systemd stops on SIGRTMIN+3; SIGTERM re-executes it).
printf 'FROM %s\nSTOPSIGNAL SIGRTMIN+3\n' "$image-rootfs" | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >/dev/null
docker rmi "$image-rootfs" >/dev/null
log "built $image"
echo "$image"
