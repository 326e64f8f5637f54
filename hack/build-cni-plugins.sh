#!/usr/bin/env bash
# Builds the reference CNI plugins the remediator's tests and the executor image need, from the
# github.com/containernetworking/plugins Go module (no release download works on our machines):
#
#   bin/cni-old/     OLD_CNI_PLUGINS_VERSION (v0.9.1): bridge, host-local, loopback, portmap. Their VERSION answer
#                    is ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"], which reproduces the seed's
#                    `incompatible CNI versions; config is "1.0.0", plugin supports [...]` for real.
#   bin/cni-bundle/  CNI_PLUGINS_VERSION: the reference plugins the executor image ships and installs
#                    (InstallReferencePlugins), with SHA256SUMS (sha256sum format) that the installer verifies.
#   bin/cni-bundle-linux-ARCH/  (bundle-amd64, bundle-arm64) the same bundle cross-compiled for linux/ARCH, for the
#                    release's multi-arch executor images (make release); not part of the default sets.
#   debian           not built: installs (apt, as root) Debian's containernetworking-plugins 1.1.1 in /usr/lib/cni,
#                    the other real plugin set, and containerd, runc and iptables, which the remediator's CRI tests
#                    run as a plain process. Quiet and untouched when all are installed.
#
# Idempotent: each directory carries a .version stamp and is rebuilt only when the pinned version changes or a
# binary is missing. Builds go through a throw-away GOBIN per set and are moved into place only when complete, so
# an interrupted build never leaves a half set behind.
#
# Usage: hack/build-cni-plugins.sh [old|bundle|bundle-amd64|bundle-arm64|debian]...   (default: old bundle)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"

module=github.com/containernetworking/plugins

# The old set is only what the seed scenarios use; the bundle is every reference plugin the executor may install.
old_plugins=(main/bridge ipam/host-local main/loopback meta/portmap)
bundle_plugins=(
  main/bridge main/host-device main/ipvlan main/loopback main/macvlan main/ptp main/vlan main/tap main/dummy
  ipam/dhcp ipam/host-local ipam/static
  meta/bandwidth meta/firewall meta/portmap meta/sbr meta/tuning meta/vrf
)

complete() { # dir version plugin... -> true when dir holds every plugin built from version
  local dir=$1 version=$2; shift 2
  [ "$(cat "$dir/.version" 2>/dev/null)" = "$version" ] || return 1
  local p
  for p in "$@"; do [ -x "$dir/$(basename "$p")" ] || return 1; done
}

build_set() { # dir version plugin...   (GOARCH in the environment cross-compiles)
  local dir=$1 version=$2; shift 2
  complete "$dir" "$version" "$@" && return 0
  local staging="$dir.partial"
  rm -rf "$staging" && mkdir -p "$staging"
  local p pkgs=()
  for p in "$@"; do pkgs+=("$module/plugins/$p@$version"); done
  echo "build-cni-plugins: building ${#pkgs[@]} plugins of $module@$version into ${dir#"$root"/}" >&2
  # CGO off: the executor image and the test node take static binaries. One `go install` per set shares the
  # module download and the build cache; GOFLAGS is cleared so that the repo's -mod settings do not apply here.
  local ldflags="-s -w -X $module/pkg/utils/buildversion.BuildVersion=$version"
  if [ -n "${GOARCH:-}" ]; then
    # go install refuses GOBIN when cross-compiling; it writes into GOPATH/bin/linux_ARCH instead (or GOPATH/bin
    # for the host's own architecture). A throw-away GOPATH with the shared module cache keeps the same build.
    local modcache
    modcache=$(go env GOMODCACHE)
    (cd "$staging" && GOFLAGS= CGO_ENABLED=0 GOOS=linux GOBIN= GOMODCACHE="$modcache" GOPATH="$staging/.gopath" go install -ldflags "$ldflags" "${pkgs[@]}")
    local out="$staging/.gopath/bin/linux_$GOARCH"
    [ -d "$out" ] || out="$staging/.gopath/bin"
    mv "$out"/* "$staging"/
    chmod -R u+w "$staging/.gopath" && rm -rf "$staging/.gopath"
  else
    (cd "$staging" && GOFLAGS= CGO_ENABLED=0 GOBIN="$staging" go install -ldflags "$ldflags" "${pkgs[@]}")
  fi
  echo "$version" >"$staging/.version"
  rm -rf "$dir" && mv "$staging" "$dir"
}

write_manifest() { # dir -> SHA256SUMS over every plugin, sorted, in sha256sum's own format
  local dir=$1
  (cd "$dir" && find . -maxdepth 1 -type f -perm -u+x ! -name '.*' -printf '%f\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS.new && mv SHA256SUMS.new SHA256SUMS)
}

install_debian() {
  local packages=(containernetworking-plugins containerd runc iptables) missing=() p
  for p in "${packages[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "build-cni-plugins: missing packages (${missing[*]}); run this script as root" >&2
    exit 1
  fi
  echo "build-cni-plugins: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # apt has been seen to fail once on a temp file that vanished under it; repairing and retrying once fixes it.
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get --fix-broken install -y -q >/dev/null || true
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(old bundle)
for t in "${targets[@]}"; do
  case $t in
  old) build_set "$root/bin/cni-old" "$OLD_CNI_PLUGINS_VERSION" "${old_plugins[@]}" ;;
  bundle)
    build_set "$root/bin/cni-bundle" "$CNI_PLUGINS_VERSION" "${bundle_plugins[@]}"
    # The manifest is rewritten only when missing or stale, so a cached bundle is left byte-for-byte alone.
    if [ ! -f "$root/bin/cni-bundle/SHA256SUMS" ] || ! (cd "$root/bin/cni-bundle" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
      write_manifest "$root/bin/cni-bundle"
    fi
    ;;
  bundle-amd64 | bundle-arm64)
    arch=${t#bundle-}
    dir="$root/bin/cni-bundle-linux-$arch"
    GOARCH=$arch build_set "$dir" "$CNI_PLUGINS_VERSION" "${bundle_plugins[@]}"
    if [ ! -f "$dir/SHA256SUMS" ] || ! (cd "$dir" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
      write_manifest "$dir"
    fi
    ;;
  debian) install_debian ;;
  *) echo "build-cni-plugins: unknown set $t (want old, bundle, bundle-amd64, bundle-arm64 or debian)" >&2; exit 2 ;;
  esac
done
