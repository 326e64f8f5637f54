package lab

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/cnimedic/cnimedic/hack/ociimage"
)

// The serving certificate must verify for the address the nodes and the in-cluster manager dial (the bridge), and
// a client certificate must carry the groups the API server authorizes by.
func TestPKI(t *testing.T) {
	ca, err := newCA()
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.issue(certRequest{CommonName: "kube-apiserver", Server: true, IPs: []net.IP{net.IPv4(10, 213, 0, 1)}, DNSNames: []string{"kubernetes.default.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)
	block, _ := pem.Decode(serving.Cert)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"10.213.0.1", "kubernetes.default.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.213.0.2"}); err == nil {
		t.Error("the serving certificate verifies for an address it does not carry")
	}
	node, err := ca.issue(certRequest{CommonName: "system:node:worker-1", Organization: []string{"system:nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubeconfig("https://10.213.0.1:6443", ca.Cert, "system:node:worker-1", node)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.Load(kc)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rest.Host != "https://10.213.0.1:6443" || len(rest.CAData) == 0 || len(rest.CertData) == 0 {
		t.Errorf("kubeconfig does not carry the server and embedded certificates: %+v", rest)
	}
	block, _ = pem.Decode(node.Cert)
	nc, _ := x509.ParseCertificate(block.Bytes)
	if nc.Subject.CommonName != "system:node:worker-1" || len(nc.Subject.Organization) != 1 || nc.Subject.Organization[0] != "system:nodes" {
		t.Errorf("node certificate subject %v", nc.Subject)
	}
	if _, err := nc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("node client certificate: %v", err)
	}
}

// Workers get distinct addresses on the bridge and distinct pod ranges.
func TestNodes(t *testing.T) {
	cfg := Default("/repo")
	cfg.Workers, cfg.K3sAgents = 3, 0
	seenAddr, seenCIDR := map[netip.Addr]bool{}, map[netip.Prefix]bool{}
	for _, n := range cfg.Nodes() {
		if !cfg.HostAddr.Contains(n.Address.Addr()) || n.Address.Addr() == cfg.HostAddr.Addr() {
			t.Errorf("%s at %s: not a free address of the bridge %s", n.Name, n.Address, cfg.HostAddr)
		}
		if seenAddr[n.Address.Addr()] || seenCIDR[n.PodCIDR] {
			t.Errorf("%s shares an address or pod range", n.Name)
		}
		seenAddr[n.Address.Addr()], seenCIDR[n.PodCIDR] = true, true
	}
	if len(seenAddr) != 3 {
		t.Fatalf("want 3 nodes, got %d", len(seenAddr))
	}
}

// The leaked leases fill every free address of the range in host-local's format and leave live leases alone;
// removing them removes only them.
func TestLeakedLeases(t *testing.T) {
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	spec := NodeSpec{PodCIDR: netip.MustParsePrefix("10.244.1.0/24")}
	ipam := filepath.Join(dir, NodeIPAMDir)
	if err := os.MkdirAll(ipam, 0o755); err != nil {
		t.Fatal(err)
	}
	live := "real-sandbox-id\r\neth0"
	if err := os.WriteFile(filepath.Join(ipam, "10.244.1.7"), []byte(live), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := leakLeases(r, spec); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(ipam)
	// .2 to .254 (the gateway .1, the network and broadcast addresses are not leased): 253 addresses.
	if len(entries) != 253 {
		t.Errorf("%d leases, want 253 (.2-.254)", len(entries))
	}
	for _, bad := range []string{"10.244.1.0", "10.244.1.1", "10.244.1.255"} {
		if _, err := os.Stat(filepath.Join(ipam, bad)); err == nil {
			t.Errorf("%s leased", bad)
		}
	}
	data, _ := os.ReadFile(filepath.Join(ipam, "10.244.1.9"))
	if id, ifname, ok := strings.Cut(string(data), "\r\n"); !ok || len(id) != 64 || ifname != "eth0" {
		t.Errorf("lease format %q: want host-local's <64 hex id>\\r\\n<ifname>", data)
	}
	if err := removeLeakedLeases(r); err != nil {
		t.Fatal(err)
	}
	entries, _ = os.ReadDir(ipam)
	if len(entries) != 1 {
		t.Fatalf("%d leases after the removal, want only the live one", len(entries))
	}
	if got, _ := os.ReadFile(filepath.Join(ipam, "10.244.1.7")); string(got) != live {
		t.Errorf("the live lease changed: %q", got)
	}
}

// A conflist is replaced atomically: no temporary file is left, and the temporary name never ends in .conflist
// (containerd would load a half-written one).
func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := HealthyConfList(NodeSpec{PodCIDR: netip.MustParsePrefix("10.244.2.0/24")})
	if err := writeAtomic(r, NodeConfList, c.marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, filepath.Dir(NodeConfList)))
	if len(entries) != 1 || entries[0].Name() != filepath.Base(NodeConfList) {
		t.Fatalf("conf dir holds %v", entries)
	}
	var back ConfList
	data, _ := os.ReadFile(filepath.Join(dir, NodeConfList))
	if err := json.Unmarshal(data, &back); err != nil || back.CNIVersion != HealthyCNIVersion || back.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.2.0/24" {
		t.Errorf("conflist %s (%v)", data, err)
	}
	if changed, err := writeIfDifferentReport(r, NodeConfList, c.marshal(), 0o644); err != nil || changed {
		t.Errorf("rewriting the same content reported a change (%v)", err)
	}
}

// The kubelet configuration carries the settings measured on this machine kind.
func TestKubeletConfig(t *testing.T) {
	l := &Lab{cfg: Default("/repo")}
	data, err := l.kubeletConfigYAML(Default("/repo").Nodes()[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"failCgroupV1": false, "failSwapOn": false, "cgroupDriver": "cgroupfs", "kind": "KubeletConfiguration"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	unit := string(l.kubeletUnit(Default("/repo").Nodes()[0]))
	for _, want := range []string{"--node-ip=10.213.0.11", "--hostname-override=worker-1", "Wants=containerd.service"} {
		if !strings.Contains(unit, want) {
			t.Errorf("kubelet unit lacks %s:\n%s", want, unit)
		}
	}
}

// Exec lines take only arguments that need no quoting: anything else would be split or expanded by systemd.
func TestExecLineRefusesShellText(t *testing.T) {
	for _, bad := range []string{"a b", "$HOME", "50%", "x;y", ""} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("execLine accepted %q", bad)
				}
			}()
			execLine("/bin/true", bad)
		}()
	}
}

// The default lab has a third worker whose layout emulates a k3s agent: k3s-agent.service as install.sh writes it
// (KillMode=process, so a stop leaves the containers), no kubelet.service, Debian's containerd.service masked, and
// containerd's template, conflist and kubelet pointed at k3s's paths.
func TestTheDefaultLabHasAK3sAgentNodeLaidOutAsK3sLaysItOut(t *testing.T) {
	cfg := Default("/repo")
	nodes := cfg.Nodes()
	if len(nodes) != 3 || nodes[2].Name != "worker-3" || !nodes[2].IsK3s() || nodes[0].IsK3s() || nodes[1].IsK3s() {
		t.Fatalf("nodes %+v: want worker-1 and worker-2 kubeadm-style and worker-3 a k3s agent", nodes)
	}
	n := nodes[2]
	l := &Lab{cfg: cfg}
	opts, err := l.bootOptions(n, ociimage.Index{}, nodePKI{})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range opts.Files {
		files[f.Path] = string(f.Data)
	}
	if _, ok := files["/etc/systemd/system/kubelet.service"]; ok {
		t.Error("the k3s node has a kubelet.service")
	}
	if m, ok := files["/etc/systemd/system/containerd.service"]; !ok || m != "" {
		t.Errorf("Debian's containerd.service is not masked (an empty unit file): %q", m)
	}
	unit := files["/etc/systemd/system/k3s-agent.service"]
	for _, want := range []string{"Type=exec", "KillMode=process", "Delegate=yes", "Restart=always", "--hostname-override=worker-3"} {
		if !strings.Contains(unit, want) {
			t.Errorf("k3s-agent.service lacks %s:\n%s", want, unit)
		}
	}
	if !slices.Equal(opts.EnableUnits, []string{K3sUnit}) {
		t.Errorf("enabled units %v, want only %s", opts.EnableUnits, K3sUnit)
	}
	tmpl := files[K3sContainerdTemplate]
	for _, want := range []string{`conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"`, `bin_dir = "/var/lib/rancher/k3s/data/current/bin"`} {
		if !strings.Contains(tmpl, want) {
			t.Errorf("the template lacks %s", want)
		}
	}
	if _, ok := files["/var/lib/rancher/k3s/agent/etc/cni/net.d/10-lab.conflist"]; !ok {
		t.Error("no conflist in k3s's conf dir")
	}
	if !strings.Contains(files[nodeKubeletConfig], "unix:///run/k3s/containerd/containerd.sock") {
		t.Errorf("kubelet is not pointed at k3s's socket:\n%s", files[nodeKubeletConfig])
	}
	script := files[k3sAgentBin]
	for _, want := range []string{"--address /run/k3s/containerd/containerd.sock", "--state /run/k3s/containerd", "--root /var/lib/rancher/k3s/agent/containerd",
		"config.toml.tmpl", "ln -sfn " + k3sDataID + " /var/lib/rancher/k3s/data/current"} {
		if !strings.Contains(script, want) {
			t.Errorf("the emulation's start lacks %q", want)
		}
	}
	if got := n.RuntimeConfigSource(); got != K3sContainerdTemplate {
		t.Errorf("faults edit %s on k3s, want the template", got)
	}
}
