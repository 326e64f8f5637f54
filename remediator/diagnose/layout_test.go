package diagnose

import (
	"strings"
	"testing"

	"github.com/cnimedic/cnimedic/remediator/host"
	"github.com/cnimedic/cnimedic/remediator/node"
	"github.com/cnimedic/cnimedic/test/nodetest"
)

// On a k3s agent whose containerd reads an empty conf dir while k3s's own holds flannel's conflist, the diagnosis
// names k3s's conf dir, not containerd's /etc/cni/net.d, as the one to point containerd back to; it reports the
// layout, and the policy's kubeadm units as a contradiction.
func TestOnK3sTheConfDirElsewhereIsK3sOwn(t *testing.T) {
	root := nodetest.Root(t)
	k3s := node.K3sDir
	for p, content := range map[string]string{
		"/run/systemd/system/.keep":                      "",
		"/etc/systemd/system/k3s-agent.service":          "[Service]\nExecStart=/usr/local/bin/k3s agent\n",
		"/run/k3s/containerd/containerd.sock":            "",
		k3s + "/agent/etc/cni/empty.d/.keep":             "",
		k3s + "/agent/etc/cni/net.d/10-flannel.conflist": `{"cniVersion": "1.0.0", "name": "cbr0", "plugins": [{"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}}]}`,
		k3s + "/agent/etc/containerd/config.toml":        "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dir = \"" + k3s + "/data/current/bin\"\n  conf_dir = \"" + k3s + "/agent/etc/cni/empty.d\"\n",
	} {
		nodetest.Write(t, root, p, []byte(content), 0o644)
	}
	s := node.Complete(node.Settings{Root: host.Root(root), Units: node.UnitList("kubelet", "containerd")})
	r, text := run(t, root, Options{Settings: s})
	expect(t, r, text, sigNotInitialized, Error, "No network configuration in "+k3s+"/agent/etc/cni/empty.d", k3s+"/agent/etc/cni/net.d holds some")
	if r.Layout == nil || r.Layout.Kind != "k3s" || r.Layout.Role != "agent" || !strings.Contains(text, "layout: k3s agent") {
		t.Fatalf("layout not reported: %+v\n%s", r.Layout, text)
	}
	if !strings.Contains(text, "The settings given contradict the node: the units given are kubelet.service, containerd.service, but on this node (k3s) k3s-agent.service runs both") {
		t.Fatalf("the units' contradiction is not a finding:\n%s", text)
	}
}
