//go:build e2e

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/e2e/lab"
)

// The Calico seed: containerd's CRI CNI settings do not lead to the conflist on the node (conf_dir points at an
// empty directory), so the runtime reports `cni plugin not initialized` and the node goes NotReady. Repaired by
// writing containerd's CNI settings back from the policy and restarting containerd: the node Ready again.
func TestCNINotInitialized(t *testing.T) {
	scenario{
		fault:         lab.FaultConfDirElsewhere,
		nodeCondition: true,
		wantPhase:     v1alpha1.PhaseSucceeded,
		wantReasons:   succeededReasons,
		check: func(t *testing.T, r *run) {
			cfg := string(r.nodeFile("/etc/containerd/config.toml"))
			if !strings.Contains(cfg, `conf_dir = "/etc/cni/net.d"`) {
				t.Errorf("containerd's config.toml after the repair does not point conf_dir at /etc/cni/net.d:\n%s", cfg)
			}
		},
	}.run(t)
}

// No network configuration anywhere (issue 17): the node's diagnosis shows nothing a node repair can fix, so the
// remediation escalates from Diagnosing, with the findings, and the node is never cordoned or drained.
func TestNoNetworkConfigurationEscalatesWithoutADrain(t *testing.T) {
	scenario{
		fault:         lab.FaultNoNetworkConfig,
		nodeCondition: true,
		wantPhase:     v1alpha1.PhaseEscalated,
		unrepaired:    true,
		wantReasons:   []string{"Detected", "Diagnosing", "NoNodeRepair"},
		check: func(t *testing.T, r *run) {
			if !strings.Contains(r.nr.Status.Message, "No network configuration") {
				t.Errorf("the escalation does not say what the node shows: %s", r.nr.Status.Message)
			}
			for _, e := range r.events {
				if e.Reason == "Cordoned" || e.Reason == "Draining" || e.Reason == "ExecutorStarted" && strings.Contains(e.Message, "(apply)") {
					t.Errorf("the node was touched: %s %s", e.Reason, e.Message)
				}
			}
		},
	}.run(t)
}

// IPAM exhausted: every address of the node's host-local range leased to sandboxes that no longer exist. Repaired
// by reclaiming exactly those leases: a live pod's lease (a DaemonSet pod, which the drain leaves in place) must
// survive, and the pod keep running. This scenario runs under a Manual policy: a person approves by annotation.
func TestIPAMExhausted(t *testing.T) {
	var keeper corev1.Pod
	scenario{
		fault:          lab.FaultIPAMExhausted,
		manualApproval: true,
		wantPhase:      v1alpha1.PhaseSucceeded,
		wantReasons:    succeededReasons,
		setup: func(t *testing.T, r *run) {
			keeper = r.startKeeper()
		},
		check: func(t *testing.T, r *run) {
			// The keeper's lease is still there, still its own, and the pod still runs the same container.
			lease := r.nodeFile(filepath.Join(lab.NodeIPAMDir, keeper.Status.PodIP))
			if len(lease) == 0 {
				t.Fatalf("the live pod's lease %s was removed", keeper.Status.PodIP)
			}
			now := &corev1.Pod{}
			if err := r.c.Get(r.ctx, client.ObjectKeyFromObject(&keeper), now); err != nil {
				t.Fatalf("the DaemonSet pod that was running during the repair: %v", err)
			}
			if now.Status.PodIP != keeper.Status.PodIP || now.UID != keeper.UID {
				t.Errorf("the live pod changed: %s %s -> %s %s", keeper.UID, keeper.Status.PodIP, now.UID, now.Status.PodIP)
			}
			// The range has room again: far fewer leases than addresses.
			assertRangeReclaimed(t, r)
		},
	}.run(t)
}

// startKeeper runs a DaemonSet pod with a pod network on the target node and returns it once it runs.
func (r *run) startKeeper() corev1.Pod {
	labels := map[string]string{"app": "keeper"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: workloadNS, Name: "keeper"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{"kubernetes.io/hostname": r.node},
					TerminationGracePeriodSeconds: ptr.To(int64(1)),
					Containers:                    []corev1.Container{{Name: "keeper", Image: lab.WorkloadImage, ImagePullPolicy: corev1.PullIfNotPresent}},
				},
			},
		},
	}
	if err := r.c.Create(r.ctx, ds); err != nil {
		r.t.Fatal(err)
	}
	var pod corev1.Pod
	r.eventually("the DaemonSet pod runs on "+r.node, time.Minute, func() (bool, string) {
		pods := &corev1.PodList{}
		if err := r.c.List(r.ctx, pods, client.InNamespace(workloadNS), client.MatchingLabels(labels)); err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				pod = p
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods, none running", len(pods.Items))
	})
	return pod
}

// assertRangeReclaimed checks that the node's host-local range has room again after an IPAM repair: far fewer leases
// than addresses.
func assertRangeReclaimed(t *testing.T, r *run) {
	t.Helper()
	node, spec, err := theLab.Node(r.node)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(node.RootDir() + lab.NodeIPAMDir)
	if err != nil {
		t.Fatal(err)
	}
	leases := 0
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.Name()); err == nil && spec.PodCIDR.Contains(a) {
			leases++
		}
	}
	if leases > 10 {
		t.Errorf("%d leases left in %s after the reclaim: the leaked ones were not all freed", leases, lab.NodeIPAMDir)
	}
}
