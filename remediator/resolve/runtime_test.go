package resolve

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cri"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/ipam"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// TestReclaimAndStaleNetnsAgainstARealRuntime runs two real pod sandboxes on a real containerd with real bridge and
// host-local plugins, then plants what a failed teardown leaves behind (a lease of a sandbox that no longer
// exists, a namespace no sandbox uses, an unmounted namespace file). The resolvers must pick exactly the leftovers:
// a live sandbox's address or namespace is never touched, and the live sandboxes still tear down cleanly after.
func TestReclaimAndStaleNetnsAgainstARealRuntime(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.Debian)
	ctx := context.Background()
	nodetest.Write(t, n.Root, "/etc/cni/net.d/10-containerd-net.conflist",
		nodetest.BridgeConflist("1.0.0", "cnmrec0", "10.97.0.0/24", n.Local(n.IPAMDir)), 0o644)
	waitNetworkReady(t, n)
	n.Containerd.ImportPause(t)
	rt := n.Containerd.CRI(t)
	live := []string{n.Containerd.RunSandbox(t, rt, "live-a"), n.Containerd.RunSandbox(t, rt, "live-b")}

	netDir := filepath.Join(n.IPAMDir, "containerd-net")
	leaked := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	nodetest.Write(t, n.Root, filepath.Join(netDir, "10.97.0.200"), []byte(leaked+"\r\neth0"), 0o644)
	// Leaked long ago; and a lease written this moment by a sandbox the runtime does not list yet (a repair on k3s
	// runs with kubelet and the runtime up), which is never freed.
	longAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(n.Root, netDir, "10.97.0.200"), longAgo, longAgo); err != nil {
		t.Fatal(err)
	}
	settingUp := "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	nodetest.Write(t, n.Root, filepath.Join(netDir, "10.97.0.201"), []byte(settingUp+"\r\neth0"), 0o644)
	stale := nodetest.NewNetns(t, n.Containerd.NetnsDir, "cni-stale")
	nodetest.Write(t, "/", filepath.Join(n.Containerd.NetnsDir, "cni-leftover"), nil, 0o444)

	env := step.Env{Root: host.Root(n.Root), IPAMDataDir: n.IPAMDir, NetnsDir: n.NetnsHostDir(), CRIEndpoint: n.SocketHostPath(), ProcDir: "/proc"}
	res, err := ReclaimIPAM(ctx, env, v1alpha1.PlanStep{Type: v1alpha1.StepReclaimIPAM})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Edits) != 1 || res.Edits[0].Path != filepath.Join(netDir, "10.97.0.200") || !res.Edits[0].Remove {
		t.Fatalf("reclaim must free exactly the leaked lease: %+v", res.Edits)
	}
	apply(t, env, res)
	// The sandbox that was being set up goes away again: its lease is not the repair's to free.
	if err := os.Remove(filepath.Join(n.Root, netDir, "10.97.0.201")); err != nil {
		t.Fatalf("the lease written a moment ago was freed: %v", err)
	}
	net := ipam.ReadNetwork(host.Root(n.Root), netDir)
	var owners []string
	for _, l := range net.Leases {
		owners = append(owners, l.ContainerID)
	}
	sort.Strings(owners)
	wantOwners := append([]string(nil), live...)
	sort.Strings(wantOwners)
	if strings.Join(owners, ",") != strings.Join(wantOwners, ",") {
		t.Fatalf("leases left %v, want the live sandboxes' %v", owners, wantOwners)
	}

	res, err = RemoveStaleNetns(ctx, env, v1alpha1.PlanStep{Type: v1alpha1.StepRemoveStaleNetns})
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, a := range res.Actions {
		acts = append(acts, a.Describe())
	}
	wantActs := []string{
		"unmount and remove network namespace " + filepath.Join(n.NetnsHostDir(), "cni-leftover"),
		"unmount and remove network namespace " + filepath.Join(n.NetnsHostDir(), "cni-stale"),
	}
	if strings.Join(acts, "\n") != strings.Join(wantActs, "\n") {
		t.Fatalf("actions:\n%s\nwant:\n%s", strings.Join(acts, "\n"), strings.Join(wantActs, "\n"))
	}
	apply(t, env, res)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale namespace still there: %v", err)
	}

	// The live sandboxes are intact: each tears down through CNI and frees its own address.
	c, err := cri.Dial(n.Containerd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sbs, err := c.Sandboxes(ctx)
	if err != nil || len(sbs) != 2 {
		t.Fatalf("sandboxes after the repairs: %+v %v", sbs, err)
	}
	for _, sb := range sbs {
		if _, err := os.Stat(sb.NetNS); err != nil {
			t.Fatalf("live sandbox %s lost its namespace: %v", sb.Name, err)
		}
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.ID}); err != nil {
			t.Fatalf("stopping %s after the repairs: %v", sb.Name, err)
		}
	}
	if left := ipam.ReadNetwork(host.Root(n.Root), netDir).Leases; len(left) != 0 {
		t.Fatalf("leases after stopping every sandbox: %+v", left)
	}
	// With nothing leaked, a second reclaim changes nothing.
	if again, err := ReclaimIPAM(ctx, env, v1alpha1.PlanStep{}); err != nil || !again.NoChange() {
		t.Fatalf("second reclaim: %+v %v", again, err)
	}
}

func TestReclaimRefusesWithoutTheRuntime(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.Write(t, root, "/var/lib/cni/networks/n/10.0.0.2", []byte("abc\r\neth0"), 0o644)
	env := step.Env{Root: host.Root(root), CRIEndpoint: "/run/nothing.sock"}
	if _, err := ReclaimIPAM(context.Background(), env, v1alpha1.PlanStep{}); err == nil || !strings.Contains(err.Error(), "the runtime must be running") {
		t.Fatalf("no runtime, no reclaim: %v", err)
	}
}

func waitNetworkReady(t *testing.T, n *nodetest.Node) {
	t.Helper()
	c, err := cri.Dial(n.Containerd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := c.Status(context.Background())
		if err == nil && st.NetworkReady {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runtime's network never became ready: %+v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
