package hostrun

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/remediator/plugins"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/labtest"
	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/sysnode"
	"github.com/cnimedic/cnimedic/test/testresolve"
)

// These tests play the executor pod on the host and a node booted with systemd-nspawn: the Launcher stages this
// test binary into the node and starts it there as the transient run unit, where TestMain turns it into the
// remediator's host-run and host-recover (with the small resolvers of testresolve). The node's files are seen
// through its root directory, its systemd through its system bus.

// controlFile, in the node's state dir, tells the test binary running inside the node how to misbehave.
const controlFile = "test-control.json"

type control struct {
	VerifyWant string `json:"verifyWant"`
	// KillAt makes host-run (and host-rollback) SIGKILL itself at the KillN-th time it reaches this executor hook point.
	KillAt string `json:"killAt,omitempty"`
	KillN  int    `json:"killN,omitempty"`
	// RecoverDies makes host-recover exit at once without doing anything (its binary "broken"): "all", or
	// "stoppost" for the run's ExecStopPost only (the guard's recovery then works).
	RecoverDies string `json:"recoverDies,omitempty"`
	// SlowRecover makes host-recover wait 2 s before it starts, so that a test can act meanwhile.
	SlowRecover bool `json:"slowRecover,omitempty"`
	// SlowAt makes host-run pause 3 s at this hook point, so that a test can act while the units are down.
	SlowAt string `json:"slowAt,omitempty"`
}

const (
	confList = "/etc/cni/net.d/10-lab.conflist"
	binDir   = "/opt/cni/bin"
	kubelet  = sysnode.Kubelet
	runtime_ = sysnode.Containerd
)

var (
	origConf     = []byte("{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"lab\",\n  \"plugins\": [{\"type\": \"bridge\"}]\n}\n")
	wantConf     = []byte("{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"lab\",\n  \"plugins\": [{\"type\": \"bridge\"}]\n}\n")
	bridgeBin    = []byte("\x7fELF bridge v1.9.1\x00\x01")
	hostLocalBin = []byte("\x7fELF host-local v1.9.1\x00\x02")
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == CmdHostRun || os.Args[1] == CmdHostRollback || os.Args[1] == CmdHostRecover) {
		os.Exit(inNode(os.Args[1], os.Args[2:]))
	}
	if spec := os.Getenv(followEnv); spec != "" {
		os.Exit(follower(spec))
	}
	labtest.Main(m)
}

// inNode is this binary as the remediator inside the node.
func inNode(cmd string, args []string) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	stateDir := fs.String("state-dir", DefaultStateDir, "")
	id := fs.String("remediation-id", "", "")
	reason := fs.String("reason", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var c control
	if raw, err := os.ReadFile(filepath.Join(*stateDir, controlFile)); err == nil {
		_ = json.Unmarshal(raw, &c)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	deps := Deps{
		Resolvers: testresolve.Resolvers(),
		Verifier:  testresolve.VerifyVersion(confList, c.VerifyWant, "bridge", "host-local"),
	}
	var res v1alpha1.ExecutorResult
	switch cmd {
	case CmdHostRun, CmdHostRollback:
		seen := 0
		deps.Hook = func(p string) {
			fmt.Println("point", p)
			if p == c.SlowAt {
				time.Sleep(3 * time.Second)
			}
			if p == c.KillAt {
				if seen++; seen == c.KillN {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
					select {}
				}
			}
		}
		if cmd == CmdHostRun {
			res = HostRun(ctx, "/", *stateDir, *id, deps)
		} else {
			res = HostRollback(ctx, "/", *stateDir, *id, deps)
		}
	case CmdHostRecover:
		if c.RecoverDies == "all" || (c.RecoverDies == "stoppost" && *reason == "") {
			fmt.Println("recover: dying as told")
			return 9
		}
		if c.SlowRecover {
			time.Sleep(2 * time.Second)
		}
		res = HostRecover(ctx, "/", *stateDir, *id, *reason, deps)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	return 0
}

// testNode is a booted node with a bundle to stage and a connection to its systemd.
type testNode struct {
	node   *nspawn.Node
	bus    string
	root   host.Root
	m      *units.Manager
	bundle string
}

func boot(t *testing.T, name string) *testNode {
	t.Helper()
	node := sysnode.Boot(t, name, nspawn.File{Path: confList, Data: origConf})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := units.Connect(ctx, node.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	n := &testNode{node: node, bus: node.BusAddress(), root: host.Root(node.RootDir()), m: m, bundle: t.TempDir()}
	// A node whose CNI bin dir is missing: the repair creates it, a rollback removes it.
	must(t, os.RemoveAll(n.root.Path(binDir)))
	var sums bytes.Buffer
	for name, data := range map[string][]byte{"bridge": bridgeBin, "host-local": hostLocalBin} {
		must(t, os.WriteFile(filepath.Join(n.bundle, name), data, 0o755))
		s := sha256.Sum256(data)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(s[:]), name)
	}
	must(t, os.WriteFile(filepath.Join(n.bundle, plugins.ManifestName), sums.Bytes(), 0o644))
	return n
}

func (n *testNode) control(t *testing.T, c control) {
	t.Helper()
	must(t, os.MkdirAll(n.root.Path(DefaultStateDir), 0o755))
	raw, _ := json.Marshal(c)
	must(t, os.WriteFile(n.root.Path(filepath.Join(DefaultStateDir, controlFile)), raw, 0o644))
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (n *testNode) launcher(t *testing.T) *Launcher {
	return &Launcher{
		Root:       n.root,
		Bus:        n.bus,
		Executable: os.Args[0],
		BundleDir:  n.bundle,
		Config: Config{
			Settings:      node.Settings{ConfDir: "/etc/cni/net.d", BinDirs: []string{binDir}},
			CriticalUnits: []string{runtime_, kubelet},
			Settle:        300 * time.Millisecond,
		},
		Poll: 50 * time.Millisecond,
		Log:  logWriter{t},
	}
}

func plan() v1alpha1.Plan {
	return v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
		{Type: v1alpha1.StepStopUnit, Unit: kubelet},
		{Type: v1alpha1.StepStopUnit, Unit: runtime_},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-lab.conflist", CNIVersion: "0.4.0"},
		{Type: v1alpha1.StepInstallReferencePlugins, Plugins: []string{"bridge", "host-local"}},
		{Type: v1alpha1.StepStartUnit, Unit: runtime_},
		{Type: v1alpha1.StepStartUnit, Unit: kubelet},
		{Type: v1alpha1.StepVerifyNode},
	}}
}

func (n *testNode) states(t *testing.T) map[string]units.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]units.State{}
	for _, u := range []string{runtime_, kubelet} {
		s, err := n.m.State(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		out[u] = s
	}
	return out
}

func (n *testNode) assertUp(t *testing.T) map[string]units.State {
	t.Helper()
	st := n.states(t)
	for u, s := range st {
		if s.ActiveState != units.Active {
			t.Errorf("%s is %s", u, s)
		}
	}
	return st
}

// assertRepaired: the conflist and the plugins are as the plan wants.
func (n *testNode) assertRepaired(t *testing.T) {
	t.Helper()
	if got, _ := os.ReadFile(n.root.Path(confList)); !bytes.Equal(got, wantConf) {
		t.Errorf("conflist:\n%s", got)
	}
	for name, want := range map[string][]byte{"bridge": bridgeBin, "host-local": hostLocalBin} {
		if got, err := os.ReadFile(n.root.Path(filepath.Join(binDir, name))); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %q %v", name, got, err)
		}
	}
}

// assertAsBefore: the conflist byte for byte, and no bin dir (the repair had created it).
func (n *testNode) assertAsBefore(t *testing.T) {
	t.Helper()
	if got, _ := os.ReadFile(n.root.Path(confList)); !bytes.Equal(got, origConf) {
		t.Errorf("conflist not restored:\n%s", got)
	}
	if fi, err := os.Lstat(n.root.Path(binDir)); err == nil {
		t.Errorf("%s left behind: %v", binDir, fi.Mode())
	}
}

// assertNoTransientUnits: the run unit was collected and the guard timer disarmed.
func (n *testNode) assertNoTransientUnits(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deadline := time.Now().Add(5 * time.Second)
	for _, u := range []string{RunUnit(id), RollbackUnit(id), GuardTimer(id)} {
		for {
			s, err := n.m.State(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			if s.LoadState == "not-found" || s.Stopped() {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s is still %s", u, s)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestApplyRunsOnTheHostAndReportsOnce(t *testing.T) {
	n := boot(t, "hostrun-apply")
	n.control(t, control{VerifyWant: "0.4.0"})
	before := n.assertUp(t)

	start := time.Now()
	res := n.launcher(t).Apply(context.Background(), "hr-apply", plan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("outcome %s: %s\n%+v", res.Outcome, res.Message, res.Steps)
	}
	t.Logf("apply took %s", time.Since(start).Round(time.Millisecond))
	n.assertRepaired(t)
	after := n.assertUp(t)
	for u := range before {
		if before[u].InvocationID == after[u].InvocationID {
			t.Errorf("%s was not restarted", u)
		}
	}
	n.assertNoTransientUnits(t, "hr-apply")
	// Inside, the run reached systemd on its private socket: it does not depend on the bus daemon.
	logs, err := n.node.Run(context.Background(), "journalctl", "--no-pager", "-o", "cat", "-u", RunUnit("hr-apply"))
	if err != nil || !strings.Contains(string(logs), "systemd on "+privateBus) {
		t.Errorf("the run's log does not show the private socket: %v\n%s", err, logs)
	}

	// The binary on the node is the one that was staged, checked by its sum.
	exe, _ := os.ReadFile(os.Args[0])
	sum := sha256.Sum256(exe)
	staged := n.root.Path(filepath.Join(DefaultStateDir, "bin", "remediator-"+hex.EncodeToString(sum[:])[:16]))
	if got, err := os.ReadFile(staged); err != nil || !bytes.Equal(got, exe) {
		t.Fatalf("staged binary %s: %v", staged, err)
	}
	// The run used the staged bundle, not the pod's.
	cfg, err := ReadConfig(n.root, DefaultStateDir, "hr-apply")
	if err != nil || !strings.HasPrefix(cfg.BundleDir, DefaultStateDir+"/bundle/") {
		t.Fatalf("config %+v %v", cfg, err)
	}

	// A second executor pod with the same id: the stored result, nothing restarted.
	again := n.launcher(t).Apply(context.Background(), "hr-apply", plan())
	if again.Outcome != res.Outcome || len(again.Steps) != len(res.Steps) {
		t.Fatalf("second apply: %+v", again)
	}
	for u, s := range n.states(t) {
		if s.InvocationID != after[u].InvocationID {
			t.Errorf("the second apply restarted %s", u)
		}
	}
	// A wrong expected sum refuses to stage anything.
	l := n.launcher(t)
	l.ExpectSHA256 = strings.Repeat("0", 64)
	if r := l.Apply(context.Background(), "hr-badsum", plan()); r.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(r.Message, "expected") {
		t.Fatalf("bad sum: %+v", r)
	}
}

func TestFailedVerificationOnHostRollsBack(t *testing.T) {
	n := boot(t, "hostrun-verify")
	n.control(t, control{VerifyWant: "9.9.9"})
	res := n.launcher(t).Apply(context.Background(), "hr-verify", plan())
	if res.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	n.assertAsBefore(t)
	n.assertUp(t)
	n.assertNoTransientUnits(t, "hr-verify")
}

// The manager's verification failed after a successful repair: the rollback runs on the host like the repair
// (a transient unit), undoes it byte for byte, restarts the units, and is reported once. Killed half-way, its
// ExecStopPost recovery completes it.
func TestRollbackAfterApply(t *testing.T) {
	n := boot(t, "hostrun-rollback")
	for _, c := range []struct {
		id     string
		killAt string
	}{{"hr-rb", ""}, {"hr-rb-killed", "after-restore"}} {
		t.Run(c.id, func(t *testing.T) {
			n.control(t, control{VerifyWant: "0.4.0"})
			must(t, host.WriteFileAtomic(n.root.Path(confList), origConf, 0o644))
			must(t, os.RemoveAll(n.root.Path(binDir)))
			if res := n.launcher(t).Apply(context.Background(), c.id, plan()); res.Outcome != v1alpha1.OutcomeSucceeded {
				t.Fatalf("apply: %s: %s", res.Outcome, res.Message)
			}
			repaired := n.assertUp(t)
			n.control(t, control{VerifyWant: "0.4.0", KillAt: c.killAt, KillN: 1})
			res := n.launcher(t).Rollback(context.Background(), c.id)
			if res.Outcome != v1alpha1.OutcomeRolledBack {
				t.Fatalf("rollback: %s: %s", res.Outcome, res.Message)
			}
			t.Logf("rollback: %s", res.Message)
			n.assertAsBefore(t)
			for u, s := range n.assertUp(t) {
				if s.InvocationID == repaired[u].InvocationID {
					t.Errorf("%s was not restarted around the restore", u)
				}
			}
			n.assertNoTransientUnits(t, c.id)
			if again := n.launcher(t).Rollback(context.Background(), c.id); again.Outcome != res.Outcome || again.Message != res.Message {
				t.Fatalf("second rollback: %+v", again)
			}
		})
	}
	if res := n.launcher(t).Rollback(context.Background(), "hr-never"); res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "never ran") {
		t.Fatalf("rollback of an unknown id: %+v", res)
	}
}

// The executor pod's process (the follower) dies in the middle of the sequence, with kubelet and containerd
// stopped: the run goes on by itself on the host, and the next pod with the same id gets its result.
const followEnv = "CNIMEDIC_HOSTRUN_TEST_FOLLOW"

func TestPodDeathMidSequence(t *testing.T) {
	n := boot(t, "hostrun-poddeath")
	// The run pauses with both units stopped, long enough for the follower to be killed meanwhile.
	n.control(t, control{VerifyWant: "0.4.0", SlowAt: "step-2/after-unit-job"})

	// The follower is a child process running Launcher.Apply, as the executor pod does; it is killed once the
	// run has stopped containerd.
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), followEnv+"="+string(n.root)+"|"+n.node.BusAddress()+"|"+n.bundle)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for n.states(t)[runtime_].ActiveState != units.Inactive {
		select {
		case <-exited:
			t.Fatalf("the follower ended before the run stopped containerd:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("the run never stopped containerd; follower:\n%s", out.String())
		}
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	<-exited
	t.Logf("follower output before it was killed:\n%s", out.String())

	res := n.launcher(t).Apply(context.Background(), "hr-poddeath", plan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	n.assertRepaired(t)
	n.assertUp(t)
	n.assertNoTransientUnits(t, "hr-poddeath")
}

// follower is this binary as the killed executor pod of TestPodDeathMidSequence.
func follower(spec string) int {
	parts := strings.SplitN(spec, "|", 3)
	tn := &testNode{root: host.Root(parts[0]), bus: parts[1], bundle: parts[2]}
	l := tn.launcher(nil)
	l.Log = os.Stderr
	res := l.Apply(context.Background(), "hr-poddeath", plan())
	fmt.Fprintf(os.Stderr, "the follower should have been killed, but got %s: %s\n", res.Outcome, res.Message)
	return 1
}

// The host-side run itself is SIGKILLed at points where the node is most exposed: systemd runs its ExecStopPost
// recovery, which rolls back; the follower reports RolledBack, the files are as before and both units run.
func TestHostRunSIGKILLedIsRecovered(t *testing.T) {
	n := boot(t, "hostrun-sigkill")
	for i, p := range []string{"step-1/after-unit-job", "step-2/after-unit-job", "step-3/after-backup", "step-4/after-write", "step-5/after-unit-job"} {
		t.Run(p, func(t *testing.T) {
			n.control(t, control{VerifyWant: "0.4.0", KillAt: p, KillN: 1})
			id := fmt.Sprintf("hr-kill-%d", i)
			res := n.launcher(t).Apply(context.Background(), id, plan())
			if res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "died") {
				t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
			}
			if !strings.Contains(res.Message, "SERVICE_RESULT=signal") || !strings.Contains(res.Message, "EXIT_STATUS=KILL") {
				t.Errorf("the recovery does not say how the run died: %s", res.Message)
			}
			n.assertAsBefore(t)
			n.assertUp(t)
			n.assertNoTransientUnits(t, id)
		})
	}
}

// The run dies and so does its recovery (a binary that cannot run): the guard timer fires and systemd itself
// starts containerd and kubelet (Wants=), so the node is not left without them; the next apply with the same id
// then finishes the job from the journal.
func TestGuardTimerStartsUnitsWhenAllElseDies(t *testing.T) {
	n := boot(t, "hostrun-guard")
	n.control(t, control{VerifyWant: "0.4.0", KillAt: "step-3/after-write", KillN: 1, RecoverDies: "all"})
	l := n.launcher(t)
	// The guard fires 14 s after the launch; its recovery may take StopWindow.
	l.RunMax, l.StopWindow, l.GuardSlack = 8*time.Second, 5*time.Second, time.Second
	start := time.Now()
	res := l.Apply(context.Background(), "hr-guard", plan())
	if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "without a result") {
		t.Fatalf("outcome %s: %s", res.Outcome, res.Message)
	}
	st := n.states(t)
	if st[kubelet].ActiveState == units.Active || st[runtime_].ActiveState == units.Active {
		t.Fatalf("the units are up before the guard fired: %+v", st)
	}
	waitFor(t, 30*time.Second, "the guard to start both units", func() bool {
		st := n.states(t)
		return st[kubelet].ActiveState == units.Active && st[runtime_].ActiveState == units.Active
	})
	t.Logf("units up again %s after the apply began (guard due after %s)", time.Since(start).Round(time.Millisecond),
		l.RunMax+l.StopWindow+l.GuardSlack)

	// The binary works again: the same id resumes from the journal and completes the repair. (The guard's own
	// recovery, told to die, must be over first, or it would read the new control and roll back.)
	waitFor(t, 30*time.Second, "the guard service to end", func() bool {
		s, err := n.m.State(context.Background(), GuardService("hr-guard"))
		return err == nil && (s.LoadState == "not-found" || s.Stopped())
	})
	n.control(t, control{VerifyWant: "0.4.0"})
	res = n.launcher(t).Apply(context.Background(), "hr-guard", plan())
	if res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("second apply: %s: %s", res.Outcome, res.Message)
	}
	n.assertRepaired(t)
	n.assertUp(t)
	n.assertNoTransientUnits(t, "hr-guard")

	// Again, with a guard whose recovery works but takes a while, and a new executor pod that comes while it
	// runs: the pod waits for the guard instead of stopping it half-way, and reports the rollback it did.
	n.control(t, control{VerifyWant: "0.4.0", KillAt: "step-3/after-write", KillN: 1, RecoverDies: "stoppost", SlowRecover: true})
	must(t, host.WriteFileAtomic(n.root.Path(confList), origConf, 0o644))
	must(t, os.RemoveAll(n.root.Path(binDir)))
	if res := l.Apply(context.Background(), "hr-guard2", plan()); res.Outcome != v1alpha1.OutcomeFailed {
		t.Fatalf("first apply: %s: %s", res.Outcome, res.Message)
	}
	waitFor(t, 30*time.Second, "the guard to fire", func() bool {
		s, err := n.m.State(context.Background(), GuardService("hr-guard2"))
		return err == nil && busy(s)
	})
	res = n.launcher(t).Apply(context.Background(), "hr-guard2", plan())
	if res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "the guard timer fired") {
		t.Fatalf("apply during the guard's recovery: %s: %s", res.Outcome, res.Message)
	}
	n.assertAsBefore(t)
	n.assertUp(t)
	n.assertNoTransientUnits(t, "hr-guard2")
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
