#!/usr/bin/env bash
# make bench: every benchmark of issue 8, then the report (bin/bench/report.txt, printed at the end).
#
#   1. the signature matcher against its naive baseline (go test -bench ./internal/signature)
#   2. detection latency under event noise       } envtest benchmarks (./bench, build tag bench), the real
#   3. footprint at 1,000 / 2,500 / 5,000 nodes  } cmd/manager binary against kube-apiserver and etcd from
#   4. fleet repair under maxConcurrent          } bin/k8s (make controlplane)
#   5. MTTR on the real lab (the e2e suite), when the lab can run here
#
# Knobs (environment): BENCH_ONLY="matcher detection fleet footprint lab" (a subset, in any order),
# BENCH_LAB=auto|1|0 (auto: run the e2e suite when its prerequisites are built and the lab is free; 1: build what it
# needs and run it; 0: skip), BENCH_E2E_LOG=FILE (read MTTR from an earlier e2e run instead), BENCH_COUNT (matcher
# -count, default 5), and the benchmarks' own BENCH_* variables (see bench/*_test.go).
#
# Benchmarks report, they do not judge: a missed target is in the report, not in the exit code. The exit code is
# non-zero when a benchmark could not run or a correctness assertion failed (the fleet's maxConcurrent).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=bin/bench
mkdir -p "$out/results" "$out/tmp"
# Artefacts stay under bin/bench; its go.mod keeps them out of the main module's ./... patterns.
[ -f "$out/go.mod" ] || printf 'module cnimedic.local/bench-artefacts\n' > "$out/go.mod"
export TMPDIR="$root/$out/tmp"
export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$root/bin/k8s}"
only=" ${BENCH_ONLY:-matcher detection fleet footprint lab} "
want() { [[ "$only" == *" $1 "* ]]; }
status=0
note() { printf '\n\033[1m== bench: %s\033[0m\n' "$*"; }

if want matcher; then
  note "1. matcher (go test -bench, -count ${BENCH_COUNT:-5})"
  go test -run '^$' -bench . -benchmem -count "${BENCH_COUNT:-5}" ./internal/signature 2>&1 | tee "$out/matcher.txt" || status=1
fi

envtest_bench() { # name test-regexp
  local name=$1 run=$2
  rm -f "$out/results/$name.json"
  note "$name ($run), log in $out/$name.log"
  go test -tags bench -count=1 -timeout 3h -v -run "^${run}\$" ./bench 2>&1 | tee "$out/$name.log" | grep -E '^(=== RUN|--- |\s+\S+_test\.go:|PASS|FAIL|ok )'
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "bench: $name failed (exit $rc), see $out/$name.log" >&2; status=1; }
}
if want detection || want fleet || want footprint; then
  note "building the manager (cmd/manager) into $out/manager"
  CGO_ENABLED=0 go build -o "$out/manager" ./cmd/manager || exit 1
  for b in kube-apiserver etcd; do
    [ -x "$KUBEBUILDER_ASSETS/$b" ] || { echo "bench: $b missing in $KUBEBUILDER_ASSETS: run make controlplane" >&2; exit 1; }
  done
  want detection && envtest_bench 2-detection TestDetectionLatency
  want fleet && envtest_bench 4-fleet TestFleet
  want footprint && envtest_bench 3-footprint TestFootprint
fi

lab_reason="not run (BENCH_ONLY=${BENCH_ONLY:-})"
if want lab; then
  lab_reason=""
  note "5. MTTR on the lab"
  if [ -n "${BENCH_E2E_LOG:-}" ]; then
    cp "$BENCH_E2E_LOG" "$out/e2e.log" || lab_reason="cannot read BENCH_E2E_LOG=$BENCH_E2E_LOG"
  else
    rm -f "$out/e2e.log"
    missing=()
    [ "$(id -u)" -eq 0 ] || missing+=("root")
    command -v systemd-nspawn >/dev/null || missing+=("systemd-nspawn (make node-deps)")
    for b in kubelet kube-controller-manager kube-scheduler; do [ -x "bin/k8s/$b" ] || missing+=("bin/k8s/$b (make lab-deps)"); done
    [ -e bin/node-rootfs/usr/lib/systemd/systemd ] || missing+=("bin/node-rootfs (make node-rootfs)")
    [ -d bin/images ] || missing+=("bin/images (make images)")
    case "${BENCH_LAB:-auto}" in
      0|off|no) lab_reason="skipped (BENCH_LAB=${BENCH_LAB})" ;;
      1|on|yes) missing=() ;; # make e2e builds what it needs
    esac
    if [ -z "$lab_reason" ] && [ ${#missing[@]} -gt 0 ]; then
      lab_reason="missing $(IFS=,; echo "${missing[*]}"); BENCH_LAB=1 builds them (make lab-deps) and runs the e2e suite"
    fi
    if [ -z "$lab_reason" ] && [ -e .lab/lab.lock ] && ! flock -n .lab/lab.lock true 2>/dev/null; then
      lab_reason="the lab is busy: $(tr -d '\n' < .lab/lab.lock) holds .lab/lab.lock"
    fi
    if [ -z "$lab_reason" ]; then
      echo "running the e2e suite (make e2e, ~15 min), output in $out/e2e.log"
      if ! make --no-print-directory e2e 2>&1 | tee "$out/e2e.log"; then
        echo "bench: the e2e suite failed; its MTTR figures (if any) are in the report" >&2
        status=1
      fi
    fi
  fi
  [ -n "$lab_reason" ] && echo "lab not available: $lab_reason"
fi

note "report"
go run ./bench/report -dir "$out" -lab "$lab_reason" || status=1
exit $status
