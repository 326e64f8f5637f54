package resolve

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/cnicache"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// TestUnconvertibleCachedResultAgainstARealRuntime reproduces the lab's FailedKillPod on a real containerd 1.6:
// a sandbox set up under cniVersion 1.0.0 cannot be torn down once its network is configured with 1.1.0 ("no
// converter for CNI result version 1.0.0 to 1.1.0"). RemoveStaleCNIResults, given what the message names, must
// remove exactly the blocking result and a planted one of a sandbox that is gone, leave a live sandbox's readable
// result alone, and then the teardown must succeed.
func TestUnconvertibleCachedResultAgainstARealRuntime(t *testing.T) {
	// The bundled plugins speak 1.1.0, so the DEL itself can succeed once the result is out of the way.
	n := nodetest.StartNode(t, nodetest.Bundle)
	ctx := context.Background()
	// containerd 1.6 keeps libcni's default cache dir, the machine's own /var/lib/cni: the network name is unique
	// to this test so that other tests' results there are never this test's business.
	const network = "cnmcache"
	// Results an interrupted earlier run of this test left behind are not this run's.
	if old, err := filepath.Glob(filepath.Join(cnicache.DefaultDir, network+"-*")); err == nil {
		for _, f := range old {
			_ = os.Remove(f)
		}
	}
	conf := func(name, version, bridge, subnet string) []byte {
		return []byte(strings.Replace(string(nodetest.BridgeConflist(version, bridge, subnet, n.Local(n.IPAMDir))), `"containerd-net"`, `"`+name+`"`, 1))
	}
	nodetest.Write(t, n.Root, "/etc/cni/net.d/10-cache.conflist", conf(network, "1.0.0", "cnmcache0", "10.98.0.0/24"), 0o644)
	waitNetworkReady(t, n)
	n.Containerd.ImportPause(t)
	rt := n.Containerd.CRI(t)
	blocked := n.Containerd.RunSandbox(t, rt, "blocked")

	// A result of a sandbox that is gone, in the same network and format.
	cacheDir := cnicache.DefaultDir
	var mine cnicache.Entry
	entries, err := cnicache.Read("/", cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.ContainerID == blocked && e.Network == network {
			mine = e
		}
	}
	if mine.Path == "" || mine.ResultVersion != "1.0.0" {
		t.Fatalf("no cached 1.0.0 result of sandbox %s in %s: %+v", blocked, cacheDir, entries)
	}
	raw, err := os.ReadFile(mine.Path)
	if err != nil {
		t.Fatal(err)
	}
	gone := strings.Repeat("d", 64)
	planted := filepath.Join(cacheDir, network+"-"+gone+"-eth0")
	if err := os.WriteFile(planted, []byte(strings.ReplaceAll(string(raw), blocked, gone)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(planted) })

	// The node's root holds the conf dir; the cache is the machine's (containerd 1.6 keeps libcni's default): bind
	// it into the root, where the remediator looks.
	bindInto(t, cacheDir, n.Local(cacheDir))
	env := step.Env{Root: host.Root(n.Root), CRIEndpoint: n.SocketHostPath()}
	ours := func(res step.Resolution) (names []string, edits []step.Edit) {
		for _, e := range res.Edits {
			if !e.Remove {
				t.Errorf("edit %+v is not a removal", e)
			}
			if strings.HasPrefix(filepath.Base(e.Path), network+"-") {
				names, edits = append(names, filepath.Base(e.Path)), append(edits, e)
			}
		}
		return names, edits
	}

	// Without a result version only the gone sandbox's result goes: a live sandbox's readable one is never touched.
	first, err := RemoveStaleCNIResults(ctx, env, v1alpha1.PlanStep{Type: v1alpha1.StepRemoveStaleCNIResults})
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := ours(first); strings.Join(names, ",") != filepath.Base(planted) {
		t.Fatalf("without a result version: removed %v, want only %s; message: %s", names, filepath.Base(planted), first.Message)
	}

	// The network moves to 1.1.0: the sandbox's teardown fails as on the lab.
	nodetest.Write(t, n.Root, "/etc/cni/net.d/10-cache.conflist", conf(network, "1.1.0", "cnmcache0", "10.98.0.0/24"), 0o644)
	var stopErr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		_, stopErr = rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: blocked})
		if stopErr != nil && strings.Contains(stopErr.Error(), "no converter for CNI result version 1.0.0 to 1.1.0") {
			break
		}
	}
	if stopErr == nil || !strings.Contains(stopErr.Error(), "no converter for CNI result version 1.0.0 to 1.1.0") {
		t.Fatalf("the teardown should fail on the cached result: %v", stopErr)
	}

	res, err := RemoveStaleCNIResults(ctx, env, v1alpha1.PlanStep{Type: v1alpha1.StepRemoveStaleCNIResults, Network: network, ResultVersion: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	removed, edits := ours(res)
	want := []string{filepath.Base(mine.Path), filepath.Base(planted)}
	sort.Strings(want)
	if strings.Join(removed, ",") != strings.Join(want, ",") {
		t.Fatalf("removed %v, want exactly %v; message: %s", removed, want, res.Message)
	}
	// Apply only this test's part: other tests' results of gone sandboxes are theirs to clean.
	apply(t, env, step.Resolution{Edits: edits})

	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: blocked}); err != nil {
		t.Fatalf("the teardown still fails after the repair: %v", err)
	}
}

// bindInto bind-mounts dir at target for the test.
func bindInto(t *testing.T, dir, target string) {
	t.Helper()
	if err := os.MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, target, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(target, syscall.MNT_DETACH) })
}
