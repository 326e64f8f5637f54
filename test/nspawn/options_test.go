package nspawn

import (
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// scratchDir is a directory for one test under the repository's .lab/tmp: files in /tmp have been seen to vanish
// on our shared machines.
func scratchDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", ".lab", "tmp", "nspawn-unit", t.Name())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		os.Remove(filepath.Dir(dir)) // the suite's folder, once its last test is done (fails while others remain)
	})
	return dir
}

func validOptions() Options {
	return Options{Name: "node-a", BaseRoot: "/base", StateDir: "/state/node-a"}
}

func TestValidate(t *testing.T) {
	if err := (&Options{Name: "node-a", BaseRoot: "/base", StateDir: "/state/node-a"}).validate(); err != nil {
		t.Fatalf("valid options rejected: %v", err)
	}
	cases := map[string]func(*Options){
		"upper-case name":        func(o *Options) { o.Name = "Node" },
		"name with a slash":      func(o *Options) { o.Name = "a/b" },
		"name ending in a dash":  func(o *Options) { o.Name = "node-" },
		"name too long":          func(o *Options) { o.Name = strings.Repeat("a", 41) },
		"relative base":          func(o *Options) { o.BaseRoot = "bin/node-rootfs" },
		"state dir is /":         func(o *Options) { o.StateDir = "/" },
		"comma in state dir":     func(o *Options) { o.StateDir = "/state/a,b" },
		"colon in base":          func(o *Options) { o.BaseRoot = "/base:x" },
		"relative bind":          func(o *Options) { o.Binds = []Bind{{HostPath: "kubelet"}} },
		"file without content":   func(o *Options) { o.Files = []File{{Path: "/etc/x"}} },
		"file with both sources": func(o *Options) { o.Files = []File{{Path: "/etc/x", Data: []byte{}, Source: "/y"}} },
		"relative file path":     func(o *Options) { o.Files = []File{{Path: "etc/x", Data: []byte{}}} },
		"unit with a path":       func(o *Options) { o.EnableUnits = []string{"../kubelet.service"} },
		"bridge name too long": func(o *Options) {
			o.Network = &Network{Bridge: "a-very-long-bridge", Address: netip.MustParsePrefix("10.0.0.2/24")}
		},
		"address without prefix": func(o *Options) {
			o.Network = &Network{Bridge: "br0", Address: netip.Prefix{}}
		},
		"IPv6 address": func(o *Options) { o.Network = &Network{Bridge: "br0", Address: netip.MustParsePrefix("fd00::2/64")} },
	}
	for name, mutate := range cases {
		o := validOptions()
		mutate(&o)
		if err := o.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNspawnPathEscapesSeparators(t *testing.T) {
	for in, want := range map[string]string{
		"/plain/path":    "/plain/path",
		"/with:colon":    `/with\:colon`,
		`/back\slash`:    `/back\\slash`,
		`/both\:already`: `/both\\\:already`,
	} {
		if got := nspawnPath(in); got != want {
			t.Errorf("nspawnPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNspawnArgs(t *testing.T) {
	o := validOptions()
	o.Binds = []Bind{{HostPath: "/bin/k8s/kubelet", NodePath: "/usr/local/bin/kubelet", ReadOnly: true}, {HostPath: "/srv/x"}}
	args := strings.Join(nspawnArgs(&o), "\n")
	for _, want := range []string{
		"--bind-ro=/bin/k8s/kubelet:/usr/local/bin/kubelet", "--bind=/srv/x:/srv/x",
		"--bind=/state/node-a/bus:/run/dbus", "--bind=/state/node-a/containerd:/var/lib/containerd",
		"--private-network", "--machine=node-a", "--directory=/state/node-a/root",
		"--system-call-filter=add_key keyctl request_key",
	} {
		if !strings.Contains("\n"+args+"\n", "\n"+want+"\n") {
			t.Errorf("nspawn args lack %q:\n%s", want, args)
		}
	}
	o.Network = &Network{Bridge: "br0", Address: netip.MustParsePrefix("10.0.0.2/24")}
	args = strings.Join(nspawnArgs(&o), "\n")
	if !strings.Contains(args, "--network-bridge=br0") || strings.Contains(args, "--private-network") {
		t.Errorf("bridged node args:\n%s", args)
	}
}

func TestNetworkdConfig(t *testing.T) {
	n := Network{Bridge: "br0", Address: netip.MustParsePrefix("10.213.0.11/24"), Gateway: netip.MustParseAddr("10.213.0.1")}
	got := string(n.networkdConfig())
	for _, want := range []string{"[Match]\nName=host0\n", "Address=10.213.0.11/24\n", "Gateway=10.213.0.1\n", "DHCP=no\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("networkd config lacks %q:\n%s", want, got)
		}
	}
	n.Gateway = netip.Addr{}
	if strings.Contains(string(n.networkdConfig()), "Gateway=") {
		t.Error("a gateway was written although none was given")
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:             "/a/b",
		`/with\040space`:   "/with space",
		`/tab\011and\134x`: "/tab\tand\\x",
		`/trailing\04`:     `/trailing\04`, // not a full escape: kept as is
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPlaceFiles(t *testing.T) {
	dir := scratchDir(t)
	root := filepath.Join(dir, "root")
	host := filepath.Join(dir, "host")
	for _, d := range []string{root + "/etc/systemd/system", root + "/usr/lib/systemd/system", root + "/usr/lib/cni", root + "/opt/cni", host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The base's relative link, as hack/node-rootfs.sh makes it.
	if err := os.Symlink("../../usr/lib/cni", root+"/opt/cni/bin"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root+"/usr/lib/systemd/system/getty@.service", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(host+"/plugin", []byte("binary"), 0o600); err != nil {
		t.Fatal(err)
	}

	o := validOptions()
	o.Files = []File{
		{Path: "/etc/systemd/system/kubelet.service", Data: []byte("[Service]\n")},
		{Path: "/opt/cni/bin/bridge", Source: host + "/plugin", Mode: 0o755}, // through the relative link
		{Path: "/var/lib/kubelet/config.yaml", Data: []byte("kind: KubeletConfiguration\n")},
	}
	o.EnableUnits = []string{"kubelet.service", "getty@tty1.service"}
	o.Network = &Network{Bridge: "br0", Address: netip.MustParsePrefix("10.0.0.2/24")}
	if err := placeFiles(root, &o); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(root + "/usr/lib/cni/bridge"); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("file through the relative link: %v, %v", fi, err)
	}
	if data, _ := os.ReadFile(root + "/var/lib/kubelet/config.yaml"); string(data) != "kind: KubeletConfiguration\n" {
		t.Errorf("file in a new directory reads %q", data)
	}
	if fi, err := os.Stat(root + "/etc/systemd/system/kubelet.service"); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("default mode: %v, %v", fi, err)
	}
	for link, want := range map[string]string{
		"kubelet.service":    "/etc/systemd/system/kubelet.service",
		"getty@tty1.service": "/usr/lib/systemd/system/getty@.service",
	} {
		if got, err := os.Readlink(root + "/etc/systemd/system/multi-user.target.wants/" + link); err != nil || got != want {
			t.Errorf("enable %s: link to %q (%v), want %q", link, got, err, want)
		}
	}
	if _, err := os.Stat(root + "/etc/systemd/system/network/10-cnimedic-host0.network"); err == nil {
		t.Error("networkd file in the wrong directory")
	}
	if data, err := os.ReadFile(root + "/etc/systemd/network/10-cnimedic-host0.network"); err != nil || !strings.Contains(string(data), "Address=10.0.0.2/24") {
		t.Errorf("networkd file: %q, %v", data, err)
	}

	// An absolute link in the base must never make us write on the host.
	if err := os.Symlink(host, root+"/escape"); err != nil {
		t.Fatal(err)
	}
	o = validOptions()
	o.Files = []File{{Path: "/escape/pwned", Data: []byte("x")}}
	if err := placeFiles(root, &o); err == nil {
		t.Error("a file was written through an absolute symlink")
	}
	if _, err := os.Stat(host + "/pwned"); err == nil {
		t.Fatal("placeFiles wrote outside the node's root")
	}
	o = validOptions()
	o.EnableUnits = []string{"missing.service"}
	if err := placeFiles(root, &o); err == nil || !strings.Contains(err.Error(), "no unit file missing.service") {
		t.Errorf("enabling a unit that does not exist: %v", err)
	}
}

func TestNodeCgroupDirs(t *testing.T) {
	dirs, err := nodeCgroupDirs("node-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !strings.HasPrefix(d, "/sys/fs/cgroup") || filepath.Base(d) != "cnimedic-nspawn-node-a" {
			t.Errorf("unexpected node cgroup %s", d)
		}
		if _, err := os.Stat(filepath.Dir(d)); err != nil {
			t.Errorf("parent of node cgroup %s: %v", d, err)
		}
	}
	mounts, err := readMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	var hierarchies int
	for _, m := range mounts {
		if m.fsType == "cgroup" || m.fsType == "cgroup2" {
			hierarchies++
		}
	}
	if len(dirs) != hierarchies {
		t.Errorf("a node cgroup in %d hierarchies, but %d are mounted: %v", len(dirs), hierarchies, dirs)
	}
}
