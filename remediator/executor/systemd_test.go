package executor

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/sysnode"
)

// These tests run the executor against a real systemd: a systemd-nspawn node with Debian's containerd.service and
// a stand-in kubelet.service, its files seen from here through its root directory (as --host-root sees the
// host's) and its units driven over its system bus.

// recUnits records the unit operations that changed something, in the order the executor asked for them, on
// top of a real units.Manager.
type recUnits struct {
	m   *units.Manager
	mu  sync.Mutex
	ops []string
}

func (r *recUnits) Stop(ctx context.Context, u string) (units.Transition, error) {
	tr, err := r.m.Stop(ctx, u)
	r.record(tr, err)
	return tr, err
}

func (r *recUnits) Start(ctx context.Context, u string) (units.Transition, error) {
	tr, err := r.m.Start(ctx, u)
	r.record(tr, err)
	return tr, err
}

func (r *recUnits) record(tr units.Transition, err error) {
	if err == nil && tr.Changed() {
		r.mu.Lock()
		r.ops = append(r.ops, tr.Op+" "+tr.Unit)
		r.mu.Unlock()
	}
}

func (r *recUnits) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := r.ops
	r.ops = nil
	return ops
}

// realNode is a booted node plus a connection to its systemd.
type realNode struct {
	node   *nspawn.Node
	root   host.Root
	m      *units.Manager
	bundle string
}

func bootReal(t *testing.T, prefix string) *realNode {
	t.Helper()
	node := sysnode.Boot(t, prefix, nspawn.File{Path: confList, Data: origConf})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := units.Connect(ctx, node.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	// Short enough for many runs, long enough to see a unit that dies at once.
	m.Settle = 300 * time.Millisecond
	// The node's /opt/cni/bin is a link to Debian's plugins; these tests repair a node whose bin dir is missing
	// (as the fixtures of executor_test.go do), so that the repair creates it and a rollback removes it.
	must(t, os.RemoveAll(host.Root(node.RootDir()).Path(binDir)))
	bundle := t.TempDir()
	must(t, os.WriteFile(filepath.Join(bundle, "bridge"), bridgeBin, 0o755))
	must(t, os.WriteFile(filepath.Join(bundle, "host-local"), hostLocalBin, 0o755))
	return &realNode{node: node, root: host.Root(node.RootDir()), m: m, bundle: bundle}
}

// cniState is the part of the node a repair touches, byte for byte (the rest of a running node's root changes by
// itself: logs, containerd's state).
func (n *realNode) cniState(t *testing.T) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	for _, dir := range []string{"/etc/cni", "/opt/cni"} {
		for p, e := range snapshot(t, host.Root(n.root.Path(dir))) {
			out[filepath.Join(dir, p)] = e
		}
	}
	return out
}

// reset puts the node back to its broken state between runs: the original conflist, no bin dir, no journal, both
// units running.
func (n *realNode) reset(t *testing.T) {
	t.Helper()
	must(t, host.WriteFileAtomic(n.root.Path(confList), origConf, 0o644))
	must(t, os.RemoveAll(n.root.Path(binDir)))
	must(t, os.RemoveAll(n.root.Path("/var/lib/cnimedic")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range []string{containerd, kubelet} {
		if _, err := n.m.Start(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
}

func (n *realNode) assertUp(t *testing.T) map[string]units.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]units.State{}
	for _, u := range []string{containerd, kubelet} {
		s, err := n.m.State(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if s.ActiveState != units.Active {
			t.Errorf("%s is %s", u, s)
		}
		out[u] = s
	}
	return out
}

func (n *realNode) spec(id, verifyWant string, mode Interrupted) childSpec {
	return childSpec{
		Root: string(n.root), Bus: n.node.BusAddress(), Bundle: n.bundle, ID: id, Plan: repairPlan(),
		VerifyWant: verifyWant, Mode: mode, Units: []string{containerd, kubelet},
	}
}

func TestRealSystemdRepairAndRollback(t *testing.T) {
	n := bootReal(t, "executor-real")
	rec := &recUnits{m: n.m}
	before := n.cniState(t)
	pids := n.assertUp(t)

	ex := childExecutor(n.spec("real-ok", "0.4.0", Resume), nil)
	ex.Units = rec
	res := ex.Run(context.Background(), "real-ok", repairPlan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("outcome %s: %s\n%+v", res.Outcome, res.Message, res.Steps)
	}
	if ops := rec.take(); strings.Join(ops, ",") != strings.Join(runbookOps, ",") {
		t.Fatalf("unit operations %v, want %v", ops, runbookOps)
	}
	assertRepaired(t, n.root)
	after := n.assertUp(t)
	for u := range pids {
		if after[u].InvocationID == pids[u].InvocationID {
			t.Errorf("%s was not restarted for real", u)
		}
	}
	for _, s := range res.Steps {
		t.Logf("%s %s: %s", s.Type, s.Outcome, s.Message)
	}

	// A failing verification on the real node: every file back byte for byte, both units running again.
	n.reset(t)
	rec.take()
	res = childExecutor(n.spec("real-verify", "9.9.9", Resume), nil).withUnits(rec).Run(context.Background(), "real-verify", repairPlan())
	if res.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if d := diffSnapshots(before, n.cniState(t)); d != "" {
		t.Fatalf("the node is not as before:\n%s", d)
	}
	want := append(append([]string{}, runbookOps...), runbookOps...)
	if ops := rec.take(); strings.Join(ops, ",") != strings.Join(want, ",") {
		t.Fatalf("unit operations %v, want %v", ops, want)
	}
	n.assertUp(t)
}

func (e *Executor) withUnits(u Units) *Executor {
	e.Units = u
	return e
}

// TestRealSystemdSIGKILLAtEveryPoint kills the executor process with SIGKILL at every point where a crash matters
// (between backup and write, after stopping the units, during the rollback...) and runs the same remediation id
// again: the node must end fully repaired (resume) or exactly as before (rollback), with both units running.
func TestRealSystemdSIGKILLAtEveryPoint(t *testing.T) {
	n := bootReal(t, "executor-sigkill")
	before := n.cniState(t)

	// List the points from a clean run of a child.
	points := func(verifyWant string) []point {
		n.reset(t)
		cmd, err := childCommand(context.Background(), n.spec("points", verifyWant, Resume))
		must(t, err)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("child: %v\n%s\n%s", err, out, stderr.String())
		}
		var pts []point
		count := map[string]int{}
		sc := bufio.NewScanner(&stderr)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "point "); ok {
				count[p]++
				pts = append(pts, point{p, count[p]})
			}
		}
		return pts
	}

	cases := 0
	for _, verifyWant := range []string{"0.4.0", "9.9.9"} {
		pts := points(verifyWant)
		if len(pts) < 15 {
			t.Fatalf("only %d points", len(pts))
		}
		modes := []Interrupted{Resume, RollBack}
		if verifyWant == "9.9.9" {
			// Up to the verification this run is the one above; what is new is its rollback, and a run
			// interrupted during a rollback finishes the rollback whatever the mode: one mode, the rollback's
			// points (CPU is scarce here; the in-memory test covers every combination).
			modes = modes[:1]
			for i, p := range pts {
				if p.name == PointRollbackBegun {
					pts = pts[i:]
					break
				}
			}
		}
		for _, mode := range modes {
			for _, p := range pts {
				name := fmt.Sprintf("verify=%s/%s/%s#%d", verifyWant, mode, p.name, p.n)
				t.Run(name, func(t *testing.T) {
					cases++
					n.reset(t)
					spec := n.spec("sigkill", verifyWant, mode)
					spec.KillAt, spec.KillN = p.name, p.n
					cmd, err := childCommand(context.Background(), spec)
					must(t, err)
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					err = cmd.Run()
					ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
					if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
						t.Fatalf("the child was not killed at %s: %v\n%s", p.name, err, stderr.String())
					}
					// The second run, in this process, with the same id.
					res := childExecutor(spec, n.m).Run(context.Background(), "sigkill", repairPlan())
					n.assertUp(t)
					switch res.Outcome {
					case v1alpha1.OutcomeSucceeded:
						if verifyWant != "0.4.0" {
							t.Fatalf("succeeded with a failing verification: %s", res.Message)
						}
						assertRepaired(t, n.root)
					case v1alpha1.OutcomeRolledBack:
						if d := diffSnapshots(before, n.cniState(t)); d != "" {
							t.Fatalf("rolled back but the node differs:\n%s\n%s", d, res.Message)
						}
					default:
						t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
					}
					if mode == Resume && verifyWant == "0.4.0" && res.Outcome != v1alpha1.OutcomeSucceeded {
						t.Fatalf("resume did not finish the repair: %s", res.Message)
					}
				})
			}
		}
	}
	t.Logf("%d SIGKILL cases", cases)
}
