package resolve

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/netstate"
	"github.com/cnimedic/cnimedic/remediator/step"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// TestALinkTheNodesCNIConfigurationDoesNotMakeIsNeverDeleted: a plan's Link comes from an event's text, so a
// bridge or VXLAN device that is not the node's CNI's own is refused even though it is the kind CNI makes and
// does not carry the default route (issue 12's storage bridge with a static route of its own, docker0, a
// management VXLAN). The links the node's configuration does make (the conflist's "bridge", flannel's
// flannel.1 while subnet.env exists) are deleted. Real links, in a network namespace of the test's own.
func TestALinkTheNodesCNIConfigurationDoesNotMakeIsNeverDeleted(t *testing.T) {
	nodetest.RequireRoot(t)
	root := nodetest.Root(t)
	ns := nodetest.NewNetns(t, filepath.Join(root, "netns"), "node")
	if err := nodetest.InNetns(t, ns, func() error {
		// eth0 carries the default route; the VXLAN device needs a parent.
		eth0 := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}
		for _, l := range []netlink.Link{eth0,
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cbr0"}},
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-storage"}},
			&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}},
		} {
			if err := netlink.LinkAdd(l); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		parent, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, v := range []string{"vxlan-mgmt", "flannel.1"} {
			vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: v}, VxlanId: 42 + len(v), VtepDevIndex: parent.Attrs().Index, Port: 4789 + len(v)}
			if err := netlink.LinkAdd(vx); err != nil {
				return err
			}
		}
		addr, _ := netlink.ParseAddr("192.168.50.1/24")
		if err := netlink.AddrAdd(parent, addr); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: parent.Attrs().Index, Gw: net.ParseIP("192.168.50.254")}); err != nil {
			return err
		}
		storage, err := netlink.LinkByName("br-storage")
		if err != nil {
			return err
		}
		saddr, _ := netlink.ParseAddr("10.200.0.1/24")
		if err := netlink.AddrAdd(storage, saddr); err != nil {
			return err
		}
		// The storage network's own static route.
		_, dst, _ := net.ParseCIDR("10.201.0.0/16")
		return netlink.RouteAdd(&netlink.Route{LinkIndex: storage.Attrs().Index, Dst: dst, Gw: net.ParseIP("10.200.0.254")})
	}); err != nil {
		t.Fatal(err)
	}
	// The node's CNI: a bridge plugin on cbr0 (a name of its own, not the default cni0).
	nodetest.Write(t, root, "/etc/cni/net.d/10-net.conflist", []byte(seedConflist("1.0.0", "cbr0", "/var/lib/cni/networks")), 0o644)
	// A file beside it that names the storage bridge: the runtime loads only the first, so it makes no link.
	nodetest.Write(t, root, "/etc/cni/net.d/20-storage.conflist", []byte(seedConflist("1.0.0", "br-storage", "/var/lib/cni/networks")), 0o644)
	env := step.Env{Root: host.Root(root), ConfDir: "/etc/cni/net.d", NetNS: ns}

	for _, name := range []string{"br-storage", "docker0", "vxlan-mgmt", "flannel.1", "cni0"} {
		_, err := DeleteLink(context.Background(), env, v1alpha1.PlanStep{Type: v1alpha1.StepDeleteLink, Link: name})
		if err == nil || !strings.Contains(err.Error(), "is not made by this node's CNI configuration") || !strings.Contains(err.Error(), name) {
			t.Fatalf("DeleteLink %s: want a refusal naming it, got %v", name, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("the refusal is one line: %q", err)
		}
	}
	// flannel.1 becomes the node's own once flanneld has written its subnet.env.
	nodetest.Write(t, root, "/run/flannel/subnet.env", []byte("FLANNEL_SUBNET=10.244.1.1/24\n"), 0o644)
	for _, name := range []string{"cbr0", "flannel.1"} {
		res, err := DeleteLink(context.Background(), env, v1alpha1.PlanStep{Type: v1alpha1.StepDeleteLink, Link: name})
		if err != nil || len(res.Actions) != 1 {
			t.Fatalf("DeleteLink %s, which the node's CNI makes: %+v %v", name, res, err)
		}
		apply(t, env, res)
	}
	h, err := netstate.Open(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := netstate.Links(h, []string{"cbr0", "flannel.1", "br-storage", "docker0", "vxlan-mgmt", "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if gone := l.Name == "cbr0" || l.Name == "flannel.1"; l.Exists == gone {
			t.Fatalf("link %s: exists=%v after the repairs", l.Name, l.Exists)
		}
	}
}

// TestAConfListThatIsALinkOutOfTheConfDirIsNeitherReadNorWrittenByThePreview: the preview shows what apply
// would refuse, and never reads a file through a link that leaves the allowed dirs (issue 13 finding 4: the
// diff's old side read the absolute link's target outside --host-root).
func TestAConfListThatIsALinkOutOfTheConfDirIsNeitherReadNorWrittenByThePreview(t *testing.T) {
	root := nodetest.Root(t)
	// A private file that happens to load as a network configuration, so that FixConfFileModes wants it 0644.
	nodetest.Write(t, root, "/etc/private.json", []byte(seedConflist("1.0.0", "cni0", "/var/lib/cni/networks")), 0o600)
	nodetest.Write(t, root, "/etc/cni/net.d/.keep", nil, 0o644)
	if err := os.Symlink("../../private.json", filepath.Join(root, "etc/cni/net.d/10-net.conflist")); err != nil {
		t.Fatal(err)
	}
	env := step.Env{Root: host.Root(root), ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}}
	plan := v1alpha1.Plan{Steps: []v1alpha1.PlanStep{{Type: v1alpha1.StepFixConfFileModes}}}
	p := Preview(context.Background(), env, plan)
	s := p.Steps[0]
	if !strings.Contains(s.Error, "/etc/cni/net.d/10-net.conflist is a symlink to /etc/private.json") || len(s.Changes) != 0 {
		t.Fatalf("preview of a fix through a link out of the conf dir: %+v", s)
	}
}
