//go:build bench

package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Manager is the real manager binary (cmd/manager) running against the control plane as ManagerUser, with its
// deployed flags (leader election on) and its metrics served over plain HTTP on localhost for the benchmark.
type Manager struct {
	cmd     *exec.Cmd
	PID     int
	Started time.Time
	Log     string
	metrics string
	probes  string
	done    chan error
}

// ManagerBinary is $BENCH_MANAGER, else bin/bench/manager (hack/bench.sh builds it from cmd/manager).
func ManagerBinary() string {
	if b := os.Getenv("BENCH_MANAGER"); b != "" {
		return b
	}
	return filepath.Join(OutDir(), "manager")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartManager starts the manager and waits until it is ready and leads.
func (cp *ControlPlane) StartManager(ctx context.Context, name string, extraArgs ...string) (*Manager, error) {
	bin := ManagerBinary()
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no manager binary at %s: build it with `go build -o %s ./cmd/manager` (hack/bench.sh does): %v", bin, bin, err)
	}
	mport, err := freePort()
	if err != nil {
		return nil, err
	}
	pport, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &Manager{Log: filepath.Join(cp.Dir, "manager-"+name+".log"),
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), probes: fmt.Sprintf("http://127.0.0.1:%d", pport), done: make(chan error, 1)}
	logf, err := os.Create(m.Log)
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig=" + cp.ManagerKubeconfig, "--namespace=" + Namespace,
		"--leader-elect=true", "--leader-election-namespace=" + Namespace,
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", mport), "--metrics-secure=false",
		fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", pport),
		"--executor-image=cnimedic.local/executor:bench", "--canary-image=cnimedic.local/canary:bench",
	}, extraArgs...)
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	// The manager dies with the benchmark, even when the benchmark is killed.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// As deployed: no GOMEMLIMIT or GOGC (config/manager sets neither).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") && !strings.HasPrefix(kv, "GOGC=") {
			m.cmd.Env = append(m.cmd.Env, kv)
		}
	}
	m.Started = time.Now()
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	m.PID = m.cmd.Process.Pid
	go func() { m.done <- m.cmd.Wait(); logf.Close() }()
	if err := m.waitReady(ctx, cp); err != nil {
		_ = m.Stop()
		return nil, fmt.Errorf("manager %s: %w (log: %s)", name, err, m.Log)
	}
	return m, nil
}

func (m *Manager) waitReady(ctx context.Context, cp *ControlPlane) error {
	deadline := time.Now().Add(3 * time.Minute)
	hc := &http.Client{Timeout: 2 * time.Second}
	ready := false
	for time.Now().Before(deadline) {
		select {
		case err := <-m.done:
			return fmt.Errorf("exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if !ready {
			resp, err := hc.Get(m.probes + "/readyz")
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ready = resp.StatusCode == http.StatusOK
			continue
		}
		// Leading: the lease was renewed after this process started.
		lease := &coordinationv1.Lease{}
		if err := cp.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: "manager.cnimedic.io"}, lease); err == nil &&
			lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(m.Started) && lease.Spec.HolderIdentity != nil {
			return nil
		}
	}
	return fmt.Errorf("not ready and leading after 3 minutes")
}

// Stop stops the manager as Kubernetes does (SIGTERM) and waits for it.
func (m *Manager) Stop() error {
	if m.cmd == nil || m.cmd.Process == nil {
		return nil
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
	}
	m.cmd = nil
	return nil
}

// Metrics are the manager's Prometheus metrics, one sample per line: "name{labels}" -> value.
type Metrics map[string]float64

// Metrics scrapes the manager's metrics endpoint.
func (m *Manager) Metrics() (Metrics, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(m.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := Metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Sum adds the samples of a metric whose labels contain every one of the given `key="value"` pairs.
func (ms Metrics) Sum(name string, labels ...string) float64 {
	total := 0.0
	for k, v := range ms {
		base, lbl, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(lbl, l) {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// Histogram summarises a Prometheus histogram's samples whose labels contain every given pair: how many
// observations, their mean, and a quantile estimated from the buckets (the bucket's upper bound).
func (ms Metrics) Histogram(name string, q float64, labels ...string) (count, mean, quantile float64) {
	count = ms.Sum(name+"_count", labels...)
	if count == 0 {
		return 0, 0, 0
	}
	mean = ms.Sum(name+"_sum", labels...) / count
	type bucket struct{ le, n float64 }
	var buckets []bucket
	seen := map[float64]bool{}
	for k := range ms {
		base, lbl, _ := strings.Cut(k, "{")
		if base != name+"_bucket" {
			continue
		}
		i := strings.Index(lbl, `le="`)
		if i < 0 {
			continue
		}
		leStr := lbl[i+4:]
		leStr = leStr[:strings.IndexByte(leStr, '"')]
		le, err := strconv.ParseFloat(leStr, 64)
		if err != nil || seen[le] {
			continue
		}
		seen[le] = true
		buckets = append(buckets, bucket{le, ms.Sum(name+"_bucket", append(labels, `le="`+leStr+`"`)...)})
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	for _, b := range buckets {
		if b.n >= q*count {
			return count, mean, b.le
		}
	}
	return count, mean, 0
}
