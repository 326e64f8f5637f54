package netstate

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

func TestNetnsStalenessAndRemoval(t *testing.T) {
	root := nodetest.Root(t)
	dir := filepath.Join(root, "var/run/netns")
	used := nodetest.NewNetns(t, dir, "cni-used")
	nodetest.NewNetns(t, dir, "cni-stale")
	nodetest.Write(t, root, "/var/run/netns/cni-leftover", nil, 0o444)

	// Without the runtime's answer nothing is stale.
	list, err := ListNetns(host.Root(root), "/var/run/netns", nil, "/proc")
	if err != nil || len(list) != 3 {
		t.Fatalf("%+v %v", list, err)
	}
	for _, n := range list {
		if n.Stale {
			t.Fatalf("%s called stale without asking the runtime", n.Path)
		}
	}
	list, err = ListNetns(host.Root(root), "/var/run/netns", map[string]string{"/var/run/netns/cni-used": "sb1"}, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Netns{}
	for _, n := range list {
		got[filepath.Base(n.Path)] = n
	}
	if n := got["cni-used"]; n.Stale || n.UsedBySandbox != "sb1" || !n.Mounted {
		t.Fatalf("used: %+v", n)
	}
	if n := got["cni-stale"]; !n.Stale || !n.Mounted || n.Processes != 0 {
		t.Fatalf("stale: %+v", n)
	}
	if n := got["cni-leftover"]; !n.Stale || n.Mounted {
		t.Fatalf("leftover: %+v", n)
	}
	for _, name := range []string{"cni-stale", "cni-leftover"} {
		a := RemoveNetns{HostPath: "/var/run/netns/" + name, Local: filepath.Join(dir, name)}
		for i := 0; i < 2; i++ { // the action is safe to repeat
			if err := a.Do(context.Background()); err != nil {
				t.Fatalf("%s (run %d): %v", a.Describe(), i+1, err)
			}
		}
		if _, err := os.Stat(a.Local); !os.IsNotExist(err) {
			t.Fatalf("%s still there", a.Local)
		}
	}
	if !isNsfs(used) {
		t.Fatal("the used namespace was touched")
	}
}

func TestExpectedAddresses(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.Write(t, root, "/run/flannel/subnet.env", []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"), 0o644)
	s, err := FlannelSubnet(host.Root(root), "/run/flannel/subnet.env")
	if err != nil || s != "10.244.1.1/24" {
		t.Fatalf("%q %v", s, err)
	}
	if s, err := FlannelSubnet(host.Root(root), "/run/flannel/none.env"); err != nil || s != "" {
		t.Fatalf("absent subnet.env: %q %v", s, err)
	}
	l := Link{Name: "cni0", Exists: true, Addresses: []string{"10.244.5.1/24", "fd00::1/64"}}
	CheckExpected(&l, "10.244.1.1/24")
	if !l.Stale {
		t.Fatal("an IPv4 address other than the expected one is stale")
	}
	l.Addresses = []string{"10.244.1.1/24", "fd00::1/64"}
	CheckExpected(&l, "10.244.1.1/24")
	if l.Stale {
		t.Fatal("the expected address is not stale")
	}
}
