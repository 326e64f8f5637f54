#!/usr/bin/env bash
# Runs the manager on this machine against a local control plane (the envtest kube-apiserver and etcd): enough to
# watch policies and NodeRemediations move without nodes. The full cluster is the lab (make lab-up / make demo).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p .lab
kubeconfig=.lab/devenv.kubeconfig
rm -f "$kubeconfig"
go run ./hack/devenv --kubeconfig "$kubeconfig" &
devenv=$!
trap 'kill $devenv 2>/dev/null; wait $devenv 2>/dev/null' EXIT
for _ in $(seq 1 120); do [ -s "$kubeconfig" ] && break; sleep 0.5; done
[ -s "$kubeconfig" ] || { echo "the local control plane did not start" >&2; exit 1; }
echo "kubeconfig: $root/$kubeconfig (KUBECONFIG=$root/$kubeconfig kubectl get remediationpolicies)"
bin/manager --kubeconfig "$kubeconfig" --namespace default --leader-elect=false \
  --metrics-bind-address=0 --health-probe-bind-address=:18081 --zap-devel
