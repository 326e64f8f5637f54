// Package policy keeps each RemediationPolicy's status current: how many nodes it covers, how many of its repairs
// are active or waiting for approval, whether its custom signatures compile, whether it is paused.
package policy

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/controllers/detection"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// FieldManager is the server-side apply manager of the fields this controller owns in a policy's status.
const FieldManager = "cnimedic-policy"

// Reasons of the conditions this controller sets.
const (
	ReasonActive             = "Active"
	ReasonInvalidSignatures  = "InvalidSignatures"
	ReasonInvalidSelector    = "InvalidNodeSelector"
	ReasonSignaturesCompiled = "Compiled"
	ReasonPausedBySpec       = "PausedBySpec"
	ReasonNotPaused          = "NotPaused"
	ReasonNoOverlap          = "NoOverlap"
	ReasonCoveredElsewhere   = "CoveredByEarlierPolicy"
)

// Reconciler computes a policy's status.
type Reconciler struct {
	Client client.Client
	Clock  clock.PassiveClock

	// compiled keeps each policy's signature errors for one generation of it: the policy is counted again on every
	// phase change of its remediations, and compiling its signatures was the largest part of that (make bench,
	// detection latency, a CPU profile of the manager while 50 remediations open at once).
	compiled sync.Map // policy name -> compiledErrs
}

type compiledErrs struct {
	uid        types.UID
	generation int64
	errs       []error
}

// signatureErrors are the errors of the policy's custom signatures, compiled once per generation of the policy.
func (r *Reconciler) signatureErrors(p *v1alpha1.RemediationPolicy) []error {
	if v, ok := r.compiled.Load(p.Name); ok {
		if c := v.(compiledErrs); c.uid == p.UID && c.generation == p.Generation {
			return c.errs
		}
	}
	set, errs := signature.CompilePolicy(&p.Spec)
	// A node condition rule whose signature the policy cannot name is ignored by the detection; say so here.
	_, ruleErrs := detection.ConditionRules(p, set)
	errs = append(errs, ruleErrs...)
	r.compiled.Store(p.Name, compiledErrs{uid: p.UID, generation: p.Generation, errs: errs})
	return errs
}

// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=cnimedic.io,resources=remediationpolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=cnimedic.io,resources=noderemediations,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch

// Reconcile computes and applies the status of one policy. It writes only when something changed, so a healthy
// cluster costs no API writes.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	p := &v1alpha1.RemediationPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, p); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil // deleted: no status to write
		}
		return reconcile.Result{}, fmt.Errorf("getting policy %s: %w", req.Name, err)
	}

	coveredSet, selErr := policy.CoveredNodes(ctx, r.Client, p)
	covered := len(coveredSet)
	overlap, err := r.overlap(ctx, p, coveredSet)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("finding policies that overlap %s: %w", p.Name, err)
	}
	sigErrs := r.signatureErrors(p)
	active, pending, err := r.remediationCounts(ctx, p.Name)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("counting remediations of policy %s: %w", p.Name, err)
	}

	now := metav1.NewTime(r.Clock.Now())
	conds := []metav1.Condition{
		signaturesCondition(sigErrs),
		pausedCondition(p.Spec.Paused),
		readyCondition(selErr, sigErrs),
		overlapCondition(overlap),
	}
	desired := v1alpha1.RemediationPolicyStatus{
		ObservedGeneration: p.Generation,
		CoveredNodes:       int32(covered),
		ActiveRepairs:      int32(active),
		PendingApprovals:   int32(pending),
	}
	if r.upToDate(p, desired, conds) {
		return reconcile.Result{}, nil
	}
	for i := range conds {
		conds[i].ObservedGeneration = p.Generation
		conds[i].LastTransitionTime = now
		// Keep the transition time of a condition whose status did not change.
		if old := meta.FindStatusCondition(p.Status.Conditions, conds[i].Type); old != nil && old.Status == conds[i].Status {
			conds[i].LastTransitionTime = old.LastTransitionTime
		}
	}
	if err := policy.ApplyStatus(ctx, r.Client, p.Name, FieldManager, policy.StatusApply{
		ObservedGeneration: ptr.To(desired.ObservedGeneration),
		Conditions:         conds,
		CoveredNodes:       ptr.To(desired.CoveredNodes),
		ActiveRepairs:      ptr.To(desired.ActiveRepairs),
		PendingApprovals:   ptr.To(desired.PendingApprovals),
	}); err != nil {
		return reconcile.Result{}, fmt.Errorf("applying status of policy %s: %w", p.Name, err)
	}
	return reconcile.Result{}, nil
}

func (r *Reconciler) upToDate(p *v1alpha1.RemediationPolicy, want v1alpha1.RemediationPolicyStatus, conds []metav1.Condition) bool {
	st := p.Status
	if st.ObservedGeneration != want.ObservedGeneration || st.CoveredNodes != want.CoveredNodes ||
		st.ActiveRepairs != want.ActiveRepairs || st.PendingApprovals != want.PendingApprovals {
		return false
	}
	for _, c := range conds {
		old := meta.FindStatusCondition(st.Conditions, c.Type)
		if old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message || old.ObservedGeneration != p.Generation {
			return false
		}
	}
	return true
}

// overlap counts, per policy that comes first by name, the nodes of p it covers too: on those nodes that policy
// acts, not p (the detection picks the first covering policy by name).
func (r *Reconciler) overlap(ctx context.Context, p *v1alpha1.RemediationPolicy, covered map[string]bool) (map[string]int, error) {
	if len(covered) == 0 {
		return nil, nil
	}
	policies := &v1alpha1.RemediationPolicyList{}
	if err := r.Client.List(ctx, policies); err != nil {
		return nil, fmt.Errorf("listing policies: %w", err)
	}
	var earlier []*policy.Selector
	var names []string
	for i := range policies.Items {
		q := &policies.Items[i]
		if q.Name >= p.Name {
			continue
		}
		if sel, err := policy.NewSelector(q); err == nil {
			earlier, names = append(earlier, sel), append(names, q.Name)
		}
	}
	if len(earlier) == 0 {
		return nil, nil
	}
	nodes := &corev1.NodeList{}
	if err := r.Client.List(ctx, nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	out := map[string]int{}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !covered[n.Name] {
			continue
		}
		// The first earlier policy by name is the one that acts.
		best := ""
		for j, sel := range earlier {
			if sel.Covers(n) && (best == "" || names[j] < best) {
				best = names[j]
			}
		}
		if best != "" {
			out[best]++
		}
	}
	return out, nil
}

func (r *Reconciler) remediationCounts(ctx context.Context, policyName string) (active, pending int, err error) {
	list := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, list, client.MatchingLabels{v1alpha1.LabelPolicy: policyName}); err != nil {
		return 0, 0, fmt.Errorf("listing remediations of policy %s: %w", policyName, err)
	}
	for _, nr := range list.Items {
		switch {
		case nr.Status.Phase.HoldsNode():
			active++
		case nr.Status.Phase == v1alpha1.PhaseAwaitingApproval:
			pending++
		}
	}
	return active, pending, nil
}

func signaturesCondition(errs []error) metav1.Condition {
	if len(errs) == 0 {
		return metav1.Condition{Type: v1alpha1.PolicySignaturesValid, Status: metav1.ConditionTrue, Reason: ReasonSignaturesCompiled,
			Message: "every custom signature compiles and every node condition rule names a signature of the policy"}
	}
	msgs := make([]string, 0, len(errs))
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	return metav1.Condition{Type: v1alpha1.PolicySignaturesValid, Status: metav1.ConditionFalse, Reason: ReasonInvalidSignatures,
		Message: "the API server cannot compile Go regular expressions nor tell which signatures a policy names, so cnimedic checks them here: " + strings.Join(msgs, "; ")}
}

func overlapCondition(overlap map[string]int) metav1.Condition {
	if len(overlap) == 0 {
		return metav1.Condition{Type: v1alpha1.PolicyOverlapping, Status: metav1.ConditionFalse, Reason: ReasonNoOverlap,
			Message: "no policy that comes first by name covers any of this policy's nodes"}
	}
	names := make([]string, 0, len(overlap))
	for n := range overlap {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%d by policy %s", overlap[n], n))
	}
	return metav1.Condition{Type: v1alpha1.PolicyOverlapping, Status: metav1.ConditionTrue, Reason: ReasonCoveredElsewhere,
		Message: "some of this policy's nodes are covered by a policy that comes first by name, which acts on them: " + strings.Join(parts, ", ")}
}

func pausedCondition(paused bool) metav1.Condition {
	if paused {
		return metav1.Condition{Type: v1alpha1.PolicyPaused, Status: metav1.ConditionTrue, Reason: ReasonPausedBySpec,
			Message: "spec.paused is set: no new repair starts; repairs past approval finish"}
	}
	return metav1.Condition{Type: v1alpha1.PolicyPaused, Status: metav1.ConditionFalse, Reason: ReasonNotPaused, Message: "the policy is not paused"}
}

func readyCondition(selErr error, sigErrs []error) metav1.Condition {
	switch {
	case selErr != nil:
		return metav1.Condition{Type: v1alpha1.PolicyReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidSelector, Message: selErr.Error()}
	case len(sigErrs) > 0:
		return metav1.Condition{Type: v1alpha1.PolicyReady, Status: metav1.ConditionFalse, Reason: ReasonInvalidSignatures,
			Message: fmt.Sprintf("%d custom signature(s) or node condition rule(s) are invalid; see the SignaturesValid condition", len(sigErrs))}
	}
	return metav1.Condition{Type: v1alpha1.PolicyReady, Status: metav1.ConditionTrue, Reason: ReasonActive, Message: "the policy is valid and watching its nodes"}
}

// SetupWithManager registers the controller: policies themselves, nodes whose labels change (coverage), and
// NodeRemediations whose phase changes (counts).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	allPolicies := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		list := &v1alpha1.RemediationPolicyList{}
		if err := mgr.GetClient().List(ctx, list); err != nil {
			log.FromContext(ctx).Error(err, "listing policies to recompute their status; each is recomputed at its next event")
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(list.Items))
		for _, p := range list.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
		}
		return reqs
	})
	ownPolicy := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if name := o.GetLabels()[v1alpha1.LabelPolicy]; name != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("policy").
		For(&v1alpha1.RemediationPolicy{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Another policy's selector decides which of this policy's nodes it acts on (Overlapping).
		Watches(&v1alpha1.RemediationPolicy{}, allPolicies, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, allPolicies, builder.WithPredicates(nodeMembershipChanged())).
		Watches(&v1alpha1.NodeRemediation{}, ownPolicy, builder.WithPredicates(phaseChanged())).
		Complete(r)
}

// nodeMembershipChanged passes node creations, deletions and label changes: the only node events that can
// change which nodes a policy covers. Status heartbeats are dropped here.
func nodeMembershipChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !mapsEqual(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels())
		},
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
}

func phaseChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			oldNR, ok1 := e.ObjectOld.(*v1alpha1.NodeRemediation)
			newNR, ok2 := e.ObjectNew.(*v1alpha1.NodeRemediation)
			return !ok1 || !ok2 || oldNR.Status.Phase != newNR.Status.Phase
		},
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
