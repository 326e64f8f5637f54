package main

import (
	"fmt"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// HoldKind names why detection opens no new repair on a node after one ended. The rules mirror
// controllers/detection (open.go holdOff); docs/operations.md, "Retry, cooldown and hold-off", says them in words.
type HoldKind string

const (
	HoldRetryLimit HoldKind = "RetryLimit" // the retry cap: nothing opens on the node until that remediation is deleted
	HoldCooldown   HoldKind = "Cooldown"   // a failed, rolled-back or rejected repair ended less than retry.cooldown ago
	HoldEscalated  HoldKind = "Escalated"  // the escalated failure is not escalated again while it persists
	// HoldNotConfirmed: the failure the node's diagnosis did not confirm is not opened again while it persists.
	HoldNotConfirmed HoldKind = "NotConfirmed"
)

// HeldOff is a node on which detection holds new incidents off, and why.
type HeldOff struct {
	Node string `json:"node"`
	// By is the finished NodeRemediation that holds.
	By   string   `json:"by"`
	Kind HoldKind `json:"kind"`
	// Signature is the failure held off, for an escalation (empty: every failure of the node).
	Signature string `json:"signature,omitempty"`
	// Until is when the hold ends by itself (nil: when a person deletes By, or when the failure is gone).
	Until  *metav1.Time `json:"until,omitempty"`
	Detail string       `json:"detail"`
}

// heldOff lists the holds the finished remediations put on their nodes, by node and remediation name.
func (w *world) heldOff() []HeldOff {
	latest := map[string]*v1alpha1.NodeRemediation{}     // node -> latest finished
	latestSame := map[string]*v1alpha1.NodeRemediation{} // node/signature -> latest finished
	newer := func(a, b *v1alpha1.NodeRemediation) bool {
		return b == nil || a.CreationTimestamp.After(b.CreationTimestamp.Time) ||
			(a.CreationTimestamp.Equal(&b.CreationTimestamp) && a.Name > b.Name)
	}
	for i := range w.remediations {
		nr := &w.remediations[i]
		if !nr.Status.Phase.IsTerminal() {
			continue
		}
		if newer(nr, latest[nr.Spec.NodeName]) {
			latest[nr.Spec.NodeName] = nr
		}
		key := nr.Spec.NodeName + "/" + nr.Spec.Signature
		if newer(nr, latestSame[key]) {
			latestSame[key] = nr
		}
	}
	var out []HeldOff
	wholeNode := map[string]bool{}
	for node, nr := range latest {
		switch nr.Status.Phase {
		case v1alpha1.PhaseEscalated:
			if nr.Status.Reason == v1alpha1.ReasonRetryLimitReached {
				wholeNode[node] = true
				out = append(out, HeldOff{Node: node, By: nr.Name, Kind: HoldRetryLimit,
					Detail: fmt.Sprintf("retry.maxAttempts reached: nothing new opens on the node until a person deletes %s", nr.Name)})
			}
		case v1alpha1.PhaseFailed, v1alpha1.PhaseRolledBack, v1alpha1.PhaseRejected:
			p, ok := w.policies[nr.Spec.PolicyName]
			if !ok || p.Spec.Retry.Cooldown == nil || nr.Status.CompletionTime == nil {
				continue
			}
			until := nr.Status.CompletionTime.Add(p.Spec.Retry.Cooldown.Duration)
			if !w.now.Before(until) {
				continue
			}
			wholeNode[node] = true
			out = append(out, HeldOff{Node: node, By: nr.Name, Kind: HoldCooldown, Until: &metav1.Time{Time: until},
				Detail: fmt.Sprintf("%s ended %s less than retry.cooldown (%s) ago: nothing new opens on the node until %s (%s)",
					nr.Name, nr.Status.Phase, p.Spec.Retry.Cooldown.Duration, until.UTC().Format(time.RFC3339), duration.HumanDuration(until.Sub(w.now)))})
		}
	}
	for _, nr := range latestSame {
		if wholeNode[nr.Spec.NodeName] {
			continue
		}
		switch {
		case nr.Status.Phase == v1alpha1.PhaseEscalated && nr.Status.Reason != v1alpha1.ReasonRetryLimitReached:
			out = append(out, HeldOff{Node: nr.Spec.NodeName, By: nr.Name, Kind: HoldEscalated, Signature: nr.Spec.Signature,
				Detail: fmt.Sprintf("%s is not escalated again while its failure persists (other failures open their own); delete %s to ask again",
					nr.Spec.Signature, nr.Name)})
		case nr.Status.Phase == v1alpha1.PhaseNotConfirmed:
			out = append(out, HeldOff{Node: nr.Spec.NodeName, By: nr.Name, Kind: HoldNotConfirmed, Signature: nr.Spec.Signature,
				Detail: fmt.Sprintf("%s was not confirmed by the node's diagnosis: not opened again while the same failure persists (other failures open their own); delete %s to ask again",
					nr.Spec.Signature, nr.Name)})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].By < out[j].By
	})
	return out
}
