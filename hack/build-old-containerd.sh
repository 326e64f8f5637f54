#!/usr/bin/env bash
# Builds containerd OLD_CONTAINERD_VERSION (v1.6.1, hack/versions.env) from its Go module into bin/containerd-old/,
# for the lab's cni-version-missing fault: containerd 1.6.0-1.6.3 carry libcni v1.0.1, which fails pod teardown
# under a conflist without cniVersion with the seed's `failed to destroy network for sandbox "...": invalid
# version "": the version is empty` (Debian's 1.6.20 does not). Measured in ../shared/notes/real-cluster-here.md.
#
# containerd's go.mod replaces three modules; a wrapper module repeats those replaces and requires containerd, so
# `go build` can build its command. Idempotent: a .version stamp skips the build when the binary is current.
#
# Usage: hack/build-old-containerd.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
out="$root/bin/containerd-old"
mod="$root/bin/src/containerd-$OLD_CONTAINERD_VERSION"

if [ -x "$out/containerd" ] && [ "$(cat "$out/.version" 2>/dev/null)" = "$OLD_CONTAINERD_VERSION" ]; then
  exit 0
fi
if [ ! -f "$mod/go.sum" ]; then
  rm -rf "$mod" && mkdir -p "$mod"
  cat >"$mod/go.mod" <<MOD
module cnimedic.local/containerd-build

go 1.17

require github.com/containerd/containerd $OLD_CONTAINERD_VERSION

replace (
	github.com/gogo/googleapis => github.com/gogo/googleapis v1.3.2
	github.com/urfave/cli => github.com/urfave/cli v1.22.1
	google.golang.org/genproto => google.golang.org/genproto v0.0.0-20200224152610-e50cd9704f63
)
MOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/containerd/containerd/cmd/containerd"
GO
  (cd "$mod" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true)
fi
echo "build-old-containerd: building containerd $OLD_CONTAINERD_VERSION into ${out#"$root"/}" >&2
mkdir -p "$out.partial"
(cd "$mod" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -tags "no_btrfs no_devmapper no_zfs no_aufs tools" -ldflags "-s -w -X github.com/containerd/containerd/version.Version=$OLD_CONTAINERD_VERSION" -o "$out.partial/containerd" github.com/containerd/containerd/cmd/containerd)
echo "$OLD_CONTAINERD_VERSION" >"$out.partial/.version"
rm -rf "$out" && mv "$out.partial" "$out"
