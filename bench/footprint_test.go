//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestFootprint measures the real manager binary watching clusters of growing size (issue 8, item 3): its resident
// memory and Go heap, its CPU while nothing is wrong, the API writes it makes while nothing is wrong (from the API
// server's audit log), and that it holds no cache of every pod (its pod lists and watches, from the same log).
// The baseline is the same manager on an empty cluster, measured first in the same run.
//
// BENCH_FOOTPRINT_NODES (default 1000,2500,5000), BENCH_PODS_PER_NODE (30), BENCH_FOOTPRINT_WINDOW (60s),
// BENCH_NOISE_RATE (100 events/s).
func TestFootprint(t *testing.T) {
	sizes := intList(t, "BENCH_FOOTPRINT_NODES", "1000,2500,5000")
	perNode := envInt(t, "BENCH_PODS_PER_NODE", 30)
	window := envDuration(t, "BENCH_FOOTPRINT_WINDOW", 60*time.Second)
	noiseRate := float64(envInt(t, "BENCH_NOISE_RATE", 100))
	sec := newSection(t, "3-footprint", "Footprint at scale (real cmd/manager binary, envtest API server)")
	ctx := context.Background()
	memLimit := controlPlaneMemoryLimit()
	cp, err := StartControlPlane(ControlPlaneOptions{Name: "footprint", Audit: true, QuotaBytes: 16 << 30, MemoryLimit: memLimit})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	sec.Notef("control plane: kube-apiserver and etcd (envtest, built from their modules) with GOMEMLIMIT=%s, etcd --quota-backend-bytes=16GiB, "+
		"%.1f GiB of memory available on the machine at the start", memLimit, MemAvailable()/(1<<30))
	if err := cp.CreateNamespaces(ctx); err != nil {
		t.Fatal(err)
	}
	// One policy covering every node, with its defaults (manual approval): the everyday configuration.
	if err := cp.Client.Create(ctx, &v1alpha1.RemediationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "everything"}}); err != nil {
		t.Fatal(err)
	}
	sec.Notef("set-up: %d pods per node in %d namespaces (an init container and two containers each, Running status, ~%s of JSON "+
		"before the managed fields the API server adds); nodes with %d images, 4 conditions, capacity, addresses and system info (~%s); "+
		"one RemediationPolicy covering every node (its defaults: manual approval)",
		perNode, PodNamespaces, jsonSize(NewPod("ns", "pod-name-xxxxx", "node-00000", 1)), ImagesPerNode, jsonSize(NewNode("node-00000", 1, nil, time.Now())))
	if PodsVia() == "etcd" {
		sec.Notef("nodes are created through the API; pods are written straight into the API server's storage (etcd), in its own encoding and keys, " +
			"with the managed fields of a pod created through the API (create by kube-controller-manager, status by kubelet): two API requests per pod " +
			"cost ~5 ms of API server CPU each here, most of an hour for 150k pods on this shared machine. The API server's watch of etcd picks them up " +
			"as it does its own writes; the manager sees the same objects either way (BENCH_PODS_VIA=api creates them through the API)")
	}
	sec.Notef("steady noise while measuring: %.0f Warning events/s from the nodes' kubelets (1%% with a watched reason, FailedCreatePodSandBox/FailedKillPod, "+
		"and a message that is no CNI failure; the rest never reach the manager), and each node's status heartbeat every 5 minutes (nodes/300 patches/s)", noiseRate)
	sec.Notef("manager: the cmd/manager binary as deployed (leader election on), as user %s bound to config/rbac; measured over %s after a 30 s settle; "+
		"CPU = utime+stime from /proc over the window; RSS = VmRSS sampled every second (max) and VmHWM (peak since start); heap = go_memstats_heap_inuse_bytes; "+
		"writes and pod reads from the API server's audit log (every request of the manager's user)", ManagerUser, window)

	type result struct {
		nodes                 int
		rss, peak, heap, cpu  float64
		anon, file            float64
		writes, leaseWrites   int
		writeKinds            string
		podReads              map[string]int
		apiserverRSS, etcdRSS float64
	}
	measure := func(nodes int) (result, error) {
		r := result{nodes: nodes}
		noiseCtx, stopNoise := context.WithCancel(ctx)
		var wg sync.WaitGroup
		if nodes > 0 {
			names := make([]string, nodes)
			for i := range names {
				names[i] = NodeName("node", i)
			}
			noise := &Noise{Kube: cp.Kube, Rate: noiseRate, Nodes: names, Watched: 0.01}
			wg.Add(2)
			go func() { defer wg.Done(); _ = noise.Run(noiseCtx) }()
			go func() { defer wg.Done(); heartbeats(noiseCtx, cp, names, 5*time.Minute) }()
		}
		defer func() { stopNoise(); wg.Wait() }()
		if err := cp.WaitSettled(ctx, 10*time.Minute); err != nil {
			return r, err
		}
		m, err := cp.StartManager(ctx, fmt.Sprintf("%d", nodes))
		if err != nil {
			return r, err
		}
		defer m.Stop()
		// Start-up done: the policy controller has counted every node (its one write after a change), then 30 s more.
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Second) {
			p := &v1alpha1.RemediationPolicy{}
			if err := cp.Client.Get(ctx, types.NamespacedName{Name: "everything"}, p); err == nil && int(p.Status.CoveredNodes) == nodes {
				break
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("the policy's status did not count %d nodes within 5 minutes", nodes)
			}
		}
		time.Sleep(30 * time.Second)
		from := time.Now()
		cpu0, err := CPUTime(m.PID)
		if err != nil {
			return r, err
		}
		for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(time.Second) {
			mem, err := ReadMemory(m.PID)
			if err != nil {
				return r, err
			}
			if mem.RSS > r.rss {
				r.rss, r.anon, r.file = mem.RSS, mem.Anon, mem.File
			}
		}
		cpu1, err := CPUTime(m.PID)
		if err != nil {
			return r, err
		}
		to := time.Now()
		r.cpu = (cpu1 - cpu0).Seconds() / to.Sub(from).Seconds() * 100
		mem, _ := ReadMemory(m.PID)
		r.peak = mem.Peak
		if ms, err := m.Metrics(); err == nil {
			r.heap = ms.Sum("go_memstats_heap_inuse_bytes")
		}
		api, etcd := cp.PIDs()
		if mm, err := ReadMemory(api); err == nil {
			r.apiserverRSS = mm.RSS
		}
		if mm, err := ReadMemory(etcd); err == nil {
			r.etcdRSS = mm.RSS
		}
		// The audit log is written in batches: give it a moment.
		time.Sleep(2 * time.Second)
		evs, err := ReadAudit(cp.AuditLog, from, to)
		if err != nil {
			return r, err
		}
		kinds := map[string]int{}
		for _, e := range evs {
			if !e.IsWrite() {
				continue
			}
			if e.Resource() == "coordination.k8s.io/leases" {
				r.leaseWrites++
				continue
			}
			r.writes++
			kinds[e.Verb+" "+e.Resource()]++
		}
		r.writeKinds = FormatCounts(kinds)
		life, err := ReadAudit(cp.AuditLog, m.Started, to)
		if err != nil {
			return r, err
		}
		r.podReads = PodReads(life)
		perMin := func(n int) float64 { return float64(n) / to.Sub(from).Minutes() }
		t.Logf("%d nodes: RSS %.1f MiB (peak %.1f), heap %.1f MiB, CPU %.2f%%, writes %.1f/min (+ lease %.1f/min), apiserver %.0f MiB, etcd %.0f MiB",
			nodes, MiB(r.rss), MiB(r.peak), MiB(r.heap), r.cpu, perMin(r.writes), perMin(r.leaseWrites), MiB(r.apiserverRSS), MiB(r.etcdRSS))
		return r, nil
	}

	base, err := measure(0)
	if err != nil {
		t.Fatal(err)
	}
	winMin := window.Minutes()
	have := 0
	var held []int
	// The control plane's memory per pod (kube-apiserver's watch cache and etcd), for the guard below; 60 KB until
	// measured at the first size.
	perPod := 60e3
	api0, etcd0 := cp.PIDs()
	cpMemory := func() float64 {
		a, _ := ReadMemory(api0)
		e, _ := ReadMemory(etcd0)
		return a.RSS + e.RSS
	}
	cpBase := cpMemory()
	const margin = 3 << 30 // left to the other work on this machine
	for _, size := range sizes {
		need := float64((size-have)*perNode) * perPod
		if avail := MemAvailable(); avail-need < margin {
			sec.Notef("the machine cannot hold %d nodes / %d pods: growing would need ~%.1f GiB more for kube-apiserver and etcd "+
				"(%.0f KB per pod measured so far) and %.1f GiB is available, keeping %.0f GiB for the rest of the machine",
				size, size*perNode, need/(1<<30), perPod/1e3, avail/(1<<30), float64(margin>>30))
			t.Logf("not growing to %d nodes: needs %.1f GiB, %.1f GiB available", size, need/(1<<30), avail/(1<<30))
			break
		}
		gctx, stopGrowth := context.WithCancel(ctx)
		var short atomic.Bool
		go func() {
			for gctx.Err() == nil {
				if MemAvailable() < 1.5*(1<<30) {
					short.Store(true)
					stopGrowth()
					return
				}
				time.Sleep(time.Second)
			}
		}()
		start := time.Now()
		err := cp.CreateNodes(gctx, "node", have, size, nil)
		nodeTime := time.Since(start)
		if err == nil {
			err = cp.CreatePods(gctx, "node", have, size, perNode)
		}
		stopGrowth()
		if short.Load() {
			sec.Notef("the machine could not hold %d nodes / %d pods: available memory fell under 1.5 GiB while growing (kube-apiserver %.1f GiB + etcd)",
				size, size*perNode, cpMemory()/(1<<30))
			t.Logf("stopped growing to %d nodes: memory", size)
			break
		}
		if err != nil {
			sec.Notef("could not grow the cluster to %d nodes / %d pods: %v", size, size*perNode, err)
			t.Errorf("growing to %d nodes: %v", size, err)
			break
		}
		grow := time.Since(start)
		sec.Notef("grew to %d nodes and %d pods in %s (nodes %s)", size, size*perNode, grow.Round(time.Second), nodeTime.Round(time.Second))
		have = size
		r, err := measure(size)
		if err != nil {
			sec.Notef("measuring at %d nodes failed: %v", size, err)
			t.Errorf("measuring at %d nodes: %v", size, err)
			break
		}
		if grew := cpMemory() - cpBase; grew > 0 {
			perPod = max(perPod, grew/float64(size*perNode)*1.2)
		}
		held = append(held, size)
		label := fmt.Sprintf("%d nodes / %dk pods", size, size*perNode/1000)
		sec.Add(Below("manager RSS (max over window), "+label, MiB(r.rss), "MiB", 100).Against("empty cluster", MiB(base.rss)).
			With(fmt.Sprintf("of which anonymous %.1f MiB, mapped binary %.1f MiB (empty cluster: %.1f + %.1f)", MiB(r.anon), MiB(r.file), MiB(base.anon), MiB(base.file))))
		sec.Add(Below("manager peak RSS since start (VmHWM), "+label, MiB(r.peak), "MiB", 100).Against("empty cluster", MiB(base.peak)))
		sec.Add(Below("manager Go heap in use, "+label, MiB(r.heap), "MiB", 100).Against("empty cluster", MiB(base.heap)))
		sec.Add(Below("manager CPU while healthy, "+label, r.cpu, "% of a core", 5).Against("empty cluster", base.cpu))
		sec.Add(AtMost("manager API writes while healthy, "+label, float64(r.writes)/winMin, "per minute", 0).
			With("excluding its leader-election lease; writes seen: " + r.writeKinds))
		sec.Add(Info("manager leader-election lease renewals, "+label, float64(r.leaseWrites)/winMin, "per minute").
			With("controller-runtime renews the lease every 2 s (RetryPeriod) while leading; with --leader-elect=false there are none"))
		noPodCache := true
		for shape := range r.podReads {
			if strings.Contains(shape, "NO SELECTOR") {
				noPodCache = false
			}
		}
		f := Info("cluster-wide pod list/watch without a selector (a cache of every pod), "+label, 0, "requests")
		if !noPodCache {
			f.Value = 1
		}
		pass := noPodCache
		f.Target, f.Pass = "none", &pass
		sec.Add(f.With("the manager's pod reads since it started: " + FormatCounts(r.podReads)))
		sec.Add(Info("kube-apiserver RSS, "+label, MiB(r.apiserverRSS), "MiB"))
		sec.Add(Info("etcd RSS, "+label, MiB(r.etcdRSS), "MiB"))
	}
	sec.Notef("baseline (empty cluster, same manager, same run): RSS %.1f MiB, peak %.1f MiB, heap %.1f MiB, CPU %.2f%% of a core, %d writes (+%d lease renewals) in the window",
		MiB(base.rss), MiB(base.peak), MiB(base.heap), base.cpu, base.writes, base.leaseWrites)
	if len(held) < len(sizes) {
		sec.Notef("the machine held sizes %v of %v", held, sizes)
	} else {
		sec.Notef("the machine held every size: %v", held)
	}
	sec.Notef("load average at the end: %s", LoadAverage())
}

// heartbeats patches each node's status once per period, spread evenly, as kubelet reports an unchanged status.
func heartbeats(ctx context.Context, cp *ControlPlane, nodes []string, period time.Duration) {
	if len(nodes) == 0 {
		return
	}
	every := period / time.Duration(len(nodes))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		node := nodes[i%len(nodes)]
		go func() {
			now := metav1.Now().UTC().Format(time.RFC3339)
			var conds []string
			for _, c := range []string{"MemoryPressure", "DiskPressure", "PIDPressure", "Ready"} {
				conds = append(conds, fmt.Sprintf(`{"type":%q,"lastHeartbeatTime":%q}`, c, now))
			}
			patch := `{"status":{"conditions":[` + strings.Join(conds, ",") + `]}}`
			_, _ = cp.Kube.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
		}()
	}
}

func jsonSize(v any) string { return fmt.Sprintf("%.1f KB", float64(len(mustJSON(v)))/1000) }

func envInt(t *testing.T, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		return n
	}
	return def
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		return d
	}
	return def
}

func intList(t *testing.T, name, def string) []int {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var out []int
	for _, s := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			t.Fatalf("%s=%q: %v", name, v, err)
		}
		out = append(out, n)
	}
	return out
}

// controlPlaneMemoryLimit is GOMEMLIMIT for kube-apiserver and etcd: $BENCH_CP_MEMLIMIT, else half the memory
// available now (the machine is shared).
func controlPlaneMemoryLimit() string {
	if v := os.Getenv("BENCH_CP_MEMLIMIT"); v != "" {
		return v
	}
	return fmt.Sprintf("%dMiB", int64(MemAvailable()/2)>>20)
}
