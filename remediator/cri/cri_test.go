package cri

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/test/nodetest"
)

// TestAgainstARealContainerd talks to Debian's containerd 1.6 started by the test: the seed's "cni plugin not
// initialized" with an empty conf dir, NetworkReady once a conflist appears (containerd reloads on file events), a
// real sandbox listed with its network namespace, and containerd's version over its own API.
func TestAgainstARealContainerd(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.Debian)
	ctx := context.Background()
	c, err := Dial(n.Containerd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	v, rev, err := c.ContainerdVersion(ctx)
	if err != nil || !strings.HasPrefix(v, "1.6.") {
		t.Fatalf("containerd version %q %q %v", v, rev, err)
	}
	name, cv, err := c.Version(ctx)
	if err != nil || name != "containerd" || cv != v {
		t.Fatalf("CRI version %q %q %v", name, cv, err)
	}

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.RuntimeReady || st.NetworkReady || st.NetworkReason != "NetworkPluginNotReady" || !strings.Contains(st.NetworkMessage, "cni plugin not initialized") {
		t.Fatalf("status with an empty conf dir: %+v", st)
	}

	nodetest.Write(t, n.Root, "/etc/cni/net.d/10-containerd-net.conflist",
		nodetest.BridgeConflist("1.0.0", "cnmcri0", "10.98.0.0/24", n.Local(n.IPAMDir)), 0o644)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if st, err = c.Status(ctx); err == nil && st.NetworkReady {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NetworkReady never came after writing a conflist: %+v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	n.Containerd.ImportPause(t)
	id := n.Containerd.RunSandbox(t, n.Containerd.CRI(t), "cri-test")
	sbs, err := c.Sandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sbs) != 1 || sbs[0].ID != id || sbs[0].State != "READY" || sbs[0].Name != "cri-test" {
		t.Fatalf("sandboxes: %+v", sbs)
	}
	if filepath.Dir(sbs[0].NetNS) != n.Containerd.NetnsDir {
		t.Fatalf("sandbox netns %q is not under containerd's netns dir %s", sbs[0].NetNS, n.Containerd.NetnsDir)
	}
}
