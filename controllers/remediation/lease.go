package remediation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/nodelease"
)

// Other tools take nodes down too (kured, the node-maintenance-operator, node-healthcheck-operator's remediators,
// a person running kubectl drain). cnimedic leaves a node alone while one of them holds it, and says so:
//   - a node cordoned by someone else is not drained or repaired unless the policy says so
//     (spec.drain.repairCordonedNodes); cnimedic never uncordons it either way (release);
//   - a node whose maintenance lease (internal/nodelease, the medik8s convention) another holder has is not
//     touched; cnimedic takes the lease when it admits the repair, renews it while it holds the node and gives it
//     back when it lets the node go.

// awaitNodeFree keeps an approved repair waiting while someone else holds the node. It writes nothing: the lease is
// taken only on admission (takeLease), so a remediation waiting for a slot holds no lease.
func (r *Reconciler) awaitNodeFree(ctx context.Context, s *scope) (*reconcile.Result, error) {
	node := s.node
	if node.Spec.Unschedulable && !s.policy.Spec.Drain.RepairCordonedNodes && !r.ownCordon(ctx, s) {
		s.event(normal, ReasonNodeHeldByOthers, actionWait, fmt.Sprintf("node %s was cordoned by someone else (a maintenance, a reboot tool, a person): the repair waits until it is uncordoned "+
			"(policy %s can repair cordoned nodes with spec.drain.repairCordonedNodes)", node.Name, s.policy.Name), "cordoned")
		return &reconcile.Result{RequeueAfter: r.poll()}, nil
	}
	if r.Leases == nil {
		return nil, nil
	}
	holder, until, held, err := r.Leases.HeldByOther(ctx, node.Name, s.nr.Name, s.now)
	if err != nil {
		return nil, fmt.Errorf("reading the maintenance lease of node %s: %w", node.Name, err)
	}
	if held {
		s.event(normal, ReasonNodeHeldByOthers, actionWait, fmt.Sprintf("node %s's maintenance lease is held by %q until %s: the repair waits for it",
			node.Name, holder, until.UTC().Format(time.RFC3339)), "lease", holder)
		return &reconcile.Result{RequeueAfter: r.poll()}, nil
	}
	return nil, nil
}

// takeLease takes the node's lease on admission, or renews it while the remediation holds the node. It reports
// false, with an event, when another holder took the lease first.
func (r *Reconciler) takeLease(ctx context.Context, s *scope) (bool, error) {
	if r.Leases == nil || s.node == nil {
		return true, nil
	}
	err := r.Leases.Acquire(ctx, s.node, s.nr.Name, s.now)
	if errors.Is(err, nodelease.ErrNoNamespace) {
		// Nobody made the leases' namespace (no medik8s operator, an install without it): there is no convention to
		// follow on this cluster. Say so, and go on without a lease rather than never repair.
		s.event(warning, ReasonNodeHeldByOthers, actionWait, fmt.Sprintf("no maintenance lease taken for node %s: namespace %s does not exist (the manager's --node-lease-namespace); other tools cannot see that cnimedic holds the node",
			s.node.Name, r.Leases.Namespace), "no-lease-namespace")
		return true, nil
	}
	if h, ok := nodelease.IsHeld(err); ok {
		s.event(normal, ReasonNodeHeldByOthers, actionWait, fmt.Sprintf("node %s's maintenance lease is held by %q until %s", h.Node, h.Holder,
			h.Until.UTC().Format(time.RFC3339)), "lease", h.Holder)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("taking the maintenance lease of node %s: %w", s.node.Name, err)
	}
	return true, nil
}

// renewLease keeps the lease while a phase holds the node. A lease another holder took meanwhile (cnimedic's had
// expired) cannot stop a repair half done: it is reported, and the repair goes on to leave the node working.
func (r *Reconciler) renewLease(ctx context.Context, s *scope) error {
	ok, err := r.takeLease(ctx, s)
	if err != nil {
		return fmt.Errorf("renewing for %s: %w", s.nr.Name, err)
	}
	if ok {
		return nil
	}
	s.event(warning, ReasonNodeHeldByOthers, actionWait, fmt.Sprintf("another tool took node %s's maintenance lease while cnimedic was repairing it: the repair finishes what it started", s.nr.Spec.NodeName), "lease-lost")
	return nil
}

// ownCordon says whether the node's cordon is cnimedic's own: its mark names a remediation of this node that failed or
// rolled back, which leaves the node cordoned for a person. A mark alone is not enough: kubectl uncordon keeps
// annotations, so a mark left by an old repair would make another tool's later cordon look like cnimedic's.
func (r *Reconciler) ownCordon(ctx context.Context, s *scope) bool {
	name := s.node.Annotations[v1alpha1.AnnotationCordonedBy]
	if name == "" {
		return false
	}
	if name == s.nr.Name {
		return true
	}
	owner := &v1alpha1.NodeRemediation{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, owner); err != nil {
		return false
	}
	return owner.Spec.NodeName == s.node.Name && (owner.Status.Phase == v1alpha1.PhaseFailed || owner.Status.Phase == v1alpha1.PhaseRolledBack)
}

// giveBackLease gives the node's lease back when cnimedic lets the node go.
func (r *Reconciler) giveBackLease(ctx context.Context, s *scope) error {
	if r.Leases == nil {
		return nil
	}
	if err := r.Leases.Release(ctx, s.nr.Spec.NodeName, s.nr.Name); err != nil {
		return fmt.Errorf("giving back the maintenance lease of node %s: %w", s.nr.Spec.NodeName, err)
	}
	return nil
}
