package hostrun

import (
	"context"
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
	var seen step.Env
	verifier := func(_ context.Context, env step.Env) (string, error) { seen = env; return "ok", nil }
	before := step.Env{ConfDir: "/etc/cni/calico.d", BinDirs: []string{"/opt/cni/bin"}}

	write("/etc/cni/calico.d")
	v := verifyCurrentDirs(verifier, host.Root(root), "/etc/containerd/config.toml", true, true)
	write("/etc/cni/net.d") // what the repair did
	if _, err := v(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	if seen.ConfDir != "/etc/cni/net.d" {
		t.Errorf("verified conf dir %q, want the repaired /etc/cni/net.d", seen.ConfDir)
	}

	explicit := verifyCurrentDirs(verifier, host.Root(root), "/etc/containerd/config.toml", false, false)
	if _, err := explicit(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	if seen.ConfDir != "/etc/cni/calico.d" {
		t.Errorf("an explicit --conf-dir was replaced by containerd's: %q", seen.ConfDir)
	}
}
