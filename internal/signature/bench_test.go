package signature

import "testing"

// The matcher benchmarks (issue 8, item 1): messages per second and allocations per message over the corpus,
// split into matching and non-matching messages, next to a baseline measured in the same run: the same messages
// through the naive loop over every expression. Compare the ratio, not the absolute figures: machines are noisy.
// msgs/s is wall-clock throughput; msgs/cpu-s divides by the CPU time the process used instead, which is the
// per-core figure and stays meaningful when other work competes for the cores.
// Run: go test ./internal/signature -run '^$' -bench . -benchmem

type benchMessage struct {
	from            evidence
	reason, message string
}

func benchCorpus(b *testing.B, matching bool) []benchMessage {
	b.Helper()
	var out []benchMessage
	for _, l := range loadCorpus(b) {
		if (l.Signature != "") != matching {
			continue
		}
		m := benchMessage{from: fromEvent, reason: l.Reason, message: l.Message}
		if l.Kind == "node-condition" {
			m.from = fromNodeCondition
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		b.Fatal("empty corpus")
	}
	return out
}

func runMatchBenchmark(b *testing.B, matching bool, match func(s *Set, m benchMessage) bool) {
	msgs := benchCorpus(b, matching)
	s := Default()
	// Each message is classified once first, so that every iteration measures the steady state.
	for _, m := range msgs {
		if match(s, m) != matching {
			b.Fatalf("corpus message classified against its label: %.80q", m.message)
		}
	}
	b.ReportAllocs()
	cpu0, cpuOK := processCPUTime()
	n := 0
	for b.Loop() {
		match(s, msgs[n%len(msgs)])
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	if cpu1, ok := processCPUTime(); cpuOK && ok && cpu1 > cpu0 {
		b.ReportMetric(float64(n)/(cpu1-cpu0).Seconds(), "msgs/cpu-s")
	}
}

func prefiltered(s *Set, m benchMessage) bool {
	_, ok := classifyAs(s, m.from, m.reason, m.message)
	return ok
}

func naive(s *Set, m benchMessage) bool {
	_, ok := naiveMatch(s, m.from, m.reason, m.message)
	return ok
}

func BenchmarkMatch(b *testing.B) {
	b.Run("nonmatching", func(b *testing.B) { runMatchBenchmark(b, false, prefiltered) })
	b.Run("matching", func(b *testing.B) { runMatchBenchmark(b, true, prefiltered) })
}

// BenchmarkMatchNaive is the baseline: normalise, then every expression in order, without the reason check's
// union or the scanner.
func BenchmarkMatchNaive(b *testing.B) {
	b.Run("nonmatching", func(b *testing.B) { runMatchBenchmark(b, false, naive) })
	b.Run("matching", func(b *testing.B) { runMatchBenchmark(b, true, naive) })
}

// BenchmarkScan isolates the scanner on a long message that contains no piece: its cost per byte bounds the
// non-matching throughput.
func BenchmarkScan(b *testing.B) {
	msg := `Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image "rancher/mirrored-pause:3.6": failed to pull image "rancher/mirrored-pause:3.6": failed to pull and unpack image "docker.io/rancher/mirrored-pause:3.6": failed to resolve reference "docker.io/rancher/mirrored-pause:3.6": failed to do request: Head "https://registry-1.docker.io/v2/rancher/mirrored-pause/manifests/3.6": dial tcp 103.252.115.53:443: connect: connection refused`
	sc := Default().scanner
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		sc.scan(msg)
	}
}
