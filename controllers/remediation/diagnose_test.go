package remediation

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/diagnosepod"
)

// A custom signature whose action is Diagnose: under a Manual policy, without any approval, a read-only diagnosis
// pod runs on the node, its summary is recorded, and the remediation ends Escalated. The node is never cordoned or
// drained, and no repair runs.
func TestDiagnoseActionRecordsTheDiagnosisAndTouchesNothing(t *testing.T) {
	h := newHarness(t, "diag")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Approval.Mode = v1alpha1.ApprovalManual
		s.CustomSignatures = vendorTimeoutDiagnosis
	})
	summary := "the diagnosis found 1 error(s) and 0 warning(s): error: /etc/cni/net.d/10-x.conflist asks for CNI version 1.0.0"
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{RemediationID: pod.Labels[v1alpha1.LabelRemediation], Outcome: v1alpha1.OutcomeNoChange, Message: summary}
	}})
	nr := h.remediation("nr", node.Name, p, "vendor-timeout")

	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if got := phases(done); !slices.Equal(got, []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseEscalated}) {
		t.Errorf("history %v: a diagnosis needs no approval and holds no node", got)
	}
	if done.Status.Reason != ReasonDiagnosed || !strings.Contains(done.Status.Message, summary) ||
		!strings.Contains(done.Status.Message, "kubectl cnimedic diagnose "+node.Name) {
		t.Errorf("status %s: %q", done.Status.Reason, done.Status.Message)
	}
	if done.Status.Result == nil || done.Status.Result.Message != summary {
		t.Errorf("result %+v, want the diagnosis summary", done.Status.Result)
	}
	n := h.getNode(node.Name)
	if n.Spec.Unschedulable || n.Annotations[v1alpha1.AnnotationCordonedBy] != "" {
		t.Errorf("a diagnosis cordoned the node: unschedulable=%v annotations=%v", n.Spec.Unschedulable, n.Annotations)
	}

	if pods := h.executorPods(nr.Name); len(pods) != 0 {
		t.Fatalf("%d executor pods ran for a diagnosis", len(pods))
	}
	pods := h.podsOf(nr.Name, componentDiagnosis)
	if len(pods) != 1 {
		t.Fatalf("%d diagnosis pods, want one", len(pods))
	}
	pod := pods[0]
	c := pod.Spec.Containers[0]
	if c.Name != diagnosepod.Container || c.Args[0] != "diagnose" || !slices.Contains(c.Args, "--remediation-id="+nr.Name) ||
		!slices.Contains(c.Args, "--termination-message-path="+diagnosepod.TerminationMessagePath) || slices.Contains(c.Args, "apply") {
		t.Errorf("container %s args %v", c.Name, c.Args)
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s at %s is writable: a diagnosis changes nothing", m.Name, m.MountPath)
		}
	}
	if !pod.Spec.HostNetwork || pod.Spec.NodeName != node.Name || *pod.Spec.AutomountServiceAccountToken ||
		pod.Spec.PriorityClassName != p.Spec.Executor.PriorityClassName || len(pod.OwnerReferences) != 1 {
		t.Errorf("the diagnosis pod breaks the executor contract: %+v", pod.Spec)
	}
}

// A diagnosis that fails on the node still ends with a person: Escalated, saying it failed and how to rerun it.
func TestDiagnoseActionThatFailsEscalates(t *testing.T) {
	h := newHarness(t, "diagfail")
	node := h.node("w1")
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) { s.CustomSignatures = vendorTimeoutDiagnosis })
	h.runKubelet(kubelet{diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult {
		return &v1alpha1.ExecutorResult{Outcome: v1alpha1.OutcomeFailed, Message: "open /host/run/dbus/system_bus_socket: no such file"}
	}})
	nr := h.remediation("nr", node.Name, p, "vendor-timeout")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseEscalated)
	if done.Status.Reason != ReasonDiagnosisFailed || !strings.Contains(done.Status.Message, "system_bus_socket") ||
		!strings.Contains(done.Status.Message, fmt.Sprintf("kubectl cnimedic diagnose %s", node.Name)) {
		t.Errorf("status %s: %q", done.Status.Reason, done.Status.Message)
	}
}

// vendorTimeoutDiagnosis is a policy's custom signature whose action is Diagnose.
var vendorTimeoutDiagnosis = []v1alpha1.CustomSignature{{Name: "vendor-timeout", Pattern: "vendor plugin timed out", Action: v1alpha1.ActionDiagnose}}
