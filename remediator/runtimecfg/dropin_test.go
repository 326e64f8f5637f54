package runtimecfg

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		l := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(l, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A drop-in that sets conf_dir is the value containerd runs with (containerd's own
// cmd/containerd/server/config/config_test.go, TestMergingPluginsWithTwoCriCniDropInConfigs: keys of one plugin table
// merge, a later file's key wins); drop-ins come in containerd's order: a glob expanded lexically, relative paths
// against the importing file's directory, each file once.
func TestADropInOverridingConfDirIsFollowed(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"/etc/containerd/config.toml": `version = 2
imports = ["/etc/containerd/conf.d/*.toml", "extra.toml"]
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
`,
		"/etc/containerd/conf.d/20-cni.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  conf_dir = "/etc/cni/first.d"
`,
		"/etc/containerd/conf.d/30-cni.toml": `version = 2
imports = ["/etc/containerd/conf.d/20-cni.toml"]
[plugins."io.containerd.grpc.v1.cri".cni]
  conf_dir = "/etc/cni/custom.d"
`,
		"/etc/containerd/extra.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  max_conf_num = 2
`,
	})
	c := Read(host.Root(root), "/etc/containerd/config.toml")
	if c.Settings.ConfDir != "/etc/cni/custom.d" || c.SourceOf("conf_dir") != "/etc/containerd/conf.d/30-cni.toml" {
		t.Fatalf("conf_dir %s from %s, want /etc/cni/custom.d from 30-cni.toml", c.Settings.ConfDir, c.SourceOf("conf_dir"))
	}
	if c.Settings.MaxConfNum != 2 || c.SourceOf("max_conf_num") != "/etc/containerd/extra.toml" {
		t.Fatalf("max_conf_num %d from %s", c.Settings.MaxConfNum, c.SourceOf("max_conf_num"))
	}
	if !slices.Equal(c.Settings.BinDirs, []string{"/opt/cni/bin"}) || c.SourceOf("bin_dir") != "/etc/containerd/config.toml" {
		t.Fatalf("bin dirs %v from %s", c.Settings.BinDirs, c.SourceOf("bin_dir"))
	}
	want := []string{"/etc/containerd/conf.d/20-cni.toml", "/etc/containerd/conf.d/30-cni.toml", "/etc/containerd/extra.toml"}
	if !slices.Equal(c.DropIns, want) || len(c.DropInErrors) != 0 {
		t.Fatalf("drop-ins %v (errors %v), want %v", c.DropIns, c.DropInErrors, want)
	}
}

// Each file's CNI table is read by its own version, as containerd migrates each file before merging: a version 2
// main file and a version 3 drop-in; and a drop-in containerd cannot load is reported.
func TestDropInsAreReadByTheirOwnVersion(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"/etc/containerd/config.toml": `version = 3
imports = ["/etc/containerd/conf.d/*.toml", "/etc/containerd/missing.toml"]
`,
		"/etc/containerd/conf.d/10-bin.toml": `version = 2
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/home/kubernetes/bin"
`,
		"/etc/containerd/conf.d/20-bin.toml": `version = 3
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
`,
		"/etc/containerd/conf.d/30-bad.toml": "[plugins\n",
	})
	c := Read(host.Root(root), "/etc/containerd/config.toml")
	if !slices.Equal(c.Settings.BinDirs, []string{"/opt/cni/bin", "/usr/lib/cni"}) || c.SourceOf("bin_dirs") != "/etc/containerd/conf.d/20-bin.toml" {
		t.Fatalf("bin dirs %v from %s", c.Settings.BinDirs, c.SourceOf("bin_dirs"))
	}
	if _, ok := c.Sources["bin_dir"]; ok {
		t.Fatalf("bin_dir still named as a source after bin_dirs replaced it: %v", c.Sources)
	}
	if len(c.DropInErrors) != 2 {
		t.Fatalf("want the bad and the missing drop-in reported, got %v", c.DropInErrors)
	}
}
