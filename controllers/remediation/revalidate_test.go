package remediation

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// A remediation the detection opened from a condition the policy maps (spec.detection.nodeConditions) is still
// broken, right before cnimedic acts, only while the node shows that condition as the policy maps it. In memory:
// stillBroken reads nothing from the API server for evidence without pods.
func TestARemediationFromAMappedConditionIsStillBrokenOnlyWhileTheConditionHolds(t *testing.T) {
	now := time.Now()
	mapped := func() *v1alpha1.RemediationPolicy {
		p := &v1alpha1.RemediationPolicy{}
		p.Spec.Detection.EvidenceExpiry = &metav1.Duration{Duration: 15 * time.Minute}
		p.Spec.Detection.NodeConditions = []v1alpha1.NodeConditionRule{{Type: "NetworkUnavailable", Status: "True"}}
		return p
	}
	nr := &v1alpha1.NodeRemediation{Spec: v1alpha1.NodeRemediationSpec{NodeName: "w1", Signature: string(v1alpha1.SignatureCNIUnclassified),
		Evidence: v1alpha1.Evidence{LastSeen: &metav1.Time{Time: now},
			// https://github.com/kubernetes/cloud-provider/blob/master/controllers/route/route_controller.go
			Conditions: []v1alpha1.ConditionEvidence{{Type: "NetworkUnavailable", Status: "True", Reason: "NoRouteCreated", Message: "RouteController failed to create a route"}}}}}
	node := func(status corev1.ConditionStatus) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
			{Type: corev1.NodeNetworkUnavailable, Status: status},
		}}}
	}
	r := &Reconciler{}
	for _, tc := range []struct {
		name   string
		policy *v1alpha1.RemediationPolicy
		node   *corev1.Node
		want   bool
	}{
		{"the condition holds", mapped(), node(corev1.ConditionTrue), true},
		{"the condition cleared", mapped(), node(corev1.ConditionFalse), false},
		{"the policy no longer maps it", &v1alpha1.RemediationPolicy{}, node(corev1.ConditionTrue), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scope{nr: nr, policy: tc.policy, node: tc.node, now: now}
			got, why := r.stillBroken(context.Background(), s, true)
			if got != tc.want {
				t.Fatalf("stillBroken = %v (%s), want %v", got, why, tc.want)
			}
			if !got && !strings.Contains(why, "no longer show") {
				t.Errorf("the reason %q does not say the condition is gone", why)
			}
		})
	}
}
