package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/labtest"
	"github.com/cnimedic/cnimedic/test/testresolve"
)

func TestMain(m *testing.M) {
	if faultChild() {
		return
	}
	labtest.Main(m)
}

// memUnits is an in-memory stand-in for systemd, for the tests of the executor's own logic (ordering, journal,
// rollback, resume at every crash point). The same behaviour is proven against a real systemd in
// systemd_test.go.
type memUnits struct {
	mu        sync.Mutex
	active    map[string]bool
	ops       []string
	failStart map[string]int
}

func newMemUnits(names ...string) *memUnits {
	u := &memUnits{active: map[string]bool{}, failStart: map[string]int{}}
	for _, n := range names {
		u.active[n] = true
	}
	return u
}

func state(unit string, active bool) units.State {
	if active {
		return units.State{Unit: unit, LoadState: "loaded", ActiveState: units.Active, SubState: "running"}
	}
	return units.State{Unit: unit, LoadState: "loaded", ActiveState: units.Inactive, SubState: "dead"}
}

func (m *memUnits) Stop(_ context.Context, u string) (units.Transition, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := units.Transition{Unit: u, Op: "stop", Before: state(u, m.active[u])}
	if m.active[u] {
		m.active[u] = false
		m.ops = append(m.ops, "stop "+u)
		t.Job = "done"
	}
	t.After = state(u, false)
	return t, nil
}

func (m *memUnits) Start(_ context.Context, u string) (units.Transition, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := units.Transition{Unit: u, Op: "start", Before: state(u, m.active[u]), After: state(u, m.active[u])}
	if m.active[u] {
		return t, nil
	}
	m.ops = append(m.ops, "start "+u)
	if m.failStart[u] > 0 {
		m.failStart[u]--
		t.Job = "failed"
		return t, fmt.Errorf("start %s: job failed", u)
	}
	m.active[u] = true
	t.Job, t.After = "done", state(u, true)
	return t, nil
}

func (m *memUnits) allActive(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for u, a := range m.active {
		if !a {
			t.Errorf("%s is left stopped", u)
		}
	}
}

func (m *memUnits) takeOps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ops := m.ops
	m.ops = nil
	return ops
}

const (
	kubelet    = "kubelet.service"
	containerd = "containerd.service"
	confList   = "/etc/cni/net.d/10-lab.conflist"
	binDir     = "/opt/cni/bin"
)

var (
	origConf = []byte("{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"lab\",\n  \"plugins\": [{\"type\": \"bridge\"}]\n}\n")
	wantConf = []byte("{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"lab\",\n  \"plugins\": [{\"type\": \"bridge\"}]\n}\n")
	// Plugin "binaries": not text, so the result summarizes them instead of diffing.
	bridgeBin    = []byte("\x7fELF bridge v1.9.1\x00\x01")
	hostLocalBin = []byte("\x7fELF host-local v1.9.1\x00\x02")
)

// fixture is a node's files under a root, plus a bundle of plugins outside it.
type fixture struct {
	root   host.Root
	bundle string
	units  *memUnits
}

// newFixture makes a node whose conflist says 1.0.0 and whose bin dir does not exist yet (so the repair creates
// it, and a rollback must remove it again).
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{root: host.Root(t.TempDir()), bundle: t.TempDir(), units: newMemUnits(kubelet, containerd)}
	must(t, os.MkdirAll(f.root.Path("/etc/cni/net.d"), 0o755))
	must(t, os.MkdirAll(f.root.Path("/opt"), 0o755))
	// The journal lives in /var/lib/cnimedic, which snapshots leave out.
	must(t, os.MkdirAll(f.root.Path("/var/lib"), 0o755))
	must(t, os.WriteFile(f.root.Path(confList), origConf, 0o644))
	must(t, os.WriteFile(filepath.Join(f.bundle, "bridge"), bridgeBin, 0o755))
	must(t, os.WriteFile(filepath.Join(f.bundle, "host-local"), hostLocalBin, 0o755))
	return f
}

func (f *fixture) executor(u Units, verifyWant string) *Executor {
	return &Executor{
		Env: step.Env{
			Root:      f.root,
			ConfDir:   "/etc/cni/net.d",
			BinDirs:   []string{binDir},
			BundleDir: f.bundle,
		},
		Units:     u,
		Resolvers: testresolve.Resolvers(),
		Verifier:  testresolve.VerifyVersion(confList, verifyWant, "bridge", "host-local"),
	}
}

// repairPlan is the runbook order: stop kubelet, stop the runtime, repair, start the runtime, start kubelet, verify.
func repairPlan() v1alpha1.Plan {
	return v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
		{Type: v1alpha1.StepStopUnit, Unit: kubelet},
		{Type: v1alpha1.StepStopUnit, Unit: containerd},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-lab.conflist", CNIVersion: "0.4.0"},
		{Type: v1alpha1.StepInstallReferencePlugins, Plugins: []string{"bridge", "host-local"}},
		{Type: v1alpha1.StepStartUnit, Unit: containerd},
		{Type: v1alpha1.StepStartUnit, Unit: kubelet},
		{Type: v1alpha1.StepVerifyNode},
	}}
}

var runbookOps = []string{"stop " + kubelet, "stop " + containerd, "start " + containerd, "start " + kubelet}

// entry is one file system object as a snapshot records it.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	data     string
}

// snapshot records every file and directory under the root except the remediator's own state, byte for byte.
func snapshot(t *testing.T, root host.Root) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(string(root), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		hp := root.HostPath(p)
		if strings.HasPrefix(hp, "/var/lib/cnimedic") {
			return fs.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.data = string(b)
		}
		out[hp] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]entry) string {
	var diffs []string
	for p, ea := range a {
		eb, ok := b[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing now: "+p)
		case ea != eb:
			diffs = append(diffs, fmt.Sprintf("changed: %s (%v %d:%d %d bytes -> %v %d:%d %d bytes)", p, ea.mode, ea.uid, ea.gid, len(ea.data), eb.mode, eb.uid, eb.gid, len(eb.data)))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, "new: "+p)
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// assertRepaired checks the node's files are exactly as the plan wants them.
func assertRepaired(t *testing.T, root host.Root) {
	t.Helper()
	if got, _ := os.ReadFile(root.Path(confList)); !bytes.Equal(got, wantConf) {
		t.Errorf("conflist:\n%s\nwant:\n%s", got, wantConf)
	}
	for name, want := range map[string][]byte{"bridge": bridgeBin, "host-local": hostLocalBin} {
		p := root.Path(filepath.Join(binDir, name))
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q %v", name, got, err)
			continue
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o755 {
			t.Errorf("%s mode %v", name, fi.Mode())
		}
	}
}

func outcomes(res v1alpha1.ExecutorResult) []string {
	var out []string
	for _, s := range res.Steps {
		out = append(out, s.Outcome)
	}
	return out
}

func TestRepairRunsInRunbookOrderAndIsRecorded(t *testing.T) {
	f := newFixture(t)
	ex := f.executor(f.units, "0.4.0")
	res := ex.Run(context.Background(), "rem-ok", repairPlan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("outcome %s: %s\n%+v", res.Outcome, res.Message, res.Steps)
	}
	if got := strings.Join(outcomes(res), ","); got != "Done,Done,Done,Done,Done,Done,Done" {
		t.Fatalf("step outcomes %s", got)
	}
	if ops := f.units.takeOps(); !slices.Equal(ops, runbookOps) {
		t.Fatalf("unit operations %v, want %v", ops, runbookOps)
	}
	f.units.allActive(t)
	assertRepaired(t, f.root)

	// Every change is listed, with a backup that holds the old content byte for byte, and a diff for text.
	if len(res.Changes) != 3 {
		t.Fatalf("changes %+v", res.Changes)
	}
	byPath := map[string]v1alpha1.FileChange{}
	for _, c := range res.Changes {
		byPath[c.Path] = c
	}
	c := byPath[confList]
	if !strings.Contains(c.Diff, "-  \"cniVersion\": \"1.0.0\",") || !strings.Contains(c.Diff, "+  \"cniVersion\": \"0.4.0\",") {
		t.Errorf("conflist diff:\n%s", c.Diff)
	}
	if c.Backup == "" {
		t.Fatal("the conflist change names no backup")
	}
	if got, err := os.ReadFile(f.root.Path(c.Backup)); err != nil || !bytes.Equal(got, origConf) {
		t.Fatalf("backup %s: %q %v", c.Backup, got, err)
	}
	if b := byPath[binDir+"/bridge"]; b.Backup != "" || !strings.HasPrefix(b.Diff, "created:") {
		t.Errorf("new plugin change %+v", b)
	}
	if fi, err := os.Stat(f.root.Path(binDir)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("created bin dir: %v %v", fi, err)
	}

	// The same id again: the stored result, nothing touched.
	again := ex.Run(context.Background(), "rem-ok", repairPlan())
	if again.Outcome != res.Outcome || again.Message != res.Message || len(again.Steps) != len(res.Steps) {
		t.Fatalf("repeat gave %+v", again)
	}
	if ops := f.units.takeOps(); len(ops) != 0 {
		t.Fatalf("a repeat touched units: %v", ops)
	}
	// A different plan under the same id is refused, without touching anything.
	other := repairPlan()
	other.Steps[2].CNIVersion = "0.3.1"
	if r := ex.Run(context.Background(), "rem-ok", other); r.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("finished id with another plan: %s %s", r.Outcome, r.Message)
	}
}

func TestFailedVerificationRollsBackEverything(t *testing.T) {
	f := newFixture(t)
	// An existing plugin of a different content, to be replaced and restored, with an unusual owner and mode.
	must(t, os.MkdirAll(f.root.Path(binDir), 0o750))
	must(t, os.WriteFile(f.root.Path(binDir+"/bridge"), []byte("\x7fELF old bridge\x00"), 0o700))
	must(t, os.Chown(f.root.Path(binDir+"/bridge"), 12, 34))
	before := snapshot(t, f.root)

	res := f.executor(f.units, "9.9.9").Run(context.Background(), "rem-verify", repairPlan())
	if res.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if got := strings.Join(outcomes(res), ","); got != "RolledBack,RolledBack,RolledBack,RolledBack,RolledBack,RolledBack,Failed" {
		t.Fatalf("step outcomes %s", got)
	}
	if !strings.Contains(res.Message, "step 7 (VerifyNode) failed") {
		t.Errorf("message %q", res.Message)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("the node is not as before:\n%s", d)
	}
	if len(res.Changes) != 0 {
		t.Errorf("changes reported after a full rollback: %+v", res.Changes)
	}
	// The rollback quiesces like the plan did, restores, and starts in the runbook order again.
	want := append(append([]string{}, runbookOps...), runbookOps...)
	if ops := f.units.takeOps(); !slices.Equal(ops, want) {
		t.Fatalf("unit operations %v, want %v", ops, want)
	}
	f.units.allActive(t)
}

func TestCreatedDirectoriesAreRemovedOnRollback(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.root)
	res := f.executor(f.units, "9.9.9").Run(context.Background(), "rem-dirs", repairPlan())
	if res.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("the node is not as before:\n%s", d)
	}
}

func TestNothingToChangeTouchesNoUnit(t *testing.T) {
	f := newFixture(t)
	must(t, os.WriteFile(f.root.Path(confList), wantConf, 0o644))
	must(t, os.MkdirAll(f.root.Path(binDir), 0o755))
	must(t, os.WriteFile(f.root.Path(binDir+"/bridge"), bridgeBin, 0o755))
	must(t, os.WriteFile(f.root.Path(binDir+"/host-local"), hostLocalBin, 0o755))
	res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-nochange", repairPlan())
	if res.Outcome != v1alpha1.OutcomeNoChange {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if got := strings.Join(outcomes(res), ","); got != "Skipped,Skipped,Skipped,Skipped,Skipped,Skipped,Done" {
		t.Fatalf("step outcomes %s", got)
	}
	if ops := f.units.takeOps(); len(ops) != 0 {
		t.Fatalf("units touched: %v", ops)
	}
}

func TestUnresolvableFirstRepairStopsNothing(t *testing.T) {
	f := newFixture(t)
	must(t, os.WriteFile(f.root.Path(confList), []byte("{not json"), 0o644))
	before := snapshot(t, f.root)
	res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-unparseable", repairPlan())
	if res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "does not parse") {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if ops := f.units.takeOps(); len(ops) != 0 {
		t.Fatalf("units touched: %v", ops)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("the node changed:\n%s", d)
	}
}

func TestRuntimeThatWillNotStartIsRolledBack(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.root)
	f.units.failStart[containerd] = 1 // the new config "breaks" containerd; the old one starts
	res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-start", repairPlan())
	if res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "step 5 (StartUnit) failed") {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("the node is not as before:\n%s", d)
	}
	f.units.allActive(t)
}

func TestUnitThatNeverStartsFailsLoudly(t *testing.T) {
	f := newFixture(t)
	f.units.failStart[kubelet] = 100
	res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-dead-kubelet", repairPlan())
	if res.Outcome != v1alpha1.OutcomeFailed {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	if !strings.Contains(res.Message, "could not start kubelet.service") || !strings.Contains(res.Message, "kubelet.service is not running") {
		t.Fatalf("message does not say kubelet is down: %s", res.Message)
	}
}

func TestMissingBackupIsReported(t *testing.T) {
	f := newFixture(t)
	ex := f.executor(f.units, "9.9.9")
	ex.Hook = func(p string) {
		if p == "step-3/"+PointAfterBackup {
			// Someone removes the backup between the backup and the write.
			d := journal.Dir(f.root, "", "rem-lost")
			ents, _ := os.ReadDir(filepath.Join(d, journal.BackupDir))
			for _, e := range ents {
				must(t, os.Remove(filepath.Join(d, journal.BackupDir, e.Name())))
			}
		}
	}
	res := ex.Run(context.Background(), "rem-lost", repairPlan())
	if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "backup of "+confList) {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	f.units.allActive(t)
}

// crashAt runs the executor in a goroutine that dies (runtime.Goexit) at the n-th time the hook sees point: the
// journal, the files and the units stay as they were at that instant, as after a SIGKILL. (The real SIGKILL, with
// a real systemd, is in systemd_test.go.)
func crashAt(ex *Executor, id string, plan v1alpha1.Plan, point string, n int) (crashed bool, res v1alpha1.ExecutorResult) {
	done := make(chan struct{})
	seen := 0
	ex.Hook = func(p string) {
		if p == point {
			seen++
			if seen == n {
				crashed = true
				runtime.Goexit()
			}
		}
	}
	go func() {
		defer close(done)
		res = ex.Run(context.Background(), id, plan)
	}()
	<-done
	ex.Hook = nil
	return crashed, res
}

// points lists the hook points of a complete run, with repeats numbered.
type point struct {
	name string
	n    int
}

func recordPoints(t *testing.T, verifyWant string) []point {
	f := newFixture(t)
	ex := f.executor(f.units, verifyWant)
	var pts []point
	count := map[string]int{}
	ex.Hook = func(p string) {
		count[p]++
		pts = append(pts, point{p, count[p]})
	}
	ex.Run(context.Background(), "rem-points", repairPlan())
	return pts
}

// TestCrashAtEveryPointThenRerun kills the run at every point where a crash matters, then runs the same
// remediation id again: with Resume the node must end fully repaired, with RollBack exactly as before, and both
// units running either way. A verification that fails makes the same test cover crashes during the rollback.
func TestCrashAtEveryPointThenRerun(t *testing.T) {
	for _, verifyWant := range []string{"0.4.0", "9.9.9"} {
		pts := recordPoints(t, verifyWant)
		if len(pts) < 15 {
			t.Fatalf("only %d points recorded", len(pts))
		}
		for _, mode := range []Interrupted{Resume, RollBack} {
			for _, p := range pts {
				name := fmt.Sprintf("verify=%s/%s/%s#%d", verifyWant, mode, p.name, p.n)
				t.Run(name, func(t *testing.T) {
					f := newFixture(t)
					before := snapshot(t, f.root)
					ex := f.executor(f.units, verifyWant)
					ex.OnInterrupted = mode
					if crashed, _ := crashAt(ex, "rem-crash", repairPlan(), p.name, p.n); !crashed {
						t.Fatalf("never reached %s#%d", p.name, p.n)
					}
					res := ex.Run(context.Background(), "rem-crash", repairPlan())
					f.units.allActive(t)
					after := snapshot(t, f.root)
					switch res.Outcome {
					case v1alpha1.OutcomeSucceeded:
						if verifyWant != "0.4.0" {
							t.Fatalf("succeeded with a failing verification: %s", res.Message)
						}
						assertRepaired(t, f.root)
					case v1alpha1.OutcomeRolledBack:
						if d := diffSnapshots(before, after); d != "" {
							t.Fatalf("rolled back but the node differs:\n%s\n%s", d, res.Message)
						}
					default:
						t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
					}
					if mode == Resume && verifyWant == "0.4.0" && res.Outcome != v1alpha1.OutcomeSucceeded {
						t.Fatalf("resume did not finish the repair: %s %s", res.Outcome, res.Message)
					}
				})
			}
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

var _ = errors.New

// TestUndoAfterSuccess is the manager's rollback after its own verification failed: the finished repair is undone
// byte for byte, in the runbook's unit order, once; asking again changes nothing.
func TestUndoAfterSuccess(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.root)
	ex := f.executor(f.units, "0.4.0")
	if res := ex.Run(context.Background(), "rem-undo", repairPlan()); res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("run: %s %s", res.Outcome, res.Message)
	}
	f.units.takeOps()
	res := ex.Undo(context.Background(), "rem-undo", "the canary pod did not start")
	if res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "the canary pod did not start") {
		t.Fatalf("undo: %s %s", res.Outcome, res.Message)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("not undone:\n%s", d)
	}
	if ops := f.units.takeOps(); !slices.Equal(ops, runbookOps) {
		t.Fatalf("unit operations %v", ops)
	}
	again := ex.Undo(context.Background(), "rem-undo", "again")
	if again.Outcome != res.Outcome || again.Message != res.Message || len(f.units.takeOps()) != 0 {
		t.Fatalf("second undo: %+v", again)
	}
	// The remediation's own result now says it was rolled back.
	if r := ex.Run(context.Background(), "rem-undo", repairPlan()); r.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("result after undo: %s", r.Outcome)
	}
	if r := ex.Undo(context.Background(), "rem-never-ran", ""); r.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(r.Message, "never ran") {
		t.Fatalf("undo of an unknown id: %+v", r)
	}
}

// TestUndoInterruptedIsCompletedByRecover: the undo dies between two restores; the recovery that systemd runs
// next completes it.
func TestUndoInterruptedIsCompletedByRecover(t *testing.T) {
	for n := 1; n <= 3; n++ {
		f := newFixture(t)
		before := snapshot(t, f.root)
		ex := f.executor(f.units, "0.4.0")
		if res := ex.Run(context.Background(), "rem-undo-crash", repairPlan()); res.Outcome != v1alpha1.OutcomeSucceeded {
			t.Fatalf("run: %s %s", res.Outcome, res.Message)
		}
		done := make(chan struct{})
		seen := 0
		ex.Hook = func(p string) {
			if p == PointAfterRestore {
				if seen++; seen == n {
					runtime.Goexit()
				}
			}
		}
		go func() { defer close(done); ex.Undo(context.Background(), "rem-undo-crash", "canary failed") }()
		<-done
		ex.Hook = nil
		res := ex.Recover(context.Background(), "rem-undo-crash", "SERVICE_RESULT=signal")
		if res.Outcome != v1alpha1.OutcomeRolledBack {
			t.Fatalf("recover after undo died at restore %d: %s %s", n, res.Outcome, res.Message)
		}
		if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
			t.Fatalf("restore %d: not undone:\n%s", n, d)
		}
		f.units.allActive(t)
		if u := ex.Undo(context.Background(), "rem-undo-crash", ""); u.Outcome != v1alpha1.OutcomeRolledBack {
			t.Fatalf("the undo's result was not stored: %+v", u)
		}
	}
}

// TestOneRemediationAtATimePerNode: while another remediation holds the node, a run touches nothing (not even
// starting a unit), and says who holds it; a finished one still reports its result.
func TestOneRemediationAtATimePerNode(t *testing.T) {
	f := newFixture(t)
	ex := f.executor(f.units, "0.4.0")
	if res := ex.Run(context.Background(), "rem-first", repairPlan()); res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("first: %s %s", res.Outcome, res.Message)
	}
	f.units.takeOps()
	other, err := journal.LockNode(context.Background(), f.root, "", "rem-other", false)
	must(t, err)
	f.units.active[kubelet] = false // held stopped by rem-other
	before := snapshot(t, f.root)
	res := ex.Run(context.Background(), "rem-second", repairPlan())
	if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "rem-other is working on this node") {
		t.Fatalf("second while locked: %s %s", res.Outcome, res.Message)
	}
	if ops := f.units.takeOps(); len(ops) != 0 {
		t.Fatalf("units touched while another remediation held the node: %v", ops)
	}
	if d := diffSnapshots(before, snapshot(t, f.root)); d != "" {
		t.Fatalf("files touched:\n%s", d)
	}
	if r := ex.Run(context.Background(), "rem-first", repairPlan()); r.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("a finished remediation's result while locked: %s %s", r.Outcome, r.Message)
	}
	must(t, other.Unlock())
	f.units.active[kubelet] = true
	if r := ex.Run(context.Background(), "rem-second", repairPlan()); r.Outcome != v1alpha1.OutcomeNoChange {
		t.Fatalf("second after the lock: %s %s", r.Outcome, r.Message)
	}
}

// TestRefreshEnvReachesResolversAndVerifier: the dirs a repair moves (containerd's conf_dir) are read afresh for
// every step and for the verification.
func TestRefreshEnvReachesResolversAndVerifier(t *testing.T) {
	f := newFixture(t)
	ex := f.executor(f.units, "0.4.0")
	ex.Env.ConfDir = "/etc/cni/before-the-repair" // does not exist: a resolver using it fails
	refreshed := 0
	ex.RefreshEnv = func(env step.Env) step.Env {
		refreshed++
		env.ConfDir = "/etc/cni/net.d"
		return env
	}
	res := ex.Run(context.Background(), "rem-refresh", repairPlan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("%s: %s", res.Outcome, res.Message)
	}
	// Preflight (2 repairs), the two repairs, the verification.
	if refreshed != 5 {
		t.Fatalf("refreshed %d times, want 5", refreshed)
	}
	assertRepaired(t, f.root)
}
