package step

import (
	"path/filepath"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/node"
)

// The file allowlist follows the detected layout: on a k3s agent, the generated config and the template it is
// generated from, the k3s CNI dirs, and nothing of kubeadm's (/etc/containerd/config.toml, /etc/cni/net.d); on a
// node with a containerd drop-in, the drop-in too.
func TestTheFileAllowlistIsTheDetectedLayoutsFiles(t *testing.T) {
	for _, tc := range []struct {
		tree           string
		allowed, other []string
	}{
		{"k3s-agent", []string{
			"/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
			"/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl",
			"/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist",
			"/var/lib/rancher/k3s/data/current/bin/bridge",
		}, []string{"/etc/containerd/config.toml", "/etc/cni/net.d/10-flannel.conflist", "/var/lib/rancher/k3s/agent/etc/containerd/other.toml"}},
		{"containerd-dropins", []string{"/etc/containerd/config.toml", "/etc/containerd/conf.d/50-cni.toml", "/etc/cni/custom.d/10-custom.conflist"},
			[]string{"/etc/containerd/conf.d/60-other.toml", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"}},
	} {
		t.Run(tc.tree, func(t *testing.T) {
			dir, err := filepath.Abs(filepath.Join("..", "node", "testdata", tc.tree))
			if err != nil {
				t.Fatal(err)
			}
			env := node.Complete(node.Settings{Root: host.Root(dir)})
			paths, err := NewPaths(env)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.allowed {
				if _, err := paths.Resolve(p); err != nil {
					t.Errorf("%s refused: %v", p, err)
				}
			}
			for _, p := range tc.other {
				if _, err := paths.Resolve(p); err == nil {
					t.Errorf("%s allowed on %s", p, tc.tree)
				}
			}
		})
	}
}
