//go:build e2e

package e2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// assertLeftAsIs checks an escalated node: not cordoned, no executor pod ever started, the failure still there.
func assertLeftAsIs(t *testing.T, r *run) {
	t.Helper()
	n := &corev1.Node{}
	if err := r.c.Get(r.ctx, client.ObjectKey{Name: r.node}, n); err != nil {
		t.Fatal(err)
	}
	if n.Spec.Unschedulable {
		t.Errorf("escalated node %s was cordoned", r.node)
	}
	pods := &corev1.PodList{}
	if err := r.c.List(r.ctx, pods, client.InNamespace(lab.Namespace), client.MatchingLabels{v1alpha1.LabelRemediation: r.nr.Name}); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) > 0 {
		t.Errorf("an escalated remediation started %d pods on the node, e.g. %s", len(pods.Items), pods.Items[0].Name)
	}
	for _, e := range r.events {
		for _, bad := range []string{"Cordoned", "ExecutorStarted", "Repaired"} {
			if e.Reason == bad {
				t.Errorf("an escalated remediation emitted %s: %s", bad, e.Message)
			}
		}
	}
	if len(r.nodeFile("/etc/cni/net.d/10-flannel.conflist")) == 0 {
		t.Error("flannel's conflist was changed on an escalated node")
	}
}

// flannel's plugin binary is missing: a vendor plugin, which cnimedic never installs. Escalated, node left as is.
func TestFlannelPluginMissingEscalates(t *testing.T) {
	scenario{
		fault:       lab.FaultFlannelPluginMissing,
		wantPhase:   v1alpha1.PhaseEscalated,
		wantReasons: []string{"Detected", "Escalated"},
		check: func(t *testing.T, r *run) {
			if got := r.nr.Spec.Parameters["plugin"]; got != "flannel" {
				t.Errorf("parameter plugin = %q, want flannel", got)
			}
			assertLeftAsIs(t, r)
		},
	}.run(t)
}

// flannel's daemon is down (no /run/flannel/subnet.env): a cluster-level cause, not a node repair. Escalated,
// node left as is.
func TestFlannelDaemonDownEscalates(t *testing.T) {
	scenario{
		fault:       lab.FaultFlannelDaemonDown,
		wantPhase:   v1alpha1.PhaseEscalated,
		wantReasons: []string{"Detected", "Escalated"},
		check:       assertLeftAsIs,
	}.run(t)
}
