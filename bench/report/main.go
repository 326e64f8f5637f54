// Command report writes `make bench`'s report: the matcher's micro-benchmarks (go test -bench output), the envtest
// benchmarks' sections (bench/results/*.json, written by ./bench), and the lab's MTTR (the e2e suite's output), each
// figure with its target, pass or miss, and its ratio to the baseline measured in the same run.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cnimedic/cnimedic/bench"
	"github.com/cnimedic/cnimedic/test/repo"
)

func main() {
	dir := flag.String("dir", filepath.Join(repo.Root(), "bin", "bench"), "the benchmarks' output directory")
	out := flag.String("out", "", "write the report here too (default DIR/report.txt)")
	lab := flag.String("lab", "", "why the lab's MTTR is missing, when it is (empty: read DIR/e2e.log)")
	flag.Parse()
	if *out == "" {
		*out = filepath.Join(*dir, "report.txt")
	}
	var secs []bench.Section
	if s, err := matcherSection(filepath.Join(*dir, "matcher.txt")); err == nil {
		secs = append(secs, s)
	} else {
		secs = append(secs, bench.Section{ID: "1-matcher", Title: "Signature matcher", Failed: true, Notes: []string{"no figures: " + err.Error()}})
	}
	rest, err := bench.ReadSections(filepath.Join(*dir, "results"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, want := range []struct{ id, title string }{
		{"2-detection", "Detection latency"}, {"3-footprint", "Footprint at scale"}, {"4-fleet", "Fleet repair"},
	} {
		found := false
		for _, s := range rest {
			found = found || s.ID == want.id
		}
		if !found {
			rest = append(rest, bench.Section{ID: want.id, Title: want.title, Failed: true, Notes: []string{"no figures: the benchmark did not run or did not finish (see bin/bench/*.log)"}})
		}
	}
	secs = append(secs, rest...)
	secs = append(secs, mttrSection(filepath.Join(*dir, "e2e.log"), *lab))
	sort.SliceStable(secs, func(i, j int) bool { return secs[i].ID < secs[j].ID })

	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	write(io.MultiWriter(os.Stdout, f), secs)
	fmt.Printf("\n(report written to %s)\n", *out)
}

func write(w io.Writer, secs []bench.Section) {
	commit, _ := exec.Command("git", "-C", repo.Root(), "rev-parse", "--short", "HEAD").Output()
	dirty, _ := exec.Command("git", "-C", repo.Root(), "status", "--porcelain", "--untracked-files=no").Output()
	state := ""
	if len(strings.TrimSpace(string(dirty))) > 0 {
		state = " (with uncommitted changes in the tree)"
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(w, "cnimedic benchmarks — %s — commit %s%s\n", time.Now().UTC().Format(time.RFC3339), strings.TrimSpace(string(commit)), state)
	fmt.Fprintf(w, "machine: %d CPUs, %s, load average %s; %s\n", runtime.NumCPU(), memTotal(), strings.Join(strings.Fields(string(load))[:3], " "), runtime.Version())
	fmt.Fprintln(w, "The machine is shared and noisy: read each figure next to its baseline, measured in the same run; the ratio is figure / baseline.")
	var misses, passes, failed []string
	for _, s := range secs {
		if s.Failed {
			failed = append(failed, s.Title)
		}
		for _, f := range s.Figures {
			if f.Pass == nil {
				continue
			}
			if *f.Pass {
				passes = append(passes, f.Name)
			} else {
				misses = append(misses, fmt.Sprintf("%s: %s %s, target %s", f.Name, num(f.Value), f.Unit, f.Target))
			}
		}
	}
	fmt.Fprintf(w, "\nSUMMARY: %d figures meet their target, %d miss", len(passes), len(misses))
	if len(failed) > 0 {
		fmt.Fprintf(w, ", %d parts did not produce all their figures (%s)", len(failed), strings.Join(failed, "; "))
	}
	fmt.Fprintln(w)
	for _, m := range misses {
		fmt.Fprintln(w, "  MISS "+m)
	}
	for _, s := range secs {
		fmt.Fprintf(w, "\n== %s ==\n", s.Title)
		if len(s.Figures) > 0 {
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "figure\tvalue\ttarget\tresult\tbaseline (same run)\tratio")
			for _, f := range s.Figures {
				result := ""
				if f.Pass != nil {
					result = map[bool]string{true: "pass", false: "MISS"}[*f.Pass]
				}
				base := ""
				if f.Baseline != "" {
					base = fmt.Sprintf("%s: %s", f.Baseline, num(f.BaselineValue))
				}
				ratio := ""
				if f.Ratio != 0 {
					ratio = fmt.Sprintf("%.2f×", f.Ratio)
				}
				fmt.Fprintf(tw, "%s\t%s %s\t%s\t%s\t%s\t%s\n", f.Name, num(f.Value), f.Unit, f.Target, result, base, ratio)
			}
			tw.Flush()
			for _, f := range s.Figures {
				if f.Note != "" {
					fmt.Fprintf(w, "  - %s: %s\n", f.Name, f.Note)
				}
			}
		}
		for _, n := range s.Notes {
			fmt.Fprintln(w, "  * "+n)
		}
		if !s.Started.IsZero() {
			fmt.Fprintf(w, "  (measured %s", s.Started.UTC().Format("2006-01-02 15:04 UTC"))
			if s.Seconds > 0 {
				fmt.Fprintf(w, ", took %s", (time.Duration(s.Seconds) * time.Second).String())
			}
			fmt.Fprintln(w, ")")
		}
	}
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 100000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func memTotal() string {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "? memory"
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	return "? memory"
}

// benchLine is one line of `go test -bench` output: name, then value/unit pairs.
var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// matcherSection reads the matcher's benchmark output (-count N) and takes each metric's median.
func matcherSection(path string) (bench.Section, error) {
	s := bench.Section{ID: "1-matcher", Title: "Signature matcher (go test -bench ./internal/signature, corpus of real messages)"}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer f.Close()
	st, _ := f.Stat()
	s.Started = st.ModTime()
	samples := map[string]map[string][]float64{}
	sc := bufio.NewScanner(f)
	cpu := ""
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "cpu: ") {
			cpu = strings.TrimPrefix(line, "cpu: ")
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fields := strings.Fields(m[2])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			if samples[m[1]] == nil {
				samples[m[1]] = map[string][]float64{}
			}
			samples[m[1]][fields[i+1]] = append(samples[m[1]][fields[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	med := func(name, unit string) (float64, bool) {
		xs := samples[name][unit]
		if len(xs) == 0 {
			return 0, false
		}
		return bench.Percentile(append([]float64(nil), xs...), 50), true
	}
	runs := 0
	for _, kind := range []struct {
		sub    string
		target float64
	}{{"nonmatching", 1_000_000}, {"matching", 200_000}} {
		name, naive := "BenchmarkMatch/"+kind.sub, "BenchmarkMatchNaive/"+kind.sub
		perCore, ok := med(name, "msgs/cpu-s")
		if !ok {
			return s, fmt.Errorf("no %s msgs/cpu-s in %s", name, path)
		}
		runs = len(samples[name]["msgs/cpu-s"])
		naivePerCore, _ := med(naive, "msgs/cpu-s")
		s.Add(bench.AtLeast(kind.sub+" messages per second per core", perCore, "msgs/cpu-s", kind.target).Against("naive loop over every expression", naivePerCore))
		wall, _ := med(name, "msgs/s")
		naiveWall, _ := med(naive, "msgs/s")
		s.Add(bench.Info(kind.sub+" messages per second (wall clock)", wall, "msgs/s").Against("naive loop", naiveWall))
		allocs, _ := med(name, "allocs/op")
		naiveAllocs, _ := med(naive, "allocs/op")
		bytes, _ := med(name, "B/op")
		f := bench.Info(kind.sub+" allocations per message", allocs, "allocs/msg").With(fmt.Sprintf("%.0f B/msg; naive loop: %.0f allocs/msg", bytes, naiveAllocs))
		if naiveAllocs > 0 {
			f = f.Against("naive loop", naiveAllocs).With(fmt.Sprintf("%.0f B/msg", bytes))
		}
		s.Add(f)
	}
	if v, ok := med("BenchmarkScan", "MB/s"); ok {
		s.Add(bench.Info("scanner on a long message with no piece", v, "MB/s"))
	}
	s.Notef("median of %d runs (-count); per core = messages / CPU seconds of the benchmark process (getrusage), the figure that holds when other work competes for the cores; wall-clock rates fall with the share of the cores the run gets", runs)
	s.Notef("baseline: the same messages through naiveMatch (normalise, then every expression in precedence order), in the same run")
	if cpu != "" {
		s.Notef("cpu: %s", cpu)
	}
	return s, nil
}

// mttrLine is one line of the e2e suite's MTTR summary: test, signature, MTTR, and what the suite adds after it, such
// as "; thresholds met -> NodeRemediation 0.9s (created by the manager's detection)" or "for both nodes, one at a time".
var (
	mttrLine      = regexp.MustCompile(`^\s+(Test\S+)\s+(\S+)\s+(?:MTTR\s+)?([\d.]+)s\b[;,]?\s*(.*)$`)
	mttrDetection = regexp.MustCompile(`thresholds met -> NodeRemediation\s+(-?[\d.]+)s`)
)

// mttrSection reads the e2e suite's MTTR summary from its log.
func mttrSection(path, unavailable string) bench.Section {
	s := bench.Section{ID: "5-mttr", Title: "MTTR on the real lab (e2e suite: injection to the workload Running again)"}
	if unavailable != "" {
		s.Notef("lab not available: %s", unavailable)
		return s
	}
	f, err := os.Open(path)
	if err != nil {
		s.Notef("lab not available: no e2e output at %s", path)
		return s
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil {
		s.Started = st.ModTime()
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	in := false
	var tail, detections []string
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "e2e: MTTR") {
			in = true
			continue
		}
		if strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "e2e: FAIL") {
			tail = append(tail, strings.TrimSpace(line))
		}
		if !in {
			continue
		}
		m := mttrLine.FindStringSubmatch(line)
		if m == nil {
			if strings.TrimSpace(line) != "" && !strings.HasPrefix(line, " ") {
				in = false
			}
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		rest := strings.TrimSpace(m[4])
		name := fmt.Sprintf("%s (%s)", m[2], m[1])
		fig := bench.AtMost(name, v, "s", 60)
		if rest != "" {
			fig = fig.With(rest)
		}
		s.Add(fig)
		if d := mttrDetection.FindStringSubmatch(rest); d != nil {
			detections = append(detections, fmt.Sprintf("%s %ss", m[1], d[1]))
		}
	}
	if len(s.Figures) == 0 {
		s.Failed = true
		s.Notef("the e2e run at %s printed no MTTR figures", path)
	}
	for _, l := range tail {
		s.Notef("e2e: %s", l)
	}
	if len(detections) > 0 {
		s.Notef("detection on the lab, from the moment the suite saw the policy's thresholds met to the NodeRemediation (the suite's own figure): %s",
			strings.Join(detections, ", "))
	}
	s.Notef("absolute figures from the lab (a real kubelet, containerd and CNI plugins on systemd-nspawn nodes); no same-run baseline: "+
		"the figure is the time a workload waits, per signature, with automatic approval; full output in %s", path)
	return s
}
