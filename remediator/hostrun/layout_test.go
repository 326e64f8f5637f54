package hostrun

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/node"
)

func fixture(t *testing.T, name string) host.Root {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "node", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return host.Root(dir)
}

// The host-side run completes what the pod left empty from the node it runs on (the pod does not mount the host's
// files): on a k3s agent, k3s's socket, config and CNI dirs. Units the pod was given that are not the node's
// (kubeadm's, on a k3s node) are a contradiction HostRun refuses before it stops anything.
func TestTheHostSideRunCompletesItsSettingsOnTheHostAndCatchesForeignUnits(t *testing.T) {
	root := fixture(t, "k3s-agent")
	cfg := fillFromHost(context.Background(), root, Config{CriticalUnits: []string{"k3s-agent.service"}})
	if cfg.CRIEndpoint != node.RancherSocket || cfg.ContainerdConfig != node.K3sDir+"/agent/etc/containerd/config.toml" ||
		cfg.ConfDir != node.K3sDir+"/agent/etc/cni/net.d" || !slices.Equal(cfg.BinDirs, []string{node.K3sDir + "/data/current/bin"}) ||
		cfg.UnitsContradict || cfg.Layout == nil || cfg.Layout.RuntimeConfigTemplate == "" {
		t.Fatalf("completed on the host: %+v", cfg.Settings)
	}
	// A recovery without the run's settings starts the node's own unit on the way out, not kubeadm's.
	if cfg := completeOnHost(root, Config{}); !slices.Equal(cfg.CriticalUnits, []string{"k3s-agent.service"}) {
		t.Fatalf("critical units without settings: %v", cfg.CriticalUnits)
	}
	cfg = fillFromHost(context.Background(), root, Config{CriticalUnits: []string{"containerd.service", "kubelet.service"}})
	if !cfg.UnitsContradict || len(cfg.Contradictions) == 0 {
		t.Fatalf("kubeadm's units on a k3s node are not caught: %+v", cfg.Settings)
	}
}
