package detection

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// Storm condition reasons.
const (
	ReasonStorm   = "StormDetected"
	ReasonNoStorm = "NoStorm"
)

// checkStorm decides whether a storm holds automatic repair under the policy: more than storm.thresholdPercent of
// the covered nodes (and at least storm.minNodes) confirmed sig themselves inside the detection window (their Ready
// condition carries it, or pods bound to them whose kubelet-written status showed the sandbox failing for
// minStuckDuration: store.confirmedNodesWith), or did less than storm.cooldown ago. Events alone count no node:
// whoever may write events chooses the node they name, and could make one node's failure look like a storm. It
// records the storm on the policy (StormActive, status.storm) through server-side apply, as the only writer of those
// fields, and only when they change.
func (r *Reconciler) checkStorm(ctx context.Context, p *v1alpha1.RemediationPolicy, sig string, now time.Time) (bool, error) {
	covered, err := r.coveredBy(ctx, p)
	if err != nil {
		return false, fmt.Errorf("counting the covered nodes: %w", err)
	}
	affected := 0
	for _, n := range r.store.confirmedNodesWith(sig, now.Add(-p.Spec.Detection.Window.Duration)) {
		if covered[n] {
			affected++
		}
	}
	s := p.Spec.Storm
	over := affected >= int(s.MinNodes) && affected*100 > int(s.ThresholdPercent)*len(covered)
	st := p.Status.Storm
	switch {
	case over:
		grew := st == nil || st.Signature != sig || int32(affected) > st.Nodes
		// lastSeen moves while the storm holds; written at most once a minute, to keep writes rare in an outage.
		stale := st != nil && now.Sub(st.LastSeen.Time) > time.Minute
		if grew || stale {
			next := v1alpha1.StormStatus{Signature: sig, Nodes: int32(affected), Since: metav1.NewTime(now), LastSeen: metav1.NewTime(now)}
			if st != nil && st.Signature == sig {
				next.Since = st.Since
				next.Nodes = max(next.Nodes, st.Nodes)
			}
			if err := r.applyStorm(ctx, p, &next, now); err != nil {
				return true, fmt.Errorf("recording the storm: %w", err)
			}
			if st == nil || st.Signature != sig {
				stormsTotal.WithLabelValues(p.Name, sig).Inc()
			}
			r.Events.Publish(stormEvent(p, sig, affected, len(covered)))
		}
		stormActive.WithLabelValues(p.Name).Set(1)
		return true, nil
	case st != nil && now.Before(st.LastSeen.Add(s.Cooldown.Duration)):
		return true, nil
	case st != nil || meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyStormActive):
		if err := r.applyStorm(ctx, p, nil, now); err != nil {
			return false, fmt.Errorf("ending the storm: %w", err)
		}
		stormActive.WithLabelValues(p.Name).Set(0)
		if st != nil {
			r.Events.Publish(stormEndedEvent(p, st.Signature))
		}
	}
	return false, nil
}

func (r *Reconciler) applyStorm(ctx context.Context, p *v1alpha1.RemediationPolicy, st *v1alpha1.StormStatus, now time.Time) error {
	cond := metav1.Condition{Type: v1alpha1.PolicyStormActive, Status: metav1.ConditionFalse, Reason: ReasonNoStorm,
		Message: "no storm: automatic repair may proceed", ObservedGeneration: p.Generation, LastTransitionTime: metav1.NewTime(now)}
	if st != nil {
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonStorm
		cond.Message = st.Signature + " on too many covered nodes: no new repairs, automatic approval held"
	}
	if old := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.PolicyStormActive); old != nil && old.Status == cond.Status {
		cond.LastTransitionTime = old.LastTransitionTime
	}
	log.FromContext(ctx).Info("storm state", "policy", p.Name, "active", st != nil)
	if err := policy.ApplyStatus(ctx, r.Client, p.Name, FieldManager, policy.StatusApply{Conditions: []metav1.Condition{cond}, Storm: st}); err != nil {
		return fmt.Errorf("applying the storm status of policy %s: %w", p.Name, err)
	}
	// This copy of the policy is ours: record the decision in it for the rest of this reconcile.
	p.Status.Storm = st
	meta.SetStatusCondition(&p.Status.Conditions, cond)
	return nil
}

// stormTicker ends storms whose evidence is gone: with no evidence left, no node reconcile would look at them.
type stormTicker struct{ r *Reconciler }

func (t *stormTicker) NeedLeaderElection() bool { return true }

func (t *stormTicker) Start(ctx context.Context) error {
	tick := time.NewTicker(t.r.Requeue)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		list := &v1alpha1.RemediationPolicyList{}
		if err := t.r.Client.List(ctx, list); err != nil {
			log.FromContext(ctx).Error(err, "listing policies to end their storms; trying again at the next tick")
			continue
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Status.Storm != nil {
				if _, err := t.r.checkStorm(ctx, p, p.Status.Storm.Signature, t.r.Clock.Now()); err != nil {
					log.FromContext(ctx).Error(err, "ending a storm; trying again at the next tick", "policy", p.Name)
				}
			}
		}
	}
}
