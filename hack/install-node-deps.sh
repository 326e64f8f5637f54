#!/usr/bin/env bash
# Installs the host packages that booting systemd-nspawn nodes needs (test/nspawn, hack/node-rootfs.sh, the lab).
#
# Idempotent and quiet: when every package is already installed it prints nothing and touches nothing, so the
# Makefile can call it before every target that boots a node. It needs root (apt), as the node tests do anyway.
#
#   systemd-container  systemd-nspawn, the node "hypervisor"
#   debootstrap        builds the node root filesystem (hack/node-rootfs.sh)
#   zstd               the cached rootfs tarball bin/node-rootfs.tar.zst
#   iproute2           the host bridge (ip link add type bridge) and checks inside tests
#   util-linux         nsenter (commands inside a node), mount, setsid
#   systemd            busctl, handy to poke a node's bus by hand (already present on Debian hosts)
#   kmod               modprobe overlay/br_netfilter where the kernel has them as modules
#   ca-certificates    debootstrap over https mirrors
set -euo pipefail

packages=(systemd-container debootstrap zstd iproute2 util-linux systemd kmod ca-certificates)

missing=()
for p in "${packages[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully configured package.
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-node-deps: missing host packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

echo "install-node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
apt-get update -q >/dev/null
# apt has been seen to fail once on a temp file that vanished under it; repairing and retrying once fixes it.
if ! apt_install; then
  apt-get --fix-broken install -y -q >/dev/null || true
  apt_install
fi
