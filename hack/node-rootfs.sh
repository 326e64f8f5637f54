#!/usr/bin/env bash
# Builds the shared root filesystem of the systemd-nspawn "nodes" (test/nspawn, the remediator's systemd tests,
# the lab) into bin/node-rootfs/: Debian bookworm with systemd as init, D-Bus, containerd, runc and the CNI
# reference plugins, configured the way ../shared/notes/real-cluster-here.md measured that they work on our hosts
# (cgroup v1 hybrid, no CAP_SYS_RESOURCE, PID 1 not systemd).
#
# Nodes never write into bin/node-rootfs/: each node mounts an overlayfs over it (test/nspawn), so one build
# serves every node and every run. kubelet is deliberately not in here: its binary is built from Go modules
# (hack/build-controlplane.sh kubelet) and placed into a node at boot with the Files/Binds options of
# test/nspawn, together with its unit and config, which belong to the lab.
#
# Idempotent and cached in two layers so that only what changed is redone:
#   1. debootstrap (about a minute, network): cached as bin/node-rootfs.tar.zst, keyed by the suite, the mirror and
#      the package list below; a restore takes seconds.
#   2. configuration (units, containerd config; instant): redone whenever this script changes.
# bin/node-rootfs.stamp holds the hash of this script and the cache key the tree was built from.
#
# Usage: hack/node-rootfs.sh            (root; hack/install-node-deps.sh installs debootstrap and zstd)
# Environment: NODE_ROOTFS_MIRROR overrides the Debian mirror read from the host's apt sources.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/bin/node-rootfs"
cache="$root/bin/node-rootfs.tar.zst"
stamp="$root/bin/node-rootfs.stamp"
build="$root/bin/node-rootfs.build"

suite=bookworm
# Everything a node runs. kubelet needs iptables, conntrack, mount and kmod; containerd needs runc and the CNI
# plugins; libpam-systemd and dbus give the node a real system bus for go-systemd; procps is for people debugging a
# node (ps, pgrep).
packages=(
  systemd systemd-sysv dbus libpam-systemd
  containerd runc containernetworking-plugins
  iproute2 iptables conntrack kmod ca-certificates procps
)

log() { echo "node-rootfs: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot); run it as root"
for tool in debootstrap zstd chroot findmnt; do
  command -v "$tool" >/dev/null || die "$tool is missing: run hack/install-node-deps.sh (make node-deps)"
done

# The Debian mirror apt already uses on this host: the first URI serving "$suite" itself (not -security or
# -updates) in deb822 .sources files or one-line sources.list entries.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822 stanzas are separated by blank lines; keep the URIs of a stanza whose Suites list names $suite.
    awk -v suite="$suite" '
      /^[[:space:]]*$/ { if (uris != "" && ok) { print uris; exit } uris = ""; ok = 0; next }
      tolower($1) == "uris:" { uris = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { if (uris != "" && ok) print uris }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk -v suite="$suite" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) == suite) print $i }' "$f"
  done
}
mirror=${NODE_ROOTFS_MIRROR:-$(apt_mirror | head -n1)}
[ -n "$mirror" ] || die "no Debian $suite mirror found in /etc/apt/sources.list{,.d}; set NODE_ROOTFS_MIRROR"

cache_key=$(printf '%s\n' "$suite" "$mirror" "${packages[@]}" | sha256sum | cut -c1-16)
script_hash=$(sha256sum "$0" | cut -c1-16)
want_stamp="script=$script_hash debootstrap=$cache_key"

if [ -d "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want_stamp" ]; then
  exit 0
fi

# A node's overlayfs keeps the tree it was mounted over; replacing that tree under a running node would change
# its root underneath it. Refuse instead, and say which mounts are in the way.
if users=$(findmnt -rn -t overlay -o TARGET,OPTIONS | grep -F "lowerdir=$out" | cut -d' ' -f1) && [ -n "$users" ]; then
  die "nodes are running on $out (overlay mounts: $(echo "$users" | tr '\n' ' ')); halt them before rebuilding"
fi

# debootstrap mounts /proc and /sys inside the target and leaves them behind when it fails: never leave a mount
# under bin/ (a later rm -rf would descend into the host's /sys).
cleanup_build() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F "$build/" | sort -r); do umount -l "$m" || true; done
  rm -rf "$build"
}
trap cleanup_build EXIT
cleanup_build
mkdir -p "$build"

tar_flags=(--numeric-owner --xattrs --xattrs-include='*' --acls)
if [ -f "$cache" ] && [ "$(cat "$cache.stamp" 2>/dev/null)" = "$cache_key" ]; then
  log "restoring the debootstrap layer from $cache"
  zstd -dcq "$cache" | tar "${tar_flags[@]}" -xpf - -C "$build"
else
  log "debootstrap $suite from $mirror (about a minute)"
  include=$(IFS=,; echo "${packages[*]}")
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$build" "$mirror" >"$root/bin/node-rootfs.debootstrap.log" 2>&1; then
    tail -n 20 "$root/bin/node-rootfs.debootstrap.log" >&2
    die "debootstrap failed; full log in bin/node-rootfs.debootstrap.log"
  fi
  # The package caches are a third of the tree and no node installs anything.
  rm -rf "$build"/var/cache/apt/archives/*.deb "$build"/var/lib/apt/lists/*
  tar "${tar_flags[@]}" -C "$build" -cf - . | zstd -q -T0 -o "$cache.new"
  mv -f "$cache.new" "$cache"
  echo "$cache_key" >"$cache.stamp"
fi

log "configuring units and containerd"
r="$build"

# Every node gets its hostname from its machine name (systemd-nspawn -M) and a fresh machine id per boot: an empty
# /etc/machine-id makes systemd generate a transient one, so two nodes never share an id.
rm -f "$r/etc/hostname"
: >"$r/etc/machine-id"

# The v1 cgroup controllers are mounted read-only inside an nspawn container; containerd and kubelet must create
# cgroups there. A plain "mount -o remount,rw" fails (busy); a bind remount of each controller works.
install -d "$r/usr/local/sbin"
cat >"$r/usr/local/sbin/cnimedic-cgroup-rw" <<'SH'
#!/bin/sh
# Makes the cgroup v1 controller hierarchies writable for containerd and kubelet (see cnimedic-cgroup-rw.service).
set -eu
findmnt -rn -t cgroup -o TARGET,OPTIONS | while read -r target options; do
  case ",$options," in
    *,ro,*) mount -o remount,bind,rw "$target" ;;
  esac
done
SH
chmod 0755 "$r/usr/local/sbin/cnimedic-cgroup-rw"
cat >"$r/etc/systemd/system/cnimedic-cgroup-rw.service" <<'UNIT'
[Unit]
Description=Make the cgroup v1 controllers writable for containerd and kubelet
DefaultDependencies=no
After=local-fs.target
Before=containerd.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/cnimedic-cgroup-rw

[Install]
WantedBy=multi-user.target
UNIT

# containerd's CRI as the notes measured it: without restrict_oom_score_adj every sandbox fails on hosts without
# CAP_SYS_RESOURCE (runc: "can't get final child's PID from pipe: EOF"); kubelet uses the cgroupfs driver, so runc
# must too; the CNI bin dir is the conventional /opt/cni/bin, a link to Debian's /usr/lib/cni, so the seeds' messages
# ("failed to find plugin ... in path [/opt/cni/bin]") read as they do on real clusters. The lab imports its pause
# image under sandbox_image's name (or replaces this file through test/nspawn's Files).
install -d "$r/etc/containerd" "$r/etc/cni/net.d" "$r/opt/cni"
cat >"$r/etc/containerd/config.toml" <<'TOML'
# Written by cnimedic's hack/node-rootfs.sh for lab nodes.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "registry.k8s.io/pause:3.10"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
TOML
# Relative, so that the link resolves inside the node's root from the host too (test/nspawn writes files with
# os.Root, which refuses absolute links that would leave the root).
ln -sfn ../../usr/lib/cni "$r/opt/cni/bin"
install -d "$r/etc/systemd/system/containerd.service.d"
cat >"$r/etc/systemd/system/containerd.service.d/10-cnimedic.conf" <<'UNIT'
# containerd creates cgroups for its shims and containers: the controllers must be writable first.
[Unit]
Wants=cnimedic-cgroup-rw.service
After=cnimedic-cgroup-rw.service
UNIT

# The journal lives in memory: a node's writable layer is thrown away at halt anyway, and the host's disk is shared.
install -d "$r/etc/systemd/journald.conf.d"
cat >"$r/etc/systemd/journald.conf.d/10-cnimedic.conf" <<'CONF'
[Journal]
Storage=volatile
RuntimeMaxUse=32M
CONF

# Nodes get their address on a host bridge from systemd-networkd (test/nspawn writes a .network file for host0).
chroot "$r" systemctl enable --quiet cnimedic-cgroup-rw.service containerd.service systemd-networkd.service
# Nothing on a node should spend CPU on its own: no apt timers, and no getty on the console, which is a pipe.
chroot "$r" systemctl mask --quiet apt-daily.timer apt-daily-upgrade.timer console-getty.service

# Swap the finished tree into place; the old one is not in use (checked above).
rm -rf "$out.old"
[ ! -e "$out" ] || mv "$out" "$out.old"
mv "$build" "$out"
rm -rf "$out.old"
echo "$want_stamp" >"$stamp"
log "ready: $out ($(du -sh "$out" | cut -f1))"
