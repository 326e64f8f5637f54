// Package policy answers the questions every controller asks of a RemediationPolicy: which nodes it covers, how many
// may be repaired at once, which actions it allows. One place, so that detection, the workflow and the policy
// status never disagree.
package policy

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// ControlPlaneLabels mark control-plane nodes; a selector never covers them, only nodeNames does.
var ControlPlaneLabels = []string{"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"}

// IsControlPlane reports whether the node carries a control-plane role label.
func IsControlPlane(node *corev1.Node) bool {
	for _, l := range ControlPlaneLabels {
		if _, ok := node.Labels[l]; ok {
			return true
		}
	}
	return false
}

// Selector is a policy's compiled node selection.
type Selector struct {
	names    []string
	selector labels.Selector // nil when the policy lists names
}

// NewSelector compiles the policy's node selection.
func NewSelector(p *v1alpha1.RemediationPolicy) (*Selector, error) {
	if len(p.Spec.NodeNames) > 0 {
		return &Selector{names: p.Spec.NodeNames}, nil
	}
	if p.Spec.NodeSelector == nil {
		return &Selector{selector: labels.Everything()}, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.NodeSelector)
	if err != nil {
		return nil, fmt.Errorf("policy %s: nodeSelector: %w", p.Name, err)
	}
	return &Selector{selector: sel}, nil
}

// Covers reports whether the node is covered. A control-plane node is covered only when listed by name.
func (s *Selector) Covers(node *corev1.Node) bool {
	if s.selector == nil {
		return slices.Contains(s.names, node.Name)
	}
	return !IsControlPlane(node) && s.selector.Matches(labels.Set(node.Labels))
}

// MaxConcurrent resolves the policy's maxConcurrent against the number of covered nodes: a count as is, a
// percentage rounded down but never below 1 (a policy that allows repairs allows at least one).
func MaxConcurrent(p *v1alpha1.RemediationPolicy, covered int) int {
	v := p.Spec.MaxConcurrent
	if v == nil {
		return 1
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, covered, false)
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// Allows reports whether the policy lets cnimedic take the action. The API server defaults allowedActions, so an
// empty list only occurs in objects built in code; it means the defaults.
func Allows(p *v1alpha1.RemediationPolicy, a v1alpha1.RepairAction) bool {
	if len(p.Spec.AllowedActions) == 0 {
		return a != v1alpha1.ActionRestartCNIAgentPod
	}
	return slices.Contains(p.Spec.AllowedActions, a)
}

// EnablesSignature reports whether the policy acts on the built-in signature.
func EnablesSignature(p *v1alpha1.RemediationPolicy, id v1alpha1.SignatureID) bool {
	return len(p.Spec.Signatures) == 0 || slices.Contains(p.Spec.Signatures, id)
}

// CoveredNodes returns the names of the nodes the policy covers, read through c (the manager's node cache).
func CoveredNodes(ctx context.Context, c client.Reader, p *v1alpha1.RemediationPolicy) (map[string]bool, error) {
	sel, err := NewSelector(p)
	if err != nil {
		return nil, err
	}
	nodes := &corev1.NodeList{}
	// Read-only: no deep copy of every node of the cache (on a large cluster, megabytes of garbage per call).
	if err := c.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(nodes.Items))
	for i := range nodes.Items {
		if sel.Covers(&nodes.Items[i]) {
			out[nodes.Items[i].Name] = true
		}
	}
	return out, nil
}
