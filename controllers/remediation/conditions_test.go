package remediation

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// TestARemediationOpenedFromAMappedNodeConditionGoesThroughTheNodesDiagnosisAndApproval: what the detection opens
// for a condition the policy maps to the cni-unclassified family (spec.detection.nodeConditions; the cloud route
// controller's NetworkUnavailable, https://github.com/kubernetes/cloud-provider/blob/master/controllers/route/route_controller.go)
// carries no event and no pod: the node's diagnosis names the cause, a person approves, and the cause the node
// showed is repaired while the condition still holds.
func TestARemediationOpenedFromAMappedNodeConditionGoesThroughTheNodesDiagnosisAndApproval(t *testing.T) {
	h := newHarness(t, "mappedcond")
	node := h.node("w1")
	h.eventually(func() error {
		n := h.getNode(node.Name)
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue,
			Reason: "NoRouteCreated", Message: "RouteController failed to create a route", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()})
		return h.c.Status().Update(h.ctx, n)
	}, "set NetworkUnavailable on %s", node.Name)
	p := h.policy("p", func(s *v1alpha1.RemediationPolicySpec) {
		s.Approval.Mode = v1alpha1.ApprovalManual
		s.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: string(corev1.NodeNetworkUnavailable)}}
	})
	finding := v1alpha1.Finding{Severity: v1alpha1.SeverityError, Signature: v1alpha1.SignatureCNIVersionMissing, Summary: "10-lab.conflist has no cniVersion"}
	h.runKubelet(kubelet{outcome: succeeded, diagnosis: func(pod *corev1.Pod) *v1alpha1.ExecutorResult { return diagnosisFinding(pod, finding) }})
	nr := h.remediation("nr", node.Name, p, v1alpha1.SignatureCNIUnclassified, func(nr *v1alpha1.NodeRemediation) {
		since := nr.Spec.Evidence.LastSeen
		nr.Spec.Parameters = nil
		nr.Spec.Evidence = v1alpha1.Evidence{FirstSeen: since, LastSeen: since, SampleMessages: []string{"node condition NetworkUnavailable=True (NoRouteCreated): RouteController failed to create a route"},
			Conditions: []v1alpha1.ConditionEvidence{{Type: "NetworkUnavailable", Status: "True", Reason: "NoRouteCreated", Message: "RouteController failed to create a route", Since: since}}}
	})

	pending := h.waitPhase(nr.Name, v1alpha1.PhaseAwaitingApproval)
	if got := phases(pending); !slices.Equal(got, []v1alpha1.Phase{v1alpha1.PhaseDetected, v1alpha1.PhaseDiagnosing, v1alpha1.PhaseAwaitingApproval}) {
		t.Errorf("history %v", got)
	}
	if d := pending.Status.Diagnosis; d == nil || d.Confirmed != string(v1alpha1.SignatureCNIVersionMissing) {
		t.Fatalf("diagnosis %+v: want the cause the node shows", d)
	}
	if pending.Status.ByHand {
		t.Error("a remediation carrying the detection's condition evidence was taken for a person's request")
	}
	h.assertUntouched(node.Name, nr.Name)
	h.annotate(nr.Name, v1alpha1.AnnotationApprove, "true")
	done := h.waitPhase(nr.Name, v1alpha1.PhaseSucceeded)
	if done.Status.Action != v1alpha1.ActionSetCNIVersion {
		t.Errorf("action %s, want the repair of what the node showed", done.Status.Action)
	}
}
