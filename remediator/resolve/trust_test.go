package resolve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/executor"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/remediator/units"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// treeSum is the sha256 of every file under root (path, mode and content), except the remediator's own state (its
// journals), so that a test can tell "nothing on the node changed" byte for byte.
func treeSum(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "var/lib/cnimedic" || rel == "netns" {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		sum := info.Mode().String()
		if info.Mode().IsRegular() {
			raw, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(raw)
			sum += " " + hex.EncodeToString(h[:])
		}
		out[rel] = sum
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, s := range before {
		if after[p] != s {
			t.Errorf("%s changed: %q -> %q", p, s, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// recordingUnits stands in for systemd in these resolver tests (the executor's units against a real systemd are
// tested in remediator/executor and on the e2e lab): it records every stop, which must not happen at all when the
// first repair step is refused. Its units are running, so a start changes nothing.
type recordingUnits struct {
	mu  sync.Mutex
	ops []string
}

func (u *recordingUnits) Stop(_ context.Context, unit string) (units.Transition, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.ops = append(u.ops, "stop "+unit)
	return units.Transition{Unit: unit, Op: "stop", Job: "done"}, nil
}

func (u *recordingUnits) Start(_ context.Context, unit string) (units.Transition, error) {
	return units.Transition{Unit: unit, Op: "start"}, nil
}

// TestAConfListNamedOnlyByAMessageIsNeverEdited: a plan step's confList comes from a message's parameters. Only the
// file the runtime loads (the first in name order of the conf dir) is ever edited or restored; a message naming
// another file (one that would need the very repair, a broken one with a good backup, one that does not exist, one
// with an extension the runtime ignores) gets a one-line refusal naming it and the loaded one, from the resolver,
// from the preview (`remediator plan`) and from the executor, which stops no unit and writes nothing. Real plugins
// answer VERSION.
func TestAConfListNamedOnlyByAMessageIsNeverEdited(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	// The loaded file is healthy for Debian's plugins (1.0.0); the later ones are what a message could name.
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist", []byte(seedConflist("1.0.0", "cni0", "/var/lib/cni/networks")), 0o644)
	nodetest.Write(t, root, "/etc/cni/net.d/20-other.conflist", []byte(seedConflist("1.1.0", "cni1", "/var/lib/cni/networks")), 0o600)
	nodetest.Write(t, root, "/etc/cni/net.d/30-broken.conflist", []byte(`{"cniVersion": "1.0.0", "name": `), 0o644)
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist.bak", []byte(seedConflist("1.1.0", "cni0", "/var/lib/cni/networks")), 0o644)
	good := []byte(seedConflist("1.0.0", "cni2", "/var/lib/cni/networks"))
	env := step.Env{Root: host.Root(root), ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"},
		Backups: func(string) ([]step.BackupCopy, error) {
			return []step.BackupCopy{{Source: "journal a/1", Content: good, Mode: 0o644}}, nil
		}}
	// The executor's journals go to its own state dir, which the comparison leaves out.
	if err := os.MkdirAll(filepath.Join(root, "var/lib/cnimedic"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := treeSum(t, root)

	steps := []v1alpha1.PlanStep{
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "20-other.conflist"},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "20-other.conflist", CNIVersion: "1.0.0"},
		{Type: v1alpha1.StepRestoreConfList, ConfList: "30-broken.conflist"},
		{Type: v1alpha1.StepRestoreConfList, ConfList: "99-absent.conflist"},
		{Type: v1alpha1.StepSetCNIVersion, ConfList: "10-lab.conflist.bak"},
	}
	for i, s := range steps {
		named := "/etc/cni/net.d/" + s.ConfList
		refused := func(where, msg string) {
			t.Helper()
			if !strings.Contains(msg, named+" named by the plan is not the file the runtime loads (/etc/cni/net.d/10-lab.conflist") || strings.Contains(msg, "\n") {
				t.Errorf("%s of %s %s: want a one-line refusal naming %s and the loaded file, got %q", where, s.Type, s.ConfList, named, msg)
			}
		}
		r, _ := For(s.Type)
		res, err := r(context.Background(), env, s)
		if err == nil {
			t.Errorf("%s %s: resolved to %+v, want a refusal", s.Type, s.ConfList, res)
		} else {
			refused("the resolver", err.Error())
		}
		p := Preview(context.Background(), env, v1alpha1.Plan{Steps: []v1alpha1.PlanStep{s}})
		if len(p.Steps[0].Changes) != 0 {
			t.Errorf("the preview of %s %s shows changes: %+v", s.Type, s.ConfList, p.Steps[0].Changes)
		}
		refused("the preview", p.Steps[0].Error)

		u := &recordingUnits{}
		e := &executor.Executor{Env: env, Units: u, Resolvers: Resolvers,
			Verifier: func(context.Context, step.Env) (string, error) { return "", nil }}
		out := e.Run(context.Background(), fmt.Sprintf("nr-%d", i), v1alpha1.Plan{Steps: []v1alpha1.PlanStep{
			{Type: v1alpha1.StepStopUnit, Unit: "kubelet.service"}, {Type: v1alpha1.StepStopUnit, Unit: "containerd.service"},
			s,
			{Type: v1alpha1.StepStartUnit, Unit: "containerd.service"}, {Type: v1alpha1.StepStartUnit, Unit: "kubelet.service"},
			{Type: v1alpha1.StepVerifyNode},
		}})
		if out.Outcome != v1alpha1.OutcomeRolledBack || len(u.ops) != 0 {
			t.Errorf("the executor ran %s %s: outcome %s, units %v, %s", s.Type, s.ConfList, out.Outcome, u.ops, out.Message)
		}
		refused("the executor", out.Message)
	}
	sameTree(t, before, treeSum(t, root))

	// The loaded file itself, named or not, is the one a step works on.
	for _, name := range []string{"10-lab.conflist", ""} {
		res, err := SetCNIVersion(context.Background(), env, v1alpha1.PlanStep{ConfList: name})
		if err != nil || !strings.Contains(res.Message, "/etc/cni/net.d/10-lab.conflist already has cniVersion 1.0.0") {
			t.Fatalf("SetCNIVersion of the loaded file named %q: %+v %v", name, res, err)
		}
	}
	// FixConfFileModes leaves alone the 0600 file the runtime does not load, and says so.
	res, err := FixConfFileModes(context.Background(), env, v1alpha1.PlanStep{})
	if err != nil || len(res.Edits) != 0 || !strings.Contains(res.Message, "/etc/cni/net.d/20-other.conflist (mode 0600) is not the file the runtime loads") {
		t.Fatalf("FixConfFileModes: %+v %v", res, err)
	}
}

// TestAPluginNoLoadedConflistUsesIsNeverInstalled: a plan step's plugins come from a message's parameters. Only a
// plugin of the loaded configuration's chain, or loopback, is installed; a plugin only a configuration the runtime
// does not load uses, one nothing uses, and a vendor's are reported in the step's message and never written. Real
// plugins that would all need replacing under their configuration's cniVersion (v0.9.1 ones under 1.0.0, Debian's
// 1.1.1 under 1.1.0), so only the rule decides.
func TestAPluginNoLoadedConflistUsesIsNeverInstalled(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Old, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "macvlan", "tuning")
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist", []byte(seedConflist("1.0.0", "cni0", "/var/lib/cni/networks")), 0o644)
	// A configuration the runtime does not load (it sorts second) that uses macvlan and tuning.
	other := `{"cniVersion": "1.1.0", "name": "side", "plugins": [{"type": "macvlan", "master": "eth0", "ipam": {"type": "dhcp"}}, {"type": "tuning"}]}`
	nodetest.Write(t, root, "/etc/cni/net.d/20-side.conflist", []byte(other), 0o644)
	env := step.Env{Root: host.Root(root), ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, BundleDir: nodetest.PluginDir(t, nodetest.Bundle)}
	before := treeSum(t, root)

	res, err := InstallReferencePlugins(context.Background(), env, v1alpha1.PlanStep{Plugins: []string{"macvlan", "tuning", "dhcp", "bandwidth", "calico"}})
	if err != nil || len(res.Edits) != 0 {
		t.Fatalf("plugins no loaded configuration uses: %+v %v", res, err)
	}
	for _, name := range []string{"macvlan", "tuning", "dhcp", "bandwidth"} {
		if !strings.Contains(res.Message, name+" is not installed: /etc/cni/net.d/10-lab.conflist, the configuration the runtime loads, uses bridge, host-local, portmap, and containerd runs loopback") {
			t.Errorf("the message does not say why %s is not installed: %s", name, res.Message)
		}
	}
	if !strings.Contains(res.Message, "calico is a vendor plugin: not replaced") {
		t.Errorf("the vendor rule: %s", res.Message)
	}
	p := Preview(context.Background(), env, v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepInstallReferencePlugins, Plugins: []string{"macvlan"}}}})
	if len(p.Steps[0].Changes) != 0 || !strings.Contains(p.Steps[0].Message, "macvlan is not installed") {
		t.Errorf("preview: %+v", p.Steps[0])
	}
	sameTree(t, before, treeSum(t, root))

	// Named together with a plugin the loaded chain does use, only that one is installed.
	res, err = InstallReferencePlugins(context.Background(), env, v1alpha1.PlanStep{Plugins: []string{"macvlan", "portmap"}})
	if err != nil || len(res.Edits) != 1 || res.Edits[0].Path != "/opt/cni/bin/portmap" ||
		!strings.Contains(res.Edits[0].Why, "it replaces /opt/cni/bin/portmap, which supports 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, not 1.0.0") {
		t.Fatalf("macvlan and portmap: %+v %v", res, err)
	}

	// With no conflist the runtime can load, only loopback is eligible.
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist", []byte(`{"cniVersion": "1.0.0", "name": `), 0o644)
	res, err = InstallReferencePlugins(context.Background(), env, v1alpha1.PlanStep{Plugins: []string{"bridge", "loopback"}})
	if err != nil || len(res.Edits) != 1 || res.Edits[0].Path != "/opt/cni/bin/loopback" || !strings.Contains(res.Message, "bridge is not installed: only loopback is used: /etc/cni/net.d/10-lab.conflist, the configuration the runtime loads, does not load") {
		t.Fatalf("a broken loaded configuration: %+v %v", res, err)
	}
}

// TestAPluginThatIsPresentAndNewEnoughIsNotReplaced: a plugin of the loaded chain that answers VERSION with the
// conflist's effective cniVersion (and loopback with the 1.0.0 containerd asks of it) is not replaced, named or
// not, even when the bundle holds a newer build. The same real plugins under a version they do not support, or
// unable to answer VERSION, are replaced.
func TestAPluginThatIsPresentAndNewEnoughIsNotReplaced(t *testing.T) {
	root := nodetest.Root(t)
	all := []string{"bridge", "host-local", "portmap", "loopback"}
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", all...)
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist", []byte(seedConflist("1.0.0", "cni0", "/var/lib/cni/networks")), 0o644)
	env := step.Env{Root: host.Root(root), ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}, BundleDir: nodetest.PluginDir(t, nodetest.Bundle)}
	before := treeSum(t, root)
	for _, s := range []v1alpha1.PlanStep{{}, {Plugins: all}} {
		res, err := InstallReferencePlugins(context.Background(), env, s)
		if err != nil || len(res.Edits) != 0 {
			t.Fatalf("Debian's 1.1.1 plugins under cniVersion 1.0.0 (plugins %v): %+v %v", s.Plugins, res.Edits, err)
		}
		for _, p := range all {
			if !strings.Contains(res.Message, p+" (/opt/cni/bin/"+p+") is not replaced: it supports 1.0.0") {
				t.Errorf("the message does not say why %s stays: %s", p, res.Message)
			}
		}
	}
	sameTree(t, before, treeSum(t, root))

	// Under cniVersion 1.1.0 the same binaries are too old; a plugin that cannot answer VERSION is replaced too.
	nodetest.Write(t, root, "/etc/cni/net.d/10-lab.conflist", []byte(seedConflist("1.1.0", "cni0", "/var/lib/cni/networks")), 0o644)
	if err := os.Chmod(filepath.Join(root, "opt/cni/bin/loopback"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := InstallReferencePlugins(context.Background(), env, v1alpha1.PlanStep{})
	if err != nil || len(res.Edits) != 4 {
		t.Fatalf("under 1.1.0: %+v %v", res, err)
	}
	if !strings.Contains(res.Edits[0].Why, "it replaces /opt/cni/bin/bridge, which supports 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, not 1.1.0") ||
		!strings.Contains(res.Edits[3].Why, "it replaces /opt/cni/bin/loopback, which cannot answer VERSION") {
		t.Fatalf("reasons: %s", res.Message)
	}
}
