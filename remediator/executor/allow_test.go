package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/journal"
)

// treeSHA is the sha256 of every file, directory and link under the root (the remediator's own state dir
// included: a refused plan leaves no journal either), each with its path, mode, owner, content or link target.
func treeSHA(t *testing.T, root host.Root) string {
	t.Helper()
	h := sha256.New()
	err := filepath.Walk(string(root), func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", root.HostPath(p), fi.Mode())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "-> %s\n", target)
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(data)
		}
		return nil
	})
	must(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

// withStep is repairPlan with step i replaced.
func withStep(i int, s v1alpha1.PlanStep) v1alpha1.Plan {
	p := repairPlan()
	p.Steps[i] = s
	return p
}

// TestAPlanThatStopsSshdIsRefusedBeforeAnythingIsTouched: the node keeps its own allowlist whatever the plan says
// (issue 13 finding 1: a plan stopping sshd and auditd and pointing containerd's bin_dir at /etc/cron.d previewed
// cleanly and ran). Each plan below is refused with one line naming the step and what it names, no unit is
// stopped, and the tree is byte for byte the same.
func TestAPlanThatStopsSshdIsRefusedBeforeAnythingIsTouched(t *testing.T) {
	cases := []struct {
		name string
		plan v1alpha1.Plan
		want string
	}{
		{"sshd", withStep(0, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: "sshd.service"}), "step 1 (StopUnit): unit sshd.service is not this node's"},
		{"sshd without its type", withStep(0, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: "sshd"}), "step 1 (StopUnit): unit sshd is not this node's"},
		{"auditd", withStep(4, v1alpha1.PlanStep{Type: v1alpha1.StepStartUnit, Unit: "auditd.service"}), "step 5 (StartUnit): unit auditd.service is not this node's"},
		{"a path", withStep(1, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: "../x"}), `step 2 (StopUnit): invalid unit "../x"`},
		{"dot", withStep(1, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: "."}), `step 2 (StopUnit): unit: "." names a directory`},
		{"dot dot", withStep(1, v1alpha1.PlanStep{Type: v1alpha1.StepStopUnit, Unit: ".."}), `step 2 (StopUnit): unit: ".." names a directory`},
		{"cron bin_dir", withStep(2, v1alpha1.PlanStep{Type: v1alpha1.StepRepairRuntimeCNIConfig,
			Runtime: &v1alpha1.ContainerdCNISpec{BinDir: "/etc/cron.d", ConfDir: "/etc/cni/net.d"}}), "step 3 (RepairRuntimeCNIConfig): bin_dir: /etc/cron.d is not under a CNI directory"},
		{"cron conf_dir", withStep(2, v1alpha1.PlanStep{Type: v1alpha1.StepRepairRuntimeCNIConfig,
			Runtime: &v1alpha1.ContainerdCNISpec{ConfDir: "/etc/cron.d"}}), "step 3 (RepairRuntimeCNIConfig): conf_dir: /etc/cron.d is not under a CNI directory"},
		{"cron config path", withStep(2, v1alpha1.PlanStep{Type: v1alpha1.StepRepairRuntimeCNIConfig,
			Runtime: &v1alpha1.ContainerdCNISpec{ConfigPath: "/etc/cron.d/cnimedic"}}), "step 3 (RepairRuntimeCNIConfig): configPath: /etc/cron.d/cnimedic is not a file under a containerd config directory"},
		{"conflist dot dot", withStep(2, v1alpha1.PlanStep{Type: v1alpha1.StepSetCNIVersion, ConfList: "..", CNIVersion: "0.4.0"}), `step 3 (SetCNIVersion): confList: ".." names a directory`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			before := treeSHA(t, f.root)
			res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-refused", c.plan)
			if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, c.want) || strings.Contains(res.Message, "\n") {
				t.Fatalf("want one Failed line with %q, got %s: %q", c.want, res.Outcome, res.Message)
			}
			if ops := f.units.takeOps(); len(ops) != 0 {
				t.Fatalf("units touched: %v", ops)
			}
			if after := treeSHA(t, f.root); after != before {
				t.Fatalf("the tree changed: %s -> %s", before, after)
			}
		})
	}
	// The node's own units must be a kubelet and a runtime unit cnimedic knows: an executor configured with
	// sshd as a "critical" unit refuses every plan, and does not start sshd on the way out either.
	f := newFixture(t)
	ex := f.executor(f.units, "0.4.0")
	ex.CriticalUnits = []string{"sshd.service", kubelet}
	plan := repairPlan()
	plan.Steps[0].Unit = "sshd.service"
	before := treeSHA(t, f.root)
	res := ex.Run(context.Background(), "rem-sshd-critical", plan)
	if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "unit sshd.service is not a kubelet or container runtime unit cnimedic knows") {
		t.Fatalf("%s: %s", res.Outcome, res.Message)
	}
	if ops := f.units.takeOps(); len(ops) != 0 || treeSHA(t, f.root) != before {
		t.Fatalf("touched: units %v", ops)
	}
}

// TestASymlinkOutOfTheAllowedDirsIsNeverWrittenThrough: issue 13 finding 4. A conflist that links to a private
// file, a plugin that links to a config file elsewhere (relative or absolute; the absolute one means the host's
// file, inside --host-root), a bin dir that links out: each plan is refused before anything is stopped, and the
// tree's sha256 is the same before and after (the link's target keeps its content and its 0600).
func TestASymlinkOutOfTheAllowedDirsIsNeverWrittenThrough(t *testing.T) {
	cases := []struct {
		name  string
		plant func(t *testing.T, root host.Root)
		want  string
	}{
		{"a conflist linked to a private file", func(t *testing.T, root host.Root) {
			must(t, os.WriteFile(root.Path("/etc/private.json"), origConf, 0o600))
			must(t, os.Remove(root.Path(confList)))
			must(t, os.Symlink("../../private.json", root.Path(confList)))
		}, "/etc/cni/net.d/10-lab.conflist is a symlink to /etc/private.json"},
		{"a plugin linked to a config file", func(t *testing.T, root host.Root) {
			must(t, os.WriteFile(root.Path("/etc/important.conf"), []byte("keep me\n"), 0o644))
			must(t, os.MkdirAll(root.Path(binDir), 0o755))
			must(t, os.Symlink("../../../etc/important.conf", root.Path(binDir+"/bridge")))
		}, "/opt/cni/bin/bridge is a symlink to /etc/important.conf"},
		{"a plugin linked absolutely to a config file", func(t *testing.T, root host.Root) {
			must(t, os.WriteFile(root.Path("/etc/important.conf"), []byte("keep me\n"), 0o644))
			must(t, os.MkdirAll(root.Path(binDir), 0o755))
			must(t, os.Symlink("/etc/important.conf", root.Path(binDir+"/host-local")))
		}, "/opt/cni/bin/host-local is a symlink to /etc/important.conf"},
		{"a bin dir linked to /etc", func(t *testing.T, root host.Root) {
			must(t, os.MkdirAll(root.Path("/opt/cni"), 0o755))
			must(t, os.Symlink("/etc", root.Path(binDir)))
		}, "bin dir /opt/cni/bin is a symlink to /etc"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.plant(t, f.root)
			before := treeSHA(t, f.root)
			res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-link", repairPlan())
			if res.Outcome == v1alpha1.OutcomeSucceeded || !strings.Contains(res.Message, c.want) || !strings.Contains(res.Message, "nothing was stopped or changed") {
				t.Fatalf("want a refusal with %q, got %s: %s", c.want, res.Outcome, res.Message)
			}
			if ops := f.units.takeOps(); len(ops) != 0 {
				t.Fatalf("units touched: %v", ops)
			}
			// The journal records the refusal; everything else is as it was.
			must(t, os.RemoveAll(f.root.Path("/var/lib/cnimedic")))
			if after := treeSHA(t, f.root); after != before {
				t.Fatalf("the tree changed: %s -> %s", before, after)
			}
		})
	}
}

// TestALinkThatStaysInsideTheCNIDirsIsFollowed: the lab's layout (hack/node-rootfs.sh: /opt/cni/bin is a link to
// Debian's /usr/lib/cni) and a distribution's per-plugin links (/opt/cni/bin/x -> /usr/lib/cni/x) are repaired
// where the links lead.
func TestALinkThatStaysInsideTheCNIDirsIsFollowed(t *testing.T) {
	t.Run("the bin dir", func(t *testing.T) {
		f := newFixture(t)
		must(t, os.MkdirAll(f.root.Path("/usr/lib/cni"), 0o755))
		must(t, os.MkdirAll(f.root.Path("/opt/cni"), 0o755))
		must(t, os.Symlink("../../usr/lib/cni", f.root.Path(binDir)))
		res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-lab", repairPlan())
		if res.Outcome != v1alpha1.OutcomeSucceeded {
			t.Fatalf("%s: %s", res.Outcome, res.Message)
		}
		assertRepaired(t, f.root)
		if got, _ := os.ReadFile(f.root.Path("/usr/lib/cni/bridge")); !bytes.Equal(got, bridgeBin) {
			t.Fatalf("/usr/lib/cni/bridge: %q", got)
		}
	})
	t.Run("each plugin", func(t *testing.T) {
		f := newFixture(t)
		must(t, os.MkdirAll(f.root.Path("/usr/lib/cni"), 0o755))
		must(t, os.MkdirAll(f.root.Path(binDir), 0o755))
		for _, p := range []string{"bridge", "host-local"} {
			must(t, os.WriteFile(f.root.Path("/usr/lib/cni/"+p), []byte("old "+p), 0o755))
			// Relative, as the test's own resolvers read through the kernel (host.Root.Resolve reads an
			// absolute one inside the host root alike: see the step package's tests).
			must(t, os.Symlink("../../../usr/lib/cni/"+p, f.root.Path(binDir+"/"+p)))
		}
		res := f.executor(f.units, "0.4.0").Run(context.Background(), "rem-debian", repairPlan())
		if res.Outcome != v1alpha1.OutcomeSucceeded {
			t.Fatalf("%s: %s", res.Outcome, res.Message)
		}
		if fi, err := os.Lstat(f.root.Path(binDir + "/bridge")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("the link itself is kept: %v %v", fi, err)
		}
		assertRepaired(t, f.root)
	})
}

// TestARollbackNeverRestoresThroughASymlinkPlantedSinceTheBackup: the journal recorded where it wrote; when that
// path leads elsewhere by the time of a rollback (the conf dir swapped for a link to /etc/private-dir), the file
// is not restored there, the rollback says so, and the link's target is untouched.
func TestARollbackNeverRestoresThroughASymlinkPlantedSinceTheBackup(t *testing.T) {
	f := newFixture(t)
	ex := f.executor(f.units, "0.4.0")
	if res := ex.Run(context.Background(), "rem-undo-link", repairPlan()); res.Outcome != v1alpha1.OutcomeSucceeded {
		t.Fatalf("%s: %s", res.Outcome, res.Message)
	}
	private := f.root.Path("/etc/private-dir")
	must(t, os.MkdirAll(private, 0o700))
	must(t, os.WriteFile(filepath.Join(private, filepath.Base(confList)), []byte("private\n"), 0o600))
	must(t, os.RemoveAll(f.root.Path("/etc/cni/net.d")))
	must(t, os.Symlink("../private-dir", f.root.Path("/etc/cni/net.d")))
	before := treeSHA(t, host.Root(private))
	res := ex.Undo(context.Background(), "rem-undo-link", "test")
	if res.Outcome != v1alpha1.OutcomeFailed || !strings.Contains(res.Message, "/etc/cni/net.d/10-lab.conflist now leads to /etc/private-dir/10-lab.conflist through a symlink; it is not restored") {
		t.Fatalf("%s: %s", res.Outcome, res.Message)
	}
	if after := treeSHA(t, host.Root(private)); after != before {
		t.Fatal("the link's target changed")
	}
	f.units.allActive(t)
	// The plugins, which nothing moved, were restored (removed: they did not exist before).
	recs, err := journal.ReadRecords(f.root, "", "rem-undo-link")
	must(t, err)
	if !slices.ContainsFunc(recs, func(r journal.Record) bool { return r.Kind == journal.KindRestored && r.Path == binDir+"/bridge" }) {
		t.Fatalf("the bridge plugin was not restored: %+v", recs)
	}
}
