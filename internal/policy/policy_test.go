package policy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

func node(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func TestControlPlaneIsCoveredOnlyByName(t *testing.T) {
	cp := node("cp-1", map[string]string{"node-role.kubernetes.io/control-plane": "", "pool": "a"})
	worker := node("w-1", map[string]string{"pool": "a"})

	for _, tc := range []struct {
		name       string
		spec       v1alpha1.RemediationPolicySpec
		cp, worker bool
	}{
		{"no selection covers every worker", v1alpha1.RemediationPolicySpec{}, false, true},
		{"a matching selector still skips control planes",
			v1alpha1.RemediationPolicySpec{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pool": "a"}}}, false, true},
		{"a selector on the role label itself does not reach control planes",
			v1alpha1.RemediationPolicySpec{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "node-role.kubernetes.io/control-plane", Operator: metav1.LabelSelectorOpExists}}}}, false, false},
		{"names cover exactly the named nodes", v1alpha1.RemediationPolicySpec{NodeNames: []string{"cp-1"}}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSelector(&v1alpha1.RemediationPolicy{Spec: tc.spec})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Covers(cp); got != tc.cp {
				t.Errorf("control plane covered = %v, want %v", got, tc.cp)
			}
			if got := s.Covers(worker); got != tc.worker {
				t.Errorf("worker covered = %v, want %v", got, tc.worker)
			}
		})
	}
}

func TestMaxConcurrent(t *testing.T) {
	for _, tc := range []struct {
		v       *intstr.IntOrString
		covered int
		want    int
	}{
		{nil, 10, 1},
		{ptr.To(intstr.FromInt32(3)), 10, 3},
		{ptr.To(intstr.FromString("10%")), 50, 5},
		{ptr.To(intstr.FromString("10%")), 5, 1}, // rounds down, never below one
		{ptr.To(intstr.FromString("100%")), 7, 7},
	} {
		p := &v1alpha1.RemediationPolicy{Spec: v1alpha1.RemediationPolicySpec{MaxConcurrent: tc.v}}
		if got := MaxConcurrent(p, tc.covered); got != tc.want {
			t.Errorf("MaxConcurrent(%v, %d) = %d, want %d", tc.v, tc.covered, got, tc.want)
		}
	}
}

func TestAgentPodRestartIsOffUnlessListed(t *testing.T) {
	p := &v1alpha1.RemediationPolicy{}
	if Allows(p, v1alpha1.ActionRestartCNIAgentPod) {
		t.Error("an empty allowedActions must not allow RestartCNIAgentPod")
	}
	if !Allows(p, v1alpha1.ActionSetCNIVersion) {
		t.Error("an empty allowedActions must allow the node repairs")
	}
	p.Spec.AllowedActions = []v1alpha1.RepairAction{v1alpha1.ActionEscalate}
	if Allows(p, v1alpha1.ActionSetCNIVersion) {
		t.Error("a listed allowedActions must allow only what it lists")
	}
}
