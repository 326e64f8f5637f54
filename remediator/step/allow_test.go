package step

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/remediator/host"
)

func mkfile(t *testing.T, root host.Root, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(root.Path(p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.Path(p), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, root host.Root, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(root.Path(p)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, root.Path(p)); err != nil {
		t.Fatal(err)
	}
}

// TestTheNodesPathsAllowOnlyItsCNIAndRuntimeFilesAndNoLinkLeadingOut: a file is allowed under the node's conf and
// bin dirs, IPAM and cache dirs and containerd's config file, and through a link only when the link stays in
// them. An absolute link target is the host's path: under --host-root it is resolved inside the root, and refused
// when it names a host file outside the allowed dirs.
func TestTheNodesPathsAllowOnlyItsCNIAndRuntimeFilesAndNoLinkLeadingOut(t *testing.T) {
	root := host.Root(t.TempDir())
	mkfile(t, root, "/etc/cni/net.d/10-net.conflist")
	mkfile(t, root, "/usr/lib/cni/bridge")
	mkfile(t, root, "/etc/passwd")
	symlink(t, root, "/usr/lib/cni/bridge", "/opt/cni/bin/bridge")
	symlink(t, root, "/etc/passwd", "/opt/cni/bin/loopback")
	symlink(t, root, "../../../../../../../../etc/passwd", "/opt/cni/bin/portmap")
	symlink(t, root, "../../../etc/containerd/config.toml", "/opt/cni/bin/tuning")
	symlink(t, root, "/etc/cni/net.d/10-net.conflist", "/etc/cni/net.d/20-alias.conflist")
	a, err := NewPaths(Env{Root: root, ConfDir: "/etc/cni/net.d", BinDirs: []string{"/opt/cni/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"/etc/cni/net.d/10-net.conflist":   "/etc/cni/net.d/10-net.conflist",
		"/etc/cni/net.d/20-alias.conflist": "/etc/cni/net.d/10-net.conflist",
		"/etc/cni/net.d/new.conflist":      "/etc/cni/net.d/new.conflist",
		"/opt/cni/bin/bridge":              "/usr/lib/cni/bridge",
		"/var/lib/cni/networks/n/10.0.0.2": "/var/lib/cni/networks/n/10.0.0.2",
		"/var/lib/cni/results/x":           "/var/lib/cni/results/x",
		"/etc/containerd/config.toml":      "/etc/containerd/config.toml",
	} {
		local, err := a.Resolve(p)
		if err != nil || local != root.Path(want) {
			t.Fatalf("%s: %q %v, want %s", p, local, err, want)
		}
	}
	for p, want := range map[string]string{
		"/etc/cron.d/cnimedic":          "/etc/cron.d/cnimedic is outside the files cnimedic may change",
		"/etc/cni/net.d/../../passwd":   "is not a clean absolute host path",
		"/etc/cni/net.d":                "outside the files",
		"/opt/cni/bin/loopback":         "/opt/cni/bin/loopback is a symlink to /etc/passwd",
		"/opt/cni/bin/portmap":          "/opt/cni/bin/portmap is a symlink to /etc/passwd",
		"/opt/cni/bin/tuning":           "/opt/cni/bin/tuning is a symlink to /etc/containerd/config.toml",
		"/etc/containerd/other.toml":    "outside the files",
		"/var/lib/cnimedic/journal/x/y": "outside the files",
	} {
		if _, err := a.Resolve(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want %q", p, err, want)
		}
	}

	// The node's own dirs must lie under the known roots, as configured and as their links resolve.
	symlink(t, root, "/etc", "/etc/cni/evil.d")
	for _, c := range []struct {
		env  Env
		want string
	}{
		{Env{Root: root, BinDirs: []string{"/etc/cron.d"}}, "bin dir /etc/cron.d is not under a directory cnimedic may change"},
		{Env{Root: root, ConfDir: "/etc/cni/evil.d"}, "conf dir /etc/cni/evil.d is a symlink to /etc"},
		{Env{Root: root, ContainerdConfig: "/etc/cron.d/x"}, "containerd config: /etc/cron.d/x is not a file under a containerd config directory"},
		{Env{Root: root, IPAMDataDir: "/etc"}, "IPAM data dir /etc is not under"},
	} {
		if _, err := NewPaths(c.env); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.env, err, c.want)
		}
	}
}

// TestContainerdSettingsOutsideTheKnownRootsAreRefused: what RepairRuntimeCNIConfig would write into
// containerd's config decides where the runtime, and the repairs after it, look.
func TestContainerdSettingsOutsideTheKnownRootsAreRefused(t *testing.T) {
	ok := []v1alpha1.ContainerdCNISpec{
		{BinDir: "/opt/cni/bin", ConfDir: "/etc/cni/net.d", ConfigPath: "/etc/containerd/config.toml", ConfTemplate: "10-calico.conflist"},
		{BinDir: "/var/lib/rancher/k3s/data/current/bin", ConfDir: "/var/lib/rancher/k3s/agent/etc/cni/net.d", ConfigPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"},
		{BinDir: "/home/kubernetes/bin", ConfTemplate: "/etc/cni/net.d/template"},
	}
	for _, s := range ok {
		if err := CheckRuntimeSpec(&s); err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
	}
	for _, c := range []struct {
		s    v1alpha1.ContainerdCNISpec
		want string
	}{
		{v1alpha1.ContainerdCNISpec{BinDir: "/etc/cron.d"}, "bin_dir: /etc/cron.d is not under a CNI directory"},
		{v1alpha1.ContainerdCNISpec{ConfDir: "/etc/cnix"}, "conf_dir: /etc/cnix"},
		{v1alpha1.ContainerdCNISpec{ConfigPath: "/etc/containerd"}, "configPath: /etc/containerd is not a file"},
		{v1alpha1.ContainerdCNISpec{ConfigPath: "/root/config.toml"}, "configPath: /root/config.toml"},
		{v1alpha1.ContainerdCNISpec{ConfTemplate: "../../shadow"}, "conf_template: ../../shadow"},
		{v1alpha1.ContainerdCNISpec{ConfTemplate: "/etc/shadow"}, "conf_template: /etc/shadow"},
	} {
		if err := CheckRuntimeSpec(&c.s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
}
