package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/hostrun"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/nspawn"
	"github.com/cnimedic/cnimedic/test/nspawn/nspawntest"
)

// The apply tests run this test binary as the remediator: TestMain turns it into the command when its first
// argument is a subcommand, so that `apply` stages the very binary under test into the node, where the transient
// unit runs its `host-run` and `host-recover` with the real resolvers and the diagnosis-based verifier.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		os.Exit(run(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// kubeletStandIn is a long-running kubelet.service (the real kubelet needs the lab's control plane).
const kubeletStandIn = "[Unit]\nAfter=containerd.service\n[Service]\nExecStart=/bin/sleep infinity\nRestart=always\n[Install]\nWantedBy=multi-user.target\n"

// A conflist with a cniVersion Debian's plugins 1.1.1 do not support (they stop at 1.0.0): the seed's
// `incompatible CNI versions; config is "1.1.0", plugin supports [... "1.0.0"]`.
const incompatibleConflist = `{
  "cniVersion": "1.1.0",
  "name": "lab",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func labDir(t *testing.T) string {
	t.Helper()
	base := filepath.Join(repo(), ".lab", "tmp")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := os.MkdirTemp(base, "apply-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// apply runs `remediator apply` as the executor pod would, against the node's root and bus, and returns the
// full result from stdout and the termination message.
func apply(t *testing.T, node *nspawn.Node, plan v1alpha1.Plan, id string, extra ...string) (v1alpha1.ExecutorResult, []byte, error) {
	t.Helper()
	dir := labDir(t)
	planFile := filepath.Join(dir, "plan.json")
	raw, _ := json.Marshal(plan)
	if err := os.WriteFile(planFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	term := filepath.Join(dir, "termination-log")
	args := append([]string{"apply", "--plan", planFile, "--remediation-id", id, "--termination-message-path", term,
		"--host-root", node.RootDir(), "--dbus-address", node.BusAddress(), "--settle", "300ms",
		"--bundle-dir", filepath.Join(dir, "no-bundle")}, extra...)
	cmd := exec.Command(os.Args[0], args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("remediator apply stderr:\n%s", stderr.String())
	var res v1alpha1.ExecutorResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("stdout is not a result: %v\n%s", err, stdout.String())
	}
	msg, err := os.ReadFile(term)
	if err != nil {
		t.Fatalf("no termination message: %v", err)
	}
	return res, msg, runErr
}

func TestApplyCommandRepairsAndRollsBackOnANode(t *testing.T) {
	node := nspawntest.Boot(t, nspawn.Options{
		Name: "cmd-apply",
		Files: []nspawn.File{
			{Path: "/etc/systemd/system/kubelet.service", Data: []byte(kubeletStandIn)},
			{Path: "/etc/cni/net.d/10-lab.conflist", Data: []byte(incompatibleConflist)},
		},
		EnableUnits: []string{"kubelet.service", "containerd.service"},
	})
	conf := filepath.Join(node.RootDir(), "etc/cni/net.d/10-lab.conflist")
	plan := func(version string) v1alpha1.Plan {
		return v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
			{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"},
			{Type: v1alpha1.StepStopUnit, Unit: "containerd.service"},
			{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-lab.conflist", CNIVersion: version},
			{Type: v1alpha1.StepStartUnit, Unit: "containerd.service"},
			{Type: v1alpha1.StepStartUnit, Unit: "kubelet.service"},
			{Type: v1alpha1.StepVerifyNode},
		}}
	}

	// The repair: cniVersion becomes the highest every plugin of the chain answers to VERSION (1.0.0).
	res, msg, err := apply(t, node, plan(""), "cmd-repair")
	if err != nil || res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("apply: %v: %s: %s\n%+v", err, res.Outcome, res.Message, res.Steps)
	}
	got, _ := os.ReadFile(conf)
	if want := strings.Replace(incompatibleConflist, `"1.1.0"`, `"1.0.0"`, 1); string(got) != want {
		t.Fatalf("conflist after the repair:\n%s", got)
	}
	if len(res.Changes) != 1 || !strings.Contains(res.Changes[0].Diff, `+  "cniVersion": "1.0.0",`) {
		t.Fatalf("changes: %+v", res.Changes)
	}
	var term v1alpha1.ExecutorResult
	if len(msg) > executor.TerminationMessageLimit || json.Unmarshal(msg, &term) != nil || term.Outcome != res.Outcome {
		t.Fatalf("termination message (%d bytes): %s", len(msg), msg)
	}
	t.Logf("verification: %s", res.Steps[len(res.Steps)-1].Message)
	assertUnitsUp(t, node)

	// A version the plugins do not support is refused before anything is stopped: the real resolver asks them.
	before, _ := os.ReadFile(conf)
	ids := unitInvocations(t, node)
	res, _, err = apply(t, node, plan("1.1.0"), "cmd-worse")
	if err == nil || res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "nothing was stopped") {
		t.Fatalf("apply: %v: %s: %s", err, res.Outcome, res.Message)
	}
	if after := unitInvocations(t, node); after != ids {
		t.Fatalf("units were restarted: %s -> %s", ids, after)
	}

	// A repair that does not make the node verify: the loopback plugin, which containerd runs for every pod, is
	// missing. The verification fails, the repaired file comes back byte for byte, nothing is put in loopback's
	// place, the units run, and the command fails. (A broken conflist first in name order no longer serves: it is
	// then the file the runtime loads, and a step naming 10-lab.conflist is refused before anything is stopped.)
	broken := filepath.Join(node.RootDir(), "usr/lib/cni/loopback")
	if err := os.Rename(broken, broken+".away"); err != nil {
		t.Fatal(err)
	}
	res, msg, err = apply(t, node, plan("0.4.0"), "cmd-unverified", "--verify-timeout", "3s")
	if err == nil || res.Outcome != v1alpha1.OutcomeRolledBack || !strings.Contains(res.Message, "VerifyNode") {
		t.Fatalf("apply: %v: %s: %s", err, res.Outcome, res.Message)
	}
	if after, _ := os.ReadFile(conf); !bytes.Equal(before, after) {
		t.Fatalf("not rolled back:\n%s", after)
	}
	if _, err := os.Stat(broken); !os.IsNotExist(err) {
		t.Fatalf("something was put in the missing loopback plugin's place: %v", err)
	}
	if !strings.Contains(string(msg), `"RolledBack"`) {
		t.Fatalf("termination message: %s", msg)
	}
	t.Logf("rolled back because: %s", res.Message)
	assertUnitsUp(t, node)

	// The cluster did not accept the repair: `remediator rollback` undoes it from the journal, byte for byte.
	if err := os.Rename(broken+".away", broken); err != nil {
		t.Fatal(err)
	}
	rb := exec.Command(os.Args[0], "rollback", "--remediation-id", "cmd-repair", "--host-root", node.RootDir(),
		"--dbus-address", node.BusAddress(), "--termination-message-path", filepath.Join(labDir(t), "rb-termination"))
	var rbOut, rbErr bytes.Buffer
	rb.Stdout, rb.Stderr = &rbOut, &rbErr
	if err := rb.Run(); err != nil {
		t.Fatalf("remediator rollback: %v\n%s", err, rbErr.String())
	}
	var rbRes v1alpha1.ExecutorResult
	if err := json.Unmarshal(rbOut.Bytes(), &rbRes); err != nil || rbRes.Outcome != v1alpha1.OutcomeRolledBack {
		t.Fatalf("rollback result: %v %s", err, rbOut.String())
	}
	if got, _ := os.ReadFile(conf); string(got) != incompatibleConflist {
		t.Fatalf("after the rollback:\n%s", got)
	}
	assertUnitsUp(t, node)

	// The pod mounted nothing of the node but the state dir and the bus: the staged binary and the journals are
	// all that the runs left there.
	for _, p := range []string{"journal/cmd-repair/result.json", "journal/cmd-unverified/result.json", "bin"} {
		if _, err := os.Stat(filepath.Join(node.RootDir(), hostrun.DefaultStateDir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func assertUnitsUp(t *testing.T, node *nspawn.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := units.Connect(ctx, node.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, u := range []string{"containerd.service", "kubelet.service"} {
		if s, err := m.State(ctx, u); err != nil || s.ActiveState != units.Active {
			t.Errorf("%s: %s %v", u, s, err)
		}
	}
}

// unitInvocations identifies the current run of both units: it changes when either is restarted.
func unitInvocations(t *testing.T, node *nspawn.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := units.Connect(ctx, node.BusAddress())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ids []string
	for _, u := range []string{"containerd.service", "kubelet.service"} {
		s, err := m.State(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.InvocationID)
	}
	return strings.Join(ids, ",")
}
