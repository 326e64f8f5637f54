package main

import (
	"strings"
	"testing"
	"time"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestDescribeShowsTheNodesLayout (issue 14): describe says which layout the diagnosis found on the node, where its
// runtime's socket, config and CNI dirs are, and, for a layout cnimedic does not repair, why.
func TestDescribeShowsTheNodesLayout(t *testing.T) {
	f, kubeconfig := newFixture(t)
	f.policy("manual", nil)
	f.remediation("k3s", "w1", "manual", v1alpha1.PhaseAwaitingApproval, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.Diagnosis = &v1alpha1.Diagnosis{Time: f.ago(time.Minute), Confirmed: string(v1alpha1.SignatureCNIVersionMissing),
			Layout: &v1alpha1.NodeLayout{Kind: v1alpha1.LayoutK3s, Role: "agent", Units: []string{"k3s-agent.service"},
				CRISocket:             "/run/k3s/containerd/containerd.sock",
				RuntimeConfig:         "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
				RuntimeConfigTemplate: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
				ConfDir:               "/var/lib/rancher/k3s/agent/etc/cni/net.d", BinDirs: []string{"/var/lib/rancher/k3s/data/current/bin"},
				HostPaths: []string{"/run/k3s/containerd"}, Servable: true}}
	})
	f.remediation("crio", "w2", "manual", v1alpha1.PhaseEscalated, time.Minute, func(nr *v1alpha1.NodeRemediation) {
		nr.Status.Diagnosis = &v1alpha1.Diagnosis{Time: f.ago(time.Minute),
			Layout: &v1alpha1.NodeLayout{Kind: v1alpha1.LayoutCRIO, Units: []string{"kubelet.service", "crio.service"}, Servable: false,
				Reason: "the runtime is CRI-O, whose configuration no repair of cnimedic edits"}}
	})

	out := squash(mustRun(t, kubeconfig, "describe", "k3s"))
	for _, want := range []string{"Layout: k3s (agent); units k3s-agent.service; CRI socket /run/k3s/containerd/containerd.sock",
		"runtime config /var/lib/rancher/k3s/agent/etc/containerd/config.toml (generated from /var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl)",
		"conf dir /var/lib/rancher/k3s/agent/etc/cni/net.d; bin dirs /var/lib/rancher/k3s/data/current/bin"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "not repaired") {
		t.Errorf("a servable layout is described as not repaired:\n%s", out)
	}
	out = squash(mustRun(t, kubeconfig, "describe", "crio"))
	if want := "Layout: crio; units kubelet.service, crio.service; not repaired by cnimedic: the runtime is CRI-O"; !strings.Contains(out, want) {
		t.Errorf("describe lacks %q:\n%s", want, out)
	}
}
