package hostrun

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/step"
)

// A repair of containerd's CNI settings moves conf_dir: the verification must look where containerd reads after
// the repair, not at the dir read before it (measured on the lab: verifying the old one rolled back a repair that
// had worked). Dirs given explicitly are left alone.
func TestVerifyCurrentDirs(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, "etc/containerd/config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(confDir string) {
		data := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/opt/cni/bin\"\n  conf_dir = \"" + confDir + "\"\n"
		if err := os.WriteFile(cfg, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := step.Env{ConfDir: "/etc/cni/calico.d", BinDirs: []string{"/opt/cni/bin"}}

	write("/etc/cni/calico.d")
	refresh := currentDirs(host.Root(root), "/etc/containerd/config.toml", true, true)
	write("/etc/cni/net.d") // what the repair did
	if seen := refresh(before); seen.ConfDir != "/etc/cni/net.d" {
		t.Errorf("verified conf dir %q, want the repaired /etc/cni/net.d", seen.ConfDir)
	}
	if explicit := currentDirs(host.Root(root), "/etc/containerd/config.toml", false, false); explicit != nil {
		t.Errorf("explicit --conf-dir and --bin-dir are refreshed from containerd's config")
	}
}
