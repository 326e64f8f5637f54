package detection

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// Node conditions as evidence (spec.detection.nodeConditions).
//
// A node's conditions are written through nodes/status: by the node's own kubelet (NodeRestriction limits it to its
// own node), by node-problem-detector running on the node with the node's identity or a service account granted
// nodes/status, and by controllers that hold nodes/status (the cloud route controller sets NetworkUnavailable). The
// built-in edit and admin roles grant nothing on nodes, so a tenant cannot set one (trust_test.go:
// TestATenantCannotSetANodeCondition). docs/security.md ("What counts as evidence") treats what nodes/status says as
// the node's word, like its Ready condition: a mapped condition proves the failure on its own, once it has held for
// minStuckDuration, without pods to confirm it, and it counts toward a storm like the Ready condition does.

// readyKey is the store's key of the node's Ready condition among its conditions.
const readyKey = string(corev1.NodeReady)

// ConditionRule is a rule of spec.detection.nodeConditions with the signature it names resolved.
type ConditionRule struct {
	Rule   v1alpha1.NodeConditionRule
	Result signature.Result
}

// ruleStatus is the rule's status, True when unset (the API's default, for objects that were not defaulted).
func ruleStatus(rule v1alpha1.NodeConditionRule) corev1.ConditionStatus {
	if rule.Status == "" {
		return corev1.ConditionTrue
	}
	return corev1.ConditionStatus(rule.Status)
}

// ruleSignature is the signature a rule names: empty is the cni-unclassified family.
func ruleSignature(rule v1alpha1.NodeConditionRule) string {
	if rule.Signature == "" {
		return string(v1alpha1.SignatureCNIUnclassified)
	}
	return rule.Signature
}

// ConditionRules resolves the policy's node condition rules against its compiled signature set: a rule whose
// signature the policy cannot name (a built-in it does not enable, a custom signature it does not define or that
// does not compile) is left out and reported, with the rule's condition type, so that the policy's SignaturesValid
// condition can say so.
func ConditionRules(p *v1alpha1.RemediationPolicy, set *signature.Set) ([]ConditionRule, []error) {
	var out []ConditionRule
	var errs []error
	names := set.Signatures()
	for _, rule := range p.Spec.Detection.NodeConditions {
		sig := ruleSignature(rule)
		var res signature.Result
		if d, ok := signature.Lookup(v1alpha1.SignatureID(sig)); ok {
			if !policy.EnablesSignature(p, d.ID) {
				errs = append(errs, fmt.Errorf("spec.detection.nodeConditions[%s]: signature %q is not among spec.signatures: the rule is ignored", rule.Type, sig))
				continue
			}
			res = signature.Result{Signature: sig, Action: d.Action, Alternative: d.Alternative, Family: d.Family}
		} else {
			i := slices.IndexFunc(p.Spec.CustomSignatures, func(c v1alpha1.CustomSignature) bool { return c.Name == sig })
			if i < 0 || !slices.Contains(names, sig) {
				errs = append(errs, fmt.Errorf("spec.detection.nodeConditions[%s]: signature %q is neither a built-in signature nor a valid custom signature of the policy: the rule is ignored", rule.Type, sig))
				continue
			}
			res = signature.Result{Signature: sig, Custom: true, Action: p.Spec.CustomSignatures[i].Action}
		}
		res.Params = map[string]string{}
		out = append(out, ConditionRule{Rule: rule, Result: res})
	}
	return out, errs
}

// matches says whether the node condition is what the rule maps.
func (cr ConditionRule) matches(c corev1.NodeCondition) bool {
	return c.Type == corev1.NodeConditionType(cr.Rule.Type) && c.Status == ruleStatus(cr.Rule) &&
		(cr.Rule.Reason == "" || c.Reason == cr.Rule.Reason)
}

// conditionSeen is one node condition that carries a signature, as the store keeps it.
type conditionSeen struct {
	key   string // the condition type
	res   signature.Result
	since time.Time
	// message is what the evidence quotes (the Ready condition's message; for a mapped condition, its type,
	// status, reason and message), detail the mapped condition itself (nil for the Ready condition).
	message string
	detail  *v1alpha1.ConditionEvidence
}

// mappedConditions are the node's conditions that match one of the rules.
func mappedConditions(node *corev1.Node, rules []ConditionRule) []conditionSeen {
	var out []conditionSeen
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			continue
		}
		for _, cr := range rules {
			if !cr.matches(c) {
				continue
			}
			out = append(out, conditionSeen{key: string(c.Type), res: cr.Result, since: c.LastTransitionTime.Time,
				message: conditionText(c), detail: conditionEvidence(c)})
			break
		}
	}
	return out
}

// conditionText is how a mapped condition reads in the evidence's sample messages.
func conditionText(c corev1.NodeCondition) string {
	s := fmt.Sprintf("node condition %s=%s", c.Type, c.Status)
	if c.Reason != "" {
		s += " (" + c.Reason + ")"
	}
	if c.Message != "" {
		s += ": " + c.Message
	}
	return s
}

func conditionEvidence(c corev1.NodeCondition) *v1alpha1.ConditionEvidence {
	ce := &v1alpha1.ConditionEvidence{Type: truncate(string(c.Type), 316), Status: truncate(string(c.Status), 16),
		Reason: truncate(c.Reason, 1024), Message: truncate(c.Message, 1024)}
	if !c.LastTransitionTime.IsZero() {
		t := c.LastTransitionTime
		ce.Since = &t
	}
	return ce
}

// MappedConditionHolds says whether the node still shows the condition type the way one of the policy's rules maps
// it to sig, and how: what the workflow re-checks right before it acts on a remediation opened from a mapped
// condition (controllers/remediation/revalidate.go).
func MappedConditionHolds(p *v1alpha1.RemediationPolicy, node *corev1.Node, conditionType, sig string) (bool, string) {
	if p == nil || node == nil {
		return false, ""
	}
	set, _ := signature.CompilePolicy(&p.Spec)
	rules, _ := ConditionRules(p, set)
	for _, c := range node.Status.Conditions {
		if string(c.Type) != conditionType {
			continue
		}
		for _, cr := range rules {
			if cr.Result.Signature == sig && cr.matches(c) {
				return true, conditionText(c)
			}
		}
	}
	return false, ""
}

// conditionsKey is what the watch compares of a node's conditions of the mapped types: type, status, reason and
// message. lastHeartbeatTime, which kubelet and node-problem-detector rewrite on every heartbeat, is left out, so
// that a heartbeat never reconciles a node; lastTransitionTime moves only with the status.
func conditionsKey(n *corev1.Node, mapped map[string]bool) []string {
	var out []string
	for _, c := range n.Status.Conditions {
		if !mapped[string(c.Type)] {
			continue
		}
		out = append(out, string(c.Type)+"\x00"+string(c.Status)+"\x00"+c.Reason+"\x00"+c.Message)
	}
	slices.Sort(out)
	return out
}

// mappedTypes is every condition type some policy the detection has seen maps (a policy deleted since may still
// count: the watch then lets a few more changes through, never fewer).
func (r *Reconciler) mappedTypes() map[string]bool {
	out := map[string]bool{}
	r.sets.Range(func(_, v any) bool {
		for _, cr := range v.(compiledSet).rules {
			out[cr.Rule.Type] = true
		}
		return true
	})
	return out
}
