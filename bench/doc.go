// Package bench holds cnimedic's benchmarks against a real kube-apiserver and etcd (issue 8): detection latency
// under event noise, the manager's footprint at cluster scale, and fleet repair under maxConcurrent. They run with
// `make bench` (hack/bench.sh), which also runs the matcher's micro-benchmarks and writes bin/bench/report.txt.
//
// Everything here carries the build tag bench, so `go test ./...` stays fast; run one benchmark alone with, e.g.,
//
//	go test -tags bench -count=1 -timeout 2h -v -run TestDetectionLatency ./bench
//
// Figures are never asserted as timings: the machines are shared and noisy. Each benchmark measures a baseline in
// the same run and writes its figures, their targets and the ratio to the baseline to bin/bench/results/*.json, from
// which ./bench/report writes the report. What is asserted is correctness (never more than maxConcurrent nodes in
// flight, every broken node detected).
package bench
