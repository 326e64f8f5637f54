package remediation

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// Admission into the phases that hold a node is the one place where remediations compete, and a counted race here
// has drained more nodes than allowed in other operators. The rule: a remediation under policy P enters Draining
// only while fewer than P's maxConcurrent nodes are held across all policies.
//
// Three things make the count exact:
//   - it is taken from a live list of the API server (a quorum read), never from the informer cache, which may not
//     yet show an admission made a moment ago;
//   - admissions in this process are serialised by admitMu, and each writes its decision (with an optimistic lock
//     on the version it reasoned from) before the lock is released, so the next count sees it;
//   - leader election lets one manager act at a time, and a manager that comes back after a crash counts from the
//     phases recorded in the API server, not from memory.

// reconcileApproved waits for the node's cooldown and for a free slot, re-validates the evidence, and admits.
func (r *Reconciler) reconcileApproved(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p := s.nr, s.policy
	if s.policyMissing {
		s.transition(v1alpha1.PhaseRejected, ReasonPolicyNotFound, fmt.Sprintf("policy %s was deleted before the repair started", nr.Spec.PolicyName))
		return reconcile.Result{}, nil
	}
	if ok, err := r.mayAct(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("checking that %s may still act on node %s: %w", nr.Name, nr.Spec.NodeName, err)
	} else if !ok {
		return reconcile.Result{}, nil
	}
	if p.Spec.Paused {
		s.event(normal, ReasonPolicyPaused, actionWait, fmt.Sprintf("policy %s is paused: the approved repair waits", p.Name), "paused")
		return reconcile.Result{RequeueAfter: r.poll()}, nil
	}
	// While the cache shows every slot taken, wait without asking the API server anything: when many remediations
	// wait (a fleet), every release wakes them all, and their live reads would delay the one that gets the slot
	// (make bench: fleet). Only the exact, live count in admit ever admits.
	if full, msg, err := r.slotsTakenInCache(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("counting the slots of policy %s in the cache for %s: %w", p.Name, nr.Name, err)
	} else if full {
		s.event(normal, ReasonWaitingForSlot, actionWait, msg, "slot")
		return reconcile.Result{RequeueAfter: r.poll()}, nil
	}
	until, err := r.cooldownUntil(ctx, s)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("reading the cooldown of node %s for %s: %w", nr.Spec.NodeName, nr.Name, err)
	}
	if s.now.Before(until) {
		s.event(normal, ReasonWaitingForCooldown, actionWait, fmt.Sprintf("node %s was repaired less than %s ago (retry.cooldown): waiting until %s",
			nr.Spec.NodeName, p.Spec.Retry.Cooldown.Duration, until.UTC().Format(time.RFC3339)), "cooldown")
		return r.requeueAt(s, until), nil
	}
	if wait, err := r.awaitNodeFree(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("checking whether another tool holds node %s for %s: %w", nr.Spec.NodeName, nr.Name, err)
	} else if wait != nil {
		return *wait, nil
	}
	// First re-validation: right before the node is touched, the failure must still be there.
	if broken, why := r.stillBroken(ctx, s, true); !broken {
		s.transition(v1alpha1.PhaseSucceeded, ReasonResolvedWithoutAction, "the failure cleared by itself before any action: "+why)
		return reconcile.Result{}, nil
	}
	if err := r.ensureFinalizer(ctx, s); err != nil {
		return reconcile.Result{}, fmt.Errorf("adding the finalizer to %s: %w", nr.Name, err)
	}
	admitted, err := r.admit(ctx, s)
	switch {
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("admitting %s to a slot: %w", nr.Name, err)
	case admitted:
		return moveOn, nil
	}
	return reconcile.Result{RequeueAfter: r.poll()}, nil
}

// slotsTakenInCache reports whether the cache shows as many nodes held as the policy allows. The cache can only lag:
// a hold it does not show yet is counted by admit, live; a release it does not show yet wakes the waiting
// remediations again when it arrives (waitingForSlot). So it may make a remediation wait a moment, never admit one.
func (r *Reconciler) slotsTakenInCache(ctx context.Context, s *scope) (bool, string, error) {
	all := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, all, client.UnsafeDisableDeepCopy); err != nil {
		return false, "", fmt.Errorf("listing remediations: %w", err)
	}
	held := 0
	for i := range all.Items {
		if all.Items[i].Name != s.nr.Name && all.Items[i].Status.Phase.HoldsNode() {
			held++
		}
	}
	covered, err := r.coveredNodes(ctx, s.policy)
	if err != nil {
		return false, "", fmt.Errorf("counting the nodes policy %s covers: %w", s.policy.Name, err)
	}
	limit := policy.MaxConcurrent(s.policy, covered)
	return held >= limit, waitingForSlotMessage(held, limit, s.policy), nil
}

func waitingForSlotMessage(held, limit int, p *v1alpha1.RemediationPolicy) string {
	return fmt.Sprintf("%d nodes are being repaired and policy %s allows %d at once (maxConcurrent %s): waiting for a slot",
		held, p.Name, limit, maxConcurrentString(p))
}

// admit counts the held nodes live and, when a slot is free, moves the remediation to Draining and writes that
// before anyone else may count.
func (r *Reconciler) admit(ctx context.Context, s *scope) (bool, error) {
	r.admitMu.Lock()
	defer r.admitMu.Unlock()

	all := &v1alpha1.NodeRemediationList{}
	if err := r.APIReader.List(ctx, all); err != nil {
		return false, fmt.Errorf("listing remediations live: %w", err)
	}
	held := 0
	for _, other := range all.Items {
		if other.Name == s.nr.Name {
			if other.ResourceVersion != s.nr.ResourceVersion {
				// Our copy is stale: someone (an earlier reconcile, another replica) moved it. Start over.
				return false, nil
			}
			continue
		}
		if other.Status.Phase.HoldsNode() {
			held++
		}
	}
	covered, err := r.coveredNodes(ctx, s.policy)
	if err != nil {
		return false, fmt.Errorf("counting the nodes policy %s covers: %w", s.policy.Name, err)
	}
	limit := policy.MaxConcurrent(s.policy, covered)
	if held >= limit {
		s.event(normal, ReasonWaitingForSlot, actionWait, waitingForSlotMessage(held, limit, s.policy), "slot")
		return false, nil
	}
	if !s.policy.Spec.DryRun {
		if ok, err := r.takeLease(ctx, s); err != nil {
			return false, fmt.Errorf("admitting %s: %w", s.nr.Name, err)
		} else if !ok {
			return false, nil
		}
	}
	s.nr.Status.StartTime = &metav1.Time{Time: s.now}
	s.nr.Status.Drain = &v1alpha1.DrainStatus{StartTime: &metav1.Time{Time: s.now}}
	s.transition(v1alpha1.PhaseDraining, ReasonDraining, fmt.Sprintf("admitted as %d of at most %d nodes in repair: cordoning and draining node %s",
		held+1, limit, s.nr.Spec.NodeName))
	// Write now, under the lock: the next admission's count must see this one.
	if err := r.patchStatus(ctx, s); err != nil {
		return false, fmt.Errorf("writing the admission: %w", err)
	}
	return true, nil
}

func maxConcurrentString(p *v1alpha1.RemediationPolicy) string {
	if p.Spec.MaxConcurrent == nil {
		return "1"
	}
	return p.Spec.MaxConcurrent.String()
}

func (r *Reconciler) coveredNodes(ctx context.Context, p *v1alpha1.RemediationPolicy) (int, error) {
	nodes, err := policy.CoveredNodes(ctx, r.Client, p)
	if err != nil {
		return 0, fmt.Errorf("listing nodes: %w", err)
	}
	return len(nodes), nil
}

// cooldownUntil is when the node's retry cooldown ends: retry.cooldown after the last earlier remediation that
// acted on the node finished.
func (r *Reconciler) cooldownUntil(ctx context.Context, s *scope) (time.Time, error) {
	// Read live: a safety rule must not depend on how far the cache has caught up.
	list := &v1alpha1.NodeRemediationList{}
	if err := r.APIReader.List(ctx, list, client.MatchingLabels{v1alpha1.LabelNode: s.nr.Spec.NodeName}); err != nil {
		return time.Time{}, fmt.Errorf("listing the remediations of node %s live: %w", s.nr.Spec.NodeName, err)
	}
	var last time.Time
	for _, other := range list.Items {
		if other.Name == s.nr.Name || other.Status.StartTime == nil || other.Status.CompletionTime == nil {
			continue
		}
		if t := other.Status.CompletionTime.Time; t.After(last) {
			last = t
		}
	}
	if last.IsZero() {
		return time.Time{}, nil
	}
	return last.Add(s.policy.Spec.Retry.Cooldown.Duration), nil
}

// waitingForSlot maps a remediation that released its node to every remediation waiting for a slot.
func (r *Reconciler) waitingForSlot(ctx context.Context, _ client.Object) []reconcile.Request {
	list := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, list); err != nil {
		log.FromContext(ctx).Error(err, "listing remediations to wake those waiting for a slot; they wake at their next poll")
		return nil
	}
	var reqs []reconcile.Request
	for _, nr := range list.Items {
		if nr.Status.Phase == v1alpha1.PhaseApproved {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: nr.Name}})
		}
	}
	return reqs
}

// releasedNode passes updates where a remediation leaves the phases that hold a node, and deletions.
func releasedNode() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, ok1 := e.ObjectOld.(*v1alpha1.NodeRemediation)
			n, ok2 := e.ObjectNew.(*v1alpha1.NodeRemediation)
			return ok1 && ok2 && o.Status.Phase.HoldsNode() && !n.Status.Phase.HoldsNode()
		},
		DeleteFunc:  func(event.DeleteEvent) bool { return true },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}
