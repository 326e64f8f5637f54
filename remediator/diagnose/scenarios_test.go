package diagnose

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// Each seed scenario laid out as a node directory; diagnose must name the failure, its signature and, in text,
// say it in words. The runtime is not asked here (files and plugins alone); TestDiagnoseARealRuntime asks a real one.

func run(t *testing.T, root string, o Options) (Report, string) {
	t.Helper()
	o.Root = host.Root(root)
	o.SkipRuntime = o.SkipRuntime || o.CRIEndpoint == ""
	if o.NetNS == "" {
		o.NetNS = nodetest.NewNetns(t, filepath.Join(root, "run", "test-netns"), "links")
	}
	r := Run(context.Background(), o)
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	return r, b.String()
}

// expect finds a finding of the signature and severity whose summary holds every phrase, and checks the text
// report carries the summary too.
func expect(t *testing.T, r Report, text string, sig v1alpha1.SignatureID, sev Severity, phrases ...string) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Signature != sig || f.Severity != sev {
			continue
		}
		ok := true
		for _, p := range phrases {
			ok = ok && strings.Contains(f.Summary, p)
		}
		if ok {
			if !strings.Contains(text, f.Summary) {
				t.Errorf("the text report lacks %q", f.Summary)
			}
			return f
		}
	}
	t.Fatalf("no %s %s finding with %q; findings:\n%s", sev, sig, phrases, text)
	return Finding{}
}

func TestDiagnoseVersionIncompatible(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Old, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	nodetest.Write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", nodetest.BridgeConflist("1.0.0", "cni0", "10.88.0.0/16", "/var/lib/cni/networks"), 0o644)
	r, text := run(t, root, Options{})
	f := expect(t, r, text, sigIncompatible, Error, `asks for CNI version 1.0.0`, `bridge (/opt/cni/bin/bridge) supports only 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0`,
		`incompatible CNI versions; config is "1.0.0", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0"]`)
	if !strings.Contains(f.Repair, "set cniVersion to 0.4.0") {
		t.Errorf("repair: %q", f.Repair)
	}
	expect(t, r, text, sigIncompatible, Error, "The loopback plugin", "configures the loopback interface with CNI 1.0.0")
	if len(r.ConfLists) != 1 || !r.ConfLists[0].Loaded || r.ConfLists[0].Highest != "0.4.0" || r.CNI11.Plugins {
		t.Fatalf("report: %+v %+v", r.ConfLists, r.CNI11)
	}
}

func TestDiagnoseVersionMissing(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	nodetest.Write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", nodetest.BridgeConflist("", "cni0", "10.88.0.0/16", "/var/lib/cni/networks"), 0o644)
	r, text := run(t, root, Options{})
	f := expect(t, r, text, sigMissing, Error, "has no cniVersion", `invalid version "": the version is empty`)
	if !strings.Contains(f.Repair, "1.0.0 is the highest version every plugin of its chain supports") {
		t.Errorf("repair: %q", f.Repair)
	}
	if !TeardownBug("1.6.3") || TeardownBug("1.6.4") || TeardownBug("1.5.9") || !TeardownBug("v1.6.0") || TeardownBug("2.0.0") {
		t.Error("containerd 1.6.0-1.6.3 and only those have the teardown bug")
	}
}

func TestDiagnoseNotInitialized(t *testing.T) {
	t.Run("empty conf dir", func(t *testing.T) {
		root := nodetest.Root(t)
		nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "loopback")
		r, text := run(t, root, Options{})
		f := expect(t, r, text, sigNotInitialized, Error, "No network configuration in /etc/cni/net.d", "nor anywhere else cnimedic looks", `"cni plugin not initialized"`)
		if f.Fix != v1alpha1.ActionEscalate {
			t.Errorf("fix %q: nothing on the node can repair an empty conf dir, so the manager must escalate without a drain", f.Fix)
		}
	})
	t.Run("calico seed: conf_dir and conf_template wrong", func(t *testing.T) {
		root := nodetest.Root(t)
		nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "loopback", "portmap")
		nodetest.Write(t, root, "/etc/cni/net.d/10-calico.conflist", []byte(`{"name":"k8s-pod-network","cniVersion":"0.3.1","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}`), 0o644)
		nodetest.Write(t, root, "/etc/containerd/config.toml", []byte(`version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d.calico"
  conf_template = "/etc/cni/net.d/10-calico.conflist.template"
  max_conf_num = 1
`), 0o644)
		r, text := run(t, root, Options{})
		f := expect(t, r, text, sigNotInitialized, Error, "No network configuration in /etc/cni/net.d.calico", "while /etc/cni/net.d holds some")
		if f.Fix != v1alpha1.ActionRepairRuntimeCNIConfig {
			t.Errorf("fix %q: pointing containerd at /etc/cni/net.d repairs this node", f.Fix)
		}
		expect(t, r, text, sigNotInitialized, Error, "conf_template names /etc/cni/net.d/10-calico.conflist.template, which does not exist")
		if !strings.Contains(text, `conf_dir /etc/cni/net.d.calico, conf_template "/etc/cni/net.d/10-calico.conflist.template", max_conf_num 1`) {
			t.Errorf("the text must show containerd's CNI settings:\n%s", text)
		}
	})
	t.Run("a file that does not load comes first", func(t *testing.T) {
		root := nodetest.Root(t)
		nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
		nodetest.Write(t, root, "/etc/cni/net.d/05-broken.conflist", []byte(`{"cniVersion": "1.0.0", "name": "x", "plugins": [`), 0o644)
		nodetest.Write(t, root, "/etc/cni/net.d/10-containerd-net.conflist", nodetest.BridgeConflist("1.0.0", "cni0", "10.88.0.0/16", "/var/lib/cni/networks"), 0o600)
		r, text := run(t, root, Options{})
		f := expect(t, r, text, sigConfigInvalid, Error, "/etc/cni/net.d/05-broken.conflist does not load", "stops at the first file that does not load")
		if !strings.Contains(f.Repair, "RestoreConfList") || r.Selection.Blocking != 0 || len(r.Selection.Loaded) != 0 {
			t.Errorf("finding %+v selection %+v", f, r.Selection)
		}
		expect(t, r, text, sigNotInitialized, Warning, "10-containerd-net.conflist has mode 0600")
	})
}

func TestDiagnoseFlannelBinaryMissing(t *testing.T) {
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	nodetest.Write(t, root, "/etc/cni/net.d/10-flannel.conflist", []byte(`{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`), 0o644)
	r, text := run(t, root, Options{})
	f := expect(t, r, text, sigBinaryMissing, Error, `Plugin "flannel" used by /etc/cni/net.d/10-flannel.conflist is not in /opt/cni/bin`, `failed to find plugin "flannel" in path`, "network provider")
	if !strings.Contains(f.Repair, "DaemonSet") || !strings.Contains(f.Repair, "never installs or replaces a vendor plugin") {
		t.Errorf("repair: %q", f.Repair)
	}
	if !strings.Contains(text, "flannel      vendor    MISSING") {
		t.Errorf("text:\n%s", text)
	}
}

func TestDiagnoseStaleCNI0Address(t *testing.T) {
	nodetest.RequireRoot(t)
	root := nodetest.Root(t)
	nodetest.CopyPlugins(t, nodetest.Debian, root, "/opt/cni/bin", "bridge", "host-local", "portmap", "loopback")
	nodetest.Write(t, root, "/run/flannel/subnet.env", []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n"), 0o644)
	ns := nodetest.NewNetns(t, filepath.Join(root, "run", "test-netns"), "links")
	if err := nodetest.InNetns(t, ns, func() error {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.244.5.1/24") // the node's subnet before flannel gave it another
		return netlink.AddrAdd(br, addr)
	}); err != nil {
		t.Fatal(err)
	}
	r, text := run(t, root, Options{Settings: node.Settings{NetNS: ns}})
	f := expect(t, r, text, sigStaleState, Error, "Link cni0 carries 10.244.5.1/24 but should carry 10.244.1.1/24", `already has an IP address different from 10.244.1.1/24`)
	if !strings.Contains(f.Repair, "DeleteLink") {
		t.Errorf("repair: %q", f.Repair)
	}
}

// TestDiagnoseARealRuntime: a real containerd says NetworkReady=false with an empty conf dir; then, with a tiny
// range, one live sandbox and leases leaked by sandboxes that are gone, the range is exhausted and diagnose says how
// many addresses a reclaim frees, and names the stale network namespace.
func TestDiagnoseARealRuntime(t *testing.T) {
	n := nodetest.StartNode(t, nodetest.Debian)
	o := Options{Settings: node.Settings{CRIEndpoint: n.SocketHostPath(), IPAMDataDir: n.IPAMDir, NetnsDir: n.NetnsHostDir(), ProcDir: "/proc",
		NetNS: nodetest.NewNetns(t, n.Local("/run/test-links"), "links")}}
	r, text := run(t, n.Root, o)
	expect(t, r, text, sigNotInitialized, Error, "NetworkReady=false", "cni plugin not initialized")
	if r.Containerd.Version == "" || r.Containerd.TeardownBug || r.CNI11.Runtime == nil || *r.CNI11.Runtime {
		t.Fatalf("containerd: %+v cni11 %+v", r.Containerd, r.CNI11)
	}

	// 10.95.0.0/29: host-local hands out .2-.6 (the gateway .1 and the broadcast .7 excluded): 5 addresses.
	nodetest.Write(t, n.Root, "/etc/cni/net.d/10-containerd-net.conflist", nodetest.BridgeConflist("1.0.0", "cnmdiag0", "10.95.0.0/29", n.Local(n.IPAMDir)), 0o644)
	deadline := time.Now().Add(15 * time.Second)
	for r.Runtime == nil || !r.Runtime.NetworkReady {
		if time.Now().After(deadline) {
			t.Fatalf("never NetworkReady:\n%s", text)
		}
		time.Sleep(100 * time.Millisecond)
		r, text = run(t, n.Root, o)
	}
	n.Containerd.ImportPause(t)
	id := n.Containerd.RunSandbox(t, n.Containerd.CRI(t), "live")
	for i := 0; i < 4; i++ {
		ip := fmt.Sprintf("10.95.0.%d", 6-i)
		nodetest.Write(t, n.Root, filepath.Join(n.IPAMDir, "containerd-net", ip), []byte(fmt.Sprintf("gone%060d\r\neth0", i)), 0o644)
	}
	nodetest.NewNetns(t, n.Containerd.NetnsDir, "cni-stale")

	r, text = run(t, n.Root, o)
	f := expect(t, r, text, sigIPAMExhausted, Error, `Network "containerd-net" has no free address: 5 of 5 addresses of range set 10.95.0.1-10.95.0.6`)
	if !strings.Contains(f.Repair, "4 of them belong to sandboxes that no longer exist") {
		t.Errorf("repair: %q", f.Repair)
	}
	for _, l := range r.IPAM[0].Leaked {
		if l.ContainerID == id {
			t.Fatalf("the live sandbox's lease is reported leaked: %+v", l)
		}
	}
	expect(t, r, text, sigStaleState, Warning, "1 network namespace(s) belong to no live sandbox", "cni-stale")
	if len(r.Sandboxes) != 1 || r.Sandboxes[0].ID != id {
		t.Fatalf("sandboxes: %+v", r.Sandboxes)
	}
	t.Logf("diagnose -o text:\n%s", text)
}
