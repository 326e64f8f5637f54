package main

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// WaitKind names what an open repair waits for. The workflow does not record waits in the status (they are
// events, deduplicated); the plugin derives them from the same facts the controller decides on: the phase, the
// policy's spec and conditions, the node's earlier repairs and how many nodes are held. The rules mirror
// controllers/remediation (phases.go reconcileAwaitingApproval, admission.go reconcileApproved and admit).
type WaitKind string

const (
	WaitTriage        WaitKind = "Triage"          // new or Detected: the controller has not decided yet
	WaitApproval      WaitKind = "Approval"        // Manual policy: a person must approve or reject
	WaitAutoApproval  WaitKind = "AutoApproval"    // Automatic policy: approval is due at the next reconcile
	WaitStorm         WaitKind = "Storm"           // Automatic policy held by a storm
	WaitPaused        WaitKind = "Paused"          // the policy is paused
	WaitCooldown      WaitKind = "Cooldown"        // the node was repaired less than retry.cooldown ago
	WaitSlot          WaitKind = "ConcurrencySlot" // maxConcurrent nodes are held already
	WaitAdmission     WaitKind = "Admission"       // approved, nothing holds it: admission is due
	WaitDrain         WaitKind = "Drain"
	WaitExecutor      WaitKind = "Executor"
	WaitDiagnosis     WaitKind = "Diagnosis" // the read-only diagnosis on the node, before anyone is asked
	WaitVerification  WaitKind = "Verification"
	WaitPolicyMissing WaitKind = "PolicyMissing"
)

// Wait is what an open repair waits for, in words.
type Wait struct {
	Kind   WaitKind `json:"kind"`
	Detail string   `json:"detail"`
}

// world is the cluster state the derivation reads: every policy and every remediation.
type world struct {
	policies     map[string]*v1alpha1.RemediationPolicy
	remediations []v1alpha1.NodeRemediation
	now          time.Time
}

// heldNodes counts the remediations that hold a node, across all policies, as admission does.
func (w *world) heldNodes() int {
	n := 0
	for _, nr := range w.remediations {
		if nr.Status.Phase.HoldsNode() {
			n++
		}
	}
	return n
}

// cooldownUntil is when the node's retry cooldown ends for nr: retry.cooldown after the last other remediation of
// the node that acted on it (has a start time) finished.
func (w *world) cooldownUntil(nr *v1alpha1.NodeRemediation, p *v1alpha1.RemediationPolicy) time.Time {
	if p.Spec.Retry.Cooldown == nil {
		return time.Time{}
	}
	var last time.Time
	for _, other := range w.remediations {
		if other.Name == nr.Name || other.Spec.NodeName != nr.Spec.NodeName || other.Status.StartTime == nil || other.Status.CompletionTime == nil {
			continue
		}
		if t := other.Status.CompletionTime.Time; t.After(last) {
			last = t
		}
	}
	if last.IsZero() {
		return time.Time{}
	}
	return last.Add(p.Spec.Retry.Cooldown.Duration)
}

// waitOf says what an open remediation waits for; nil for one that has ended.
func (w *world) waitOf(nr *v1alpha1.NodeRemediation) *Wait {
	phase := nr.Status.Phase
	if phase.IsTerminal() {
		return nil
	}
	p, ok := w.policies[nr.Spec.PolicyName]
	if !ok && !phase.HoldsNode() {
		return &Wait{WaitPolicyMissing, fmt.Sprintf("policy %s does not exist: the repair will be rejected", nr.Spec.PolicyName)}
	}
	switch phase {
	case "", v1alpha1.PhaseDetected:
		return &Wait{WaitTriage, "the controller has not yet decided (plan, allowed actions, retry cap)"}
	case v1alpha1.PhaseDiagnosing:
		if nr.Status.ExecutorPod == "" {
			return &Wait{WaitDiagnosis, "the read-only diagnosis of the node waits for its turn (at most a few run at once, and a node is not diagnosed back to back)"}
		}
		return &Wait{WaitDiagnosis, fmt.Sprintf("diagnosis pod %s: the node's findings decide whether anyone is asked to approve", nr.Status.ExecutorPod)}
	case v1alpha1.PhaseAwaitingApproval:
		return w.approvalWait(nr, p)
	case v1alpha1.PhaseApproved:
		if p.Spec.Paused {
			return &Wait{WaitPaused, fmt.Sprintf("policy %s is paused (spec.paused): approved repairs wait", p.Name)}
		}
		if until := w.cooldownUntil(nr, p); w.now.Before(until) {
			return &Wait{WaitCooldown, fmt.Sprintf("node %s was repaired less than %s ago (retry.cooldown): until %s (%s)",
				nr.Spec.NodeName, p.Spec.Retry.Cooldown.Duration, until.UTC().Format(time.RFC3339), duration.HumanDuration(until.Sub(w.now)))}
		}
		held, limit := w.heldNodes(), policy.MaxConcurrent(p, int(p.Status.CoveredNodes))
		if held >= limit {
			return &Wait{WaitSlot, fmt.Sprintf("%d nodes are being repaired and policy %s allows %d at once (maxConcurrent %s)",
				held, p.Name, limit, maxConcurrentString(p))}
		}
		return &Wait{WaitAdmission, fmt.Sprintf("a slot is free (%d of %d held): the controller re-checks the evidence and cordons the node", held, limit)}
	case v1alpha1.PhaseDraining:
		d := nr.Status.Drain
		switch {
		case d == nil:
			return &Wait{WaitDrain, "cordoning and draining"}
		case d.BlockedBy != "":
			return &Wait{WaitDrain, fmt.Sprintf("%d pods left, blocked by %s", d.PodsRemaining, d.BlockedBy)}
		default:
			return &Wait{WaitDrain, fmt.Sprintf("%d pods left to evict", d.PodsRemaining)}
		}
	case v1alpha1.PhaseRepairing:
		return &Wait{WaitExecutor, fmt.Sprintf("executor pod %s (attempt %d)", nr.Status.ExecutorPod, nr.Status.Attempt)}
	case v1alpha1.PhaseVerifying:
		return &Wait{WaitVerification, "the node's local check and the canary pod"}
	case v1alpha1.PhaseRollingBack:
		return &Wait{WaitExecutor, fmt.Sprintf("the executor undoes the repair (pod %s); the node stays cordoned", nr.Status.ExecutorPod)}
	}
	return nil
}

func (w *world) approvalWait(nr *v1alpha1.NodeRemediation, p *v1alpha1.RemediationPolicy) *Wait {
	if reason, ok := nr.Annotations[v1alpha1.AnnotationReject]; ok {
		return &Wait{WaitTriage, fmt.Sprintf("rejected (%q): the controller has not yet ended it", reason)}
	}
	if nr.Annotations[v1alpha1.AnnotationApprove] == "true" {
		return &Wait{WaitAutoApproval, "approved by annotation: the controller has not yet moved it on"}
	}
	expires := ""
	if since := phaseSince(nr, v1alpha1.PhaseAwaitingApproval); !since.IsZero() && p.Spec.Approval.Expiry != nil {
		expires = fmt.Sprintf("; expires in %s (approval.expiry)", duration.HumanDuration(since.Add(p.Spec.Approval.Expiry.Duration).Sub(w.now)))
	}
	if p.Spec.Approval.Mode == v1alpha1.ApprovalAutomatic {
		switch {
		case p.Spec.Paused:
			return &Wait{WaitPaused, fmt.Sprintf("policy %s is paused: automatic approval waits (approve by hand to override)%s", p.Name, expires)}
		case meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyStormActive):
			return &Wait{WaitStorm, stormDetail(p) + expires}
		}
		return &Wait{WaitAutoApproval, fmt.Sprintf("policy %s approves automatically", p.Name)}
	}
	return &Wait{WaitApproval, fmt.Sprintf("kubectl cnimedic approve %s (or reject %s --reason ...)%s", nr.Name, nr.Name, expires)}
}

func stormDetail(p *v1alpha1.RemediationPolicy) string {
	if s := p.Status.Storm; s != nil {
		return fmt.Sprintf("%s on %d nodes since %s holds automatic repair under policy %s (approve by hand if this node is different)",
			s.Signature, s.Nodes, s.Since.UTC().Format(time.RFC3339), p.Name)
	}
	return fmt.Sprintf("a storm holds automatic repair under policy %s (approve by hand if this node is different)", p.Name)
}

func maxConcurrentString(p *v1alpha1.RemediationPolicy) string {
	if p.Spec.MaxConcurrent == nil {
		return "1"
	}
	return p.Spec.MaxConcurrent.String()
}

// phaseSince is when the remediation last entered the phase, zero when its history does not say.
func phaseSince(nr *v1alpha1.NodeRemediation, p v1alpha1.Phase) time.Time {
	for i := len(nr.Status.History) - 1; i >= 0; i-- {
		if nr.Status.History[i].Phase == p {
			return nr.Status.History[i].Time.Time
		}
	}
	return time.Time{}
}

// phaseStart is when the remediation entered its current phase (its creation when the history is empty).
func phaseStart(nr *v1alpha1.NodeRemediation) time.Time {
	if n := len(nr.Status.History); n > 0 {
		return nr.Status.History[n-1].Time.Time
	}
	return nr.CreationTimestamp.Time
}

// age renders the time since t the way kubectl does ("5m", "3h2m"), "<unknown>" for a zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}
