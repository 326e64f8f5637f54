package lab

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
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
	cfg.Workers = 3
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
	data, err := l.kubeletConfigYAML()
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
