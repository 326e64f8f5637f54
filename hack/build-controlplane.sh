#!/usr/bin/env bash
# Builds the Kubernetes control plane (and node) binaries and etcd from their Go modules into bin/k8s/.
#
# No release download works on our machines, and setup-envtest cannot fetch its assets, so envtest, the lab and
# the e2e suite use binaries built here. k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the
# k8s.io staging modules with ./staging paths that are not in the module zip. We generate a small wrapper module
# that requires k8s.io/kubernetes and replaces each staging module with its published v0.Y.Z release.
# etcd's server module has relative replaces too, so it gets a wrapper module of its own.
#
# Usage: hack/build-controlplane.sh [component...]   (default: kube-apiserver etcd)
# Components: kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=versions.env
source "$root/hack/versions.env"
out="$root/bin/k8s"
src="$root/bin/src"
mkdir -p "$out" "$src"

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver etcd)

stamp_ok() { # binary version -> true when bin/k8s/<binary> was built from this version
  [ -x "$out/$1" ] && [ "$(cat "$out/.$1.version" 2>/dev/null)" = "$2" ]
}

build_kubernetes() {
  local name=$1
  stamp_ok "$name" "$KUBERNETES_VERSION" && return 0
  local mod="$src/kubernetes-$KUBERNETES_VERSION"
  if [ ! -f "$mod/go.sum" ]; then
    rm -rf "$mod" && mkdir -p "$mod"
    local gomod minor
    gomod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    minor=${KUBERNETES_VERSION#v1.}
    {
      echo "module cnimedic.local/kubernetes-build"
      echo
      grep -E '^go [0-9]' "$gomod"
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      # Every staging module the kubernetes go.mod pins at v0.0.0 is published as v0.<minor>.<patch>.
      grep -E '^\s+k8s\.io/[^ ]+ v0\.0\.0$' "$gomod" | awk -v v="v0.$minor" '{print "replace " $1 " => " $1 " " v}'
    } >"$mod/go.mod"
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    (cd "$mod" && go mod tidy -e >/dev/null 2>&1 || true; cd "$mod" && GOFLAGS=-mod=mod go mod download)
  fi
  local minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  echo "building $name $KUBERNETES_VERSION (a cold build of kube-apiserver takes about 5 minutes on 2 cores)" >&2
  (cd "$mod" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -tags tools -ldflags "$ldflags" -o "$out/$name" "k8s.io/kubernetes/cmd/$name")
  echo "$KUBERNETES_VERSION" >"$out/.$name.version"
}

build_etcd() {
  stamp_ok etcd "$ETCD_VERSION" && return 0
  local mod="$src/etcd-$ETCD_VERSION"
  if [ ! -f "$mod/go.sum" ]; then
    rm -rf "$mod" && mkdir -p "$mod"
    cat >"$mod/go.mod" <<MOD
module cnimedic.local/etcd-build

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
    cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
    (cd "$mod" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true)
  fi
  echo "building etcd $ETCD_VERSION" >&2
  (cd "$mod" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  echo "$ETCD_VERSION" >"$out/.etcd.version"
}

for c in "${components[@]}"; do
  case "$c" in
    etcd) build_etcd ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl) build_kubernetes "$c" ;;
    *) echo "unknown component $c" >&2; exit 2 ;;
  esac
done
