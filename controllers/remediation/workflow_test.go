package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

var happyPath = []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval, v1alpha1.PhaseApproved,
	v1alpha1.PhaseDraining, v1alpha1.PhaseRepairing, v1alpha1.PhaseVerifying, v1alpha1.PhaseSucceeded}

func TestManualApprovalRepairsAndUncordons(t *testing.T) {
	h := newHarness(t, "manual")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.Approval.Mode = v1alpha1.ApprovalManual })
	h.runKubelet(kubelet{outcome: succeeded})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionIncompatible)

	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if !strings.Contains(pending.Status.Message, fmt.Sprintf("kubectl annotate noderemediation/%s cnimedic.io/approve=true", nr.Name)) {
		t.Errorf("the pending message must say how to approve; got %q", pending.Status.Message)
	}
	if pending.Status.Plan == nil || len(pending.Status.Plan.Steps) == 0 {
		t.Fatal("the plan must be filled in before approval, so the approver sees what will run")
	}
	if h.getNode(node.Name).Spec.Unschedulable {
		t.Fatal("the node was cordoned before approval")
	}
	time.Sleep(300 * time.Millisecond) // several poll intervals: still waiting
	if got := h.get(nr.Name).Status.Phase; got != v1alpha1.PhaseAwaitingApproval {
		t.Fatalf("moved on without approval: %s", got)
	}

	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if got := phases(done); !slices.Equal(got, happyPath) {
		t.Errorf("history %v, want %v", got, happyPath)
	}
	if done.Status.Approval == nil || done.Status.Approval.Decision != v1alpha1.DecisionApproved || !strings.Contains(done.Status.Approval.Source, "annotation") {
		t.Errorf("approval record %+v does not say it came by annotation", done.Status.Approval)
	}
	n := h.getNode(node.Name)
	if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Errorf("node not given back: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}
	if pods := h.executorPods(nr.Name); len(pods) != 1 {
		t.Errorf("%d executor pods, want exactly 1", len(pods))
	}
	h.eventually(func() error { return h.finalizerGone(nr.Name) }, "finalizer removed after success")
}

func TestExecutorPodFollowsTheContract(t *testing.T) {
	h := newHarness(t, "contract")
	node := h.node("w1")
	p := h.policy("p", nil)
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIVersionMissing)
	h.waitPhase(nr.Name, v1alpha1.PhaseRepairing)
	var pod corev1.Pod
	h.eventually(func() error {
		pods := h.executorPods(nr.Name)
		if len(pods) != 1 {
			return fmt.Errorf("%d executor pods", len(pods))
		}
		pod = pods[0]
		return nil
	}, "executor pod")
	spec := pod.Spec
	switch {
	case spec.NodeName != node.Name:
		t.Errorf("nodeName %q, want %q", spec.NodeName, node.Name)
	case !spec.HostNetwork:
		t.Error("executor must use the host network: it runs while CNI is broken")
	case spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken:
		t.Error("executor must carry no API credentials")
	case len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "":
		t.Errorf("executor must tolerate every taint: %+v", spec.Tolerations)
	case spec.PriorityClassName != "cnimedic-executor":
		t.Errorf("priority class %q", spec.PriorityClassName)
	case spec.RestartPolicy != corev1.RestartPolicyNever:
		t.Error("an executor pod must not be restarted by kubelet: the host-side run resumes from its journal")
	}
	var hostPaths []string
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v.HostPath.Path)
		}
	}
	if want := []string{"/var/lib/cnimedic", "/run/dbus", "/run/containerd"}; !slices.Equal(hostPaths, want) {
		t.Errorf("host paths %v, want only %v", hostPaths, want)
	}
	c := spec.Containers[0]
	if c.SecurityContext == nil || c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
		t.Error("the executor pod must not be privileged: the host-side run does the privileged work")
	}
	if !slices.Contains(c.Args, "apply") || !slices.Contains(c.Args, "--remediation-id="+nr.Name) {
		t.Errorf("args %v", c.Args)
	}
	if pod.Annotations[AnnotationPlan] == "" || !strings.Contains(pod.Annotations[AnnotationPlan], `"SetCNIVersion"`) {
		t.Errorf("the typed plan must be handed in: %q", pod.Annotations[AnnotationPlan])
	}
}

func (h *harness) annotate(name, key, value string) {
	h.t.Helper()
	h.eventually(func() error {
		nr := h.get(name)
		patch := client.MergeFrom(nr.DeepCopy())
		if nr.Annotations == nil {
			nr.Annotations = map[string]string{}
		}
		nr.Annotations[key] = value
		return h.c.Patch(h.ctx, nr, patch)
	}, "annotate %s", name)
}

func (h *harness) finalizerGone(name string) error {
	if slices.Contains(h.get(name).Finalizers, FinalizerReleaseNode) {
		return fmt.Errorf("finalizer still there")
	}
	return nil
}
