package detection

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// remediationsRead is a read of one node's NodeRemediations under way.
type remediationsRead struct {
	done   chan struct{}
	cancel context.CancelFunc
	list   *v1alpha1.NodeRemediationList
	err    error
}

// readRemediations starts reading the node's NodeRemediations. When the cache already shows one open, that is the
// answer: it opens nothing, and only feeds the open one (a merge patch of its evidence) or leaves the node to it;
// a cache that lags can only show one open that has ended since, which delays a new incident to the next count.
// Otherwise the answer comes live from the API server, so that a remediation created a moment ago and not yet in
// the cache is never opened twice: whatever openOrFeed creates, it decided from a live read made after every
// earlier reconcile of the node ended (the work queue never hands one node to two workers).
func (r *Reconciler) readRemediations(ctx context.Context, node string) *remediationsRead {
	ctx, cancel := context.WithCancel(ctx)
	rr := &remediationsRead{done: make(chan struct{}), cancel: cancel, list: &v1alpha1.NodeRemediationList{}}
	cached := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, cached, client.MatchingLabels{v1alpha1.LabelNode: node}); err == nil {
		for i := range cached.Items {
			if !cached.Items[i].Status.Phase.IsTerminal() {
				rr.list = cached
				close(rr.done)
				return rr
			}
		}
	}
	go func() {
		defer close(rr.done)
		rr.err = r.APIReader.List(ctx, rr.list, client.MatchingLabels{v1alpha1.LabelNode: node})
	}()
	return rr
}

// wait returns the node's NodeRemediations once read.
func (rr *remediationsRead) wait() (*v1alpha1.NodeRemediationList, error) {
	<-rr.done
	return rr.list, rr.err
}

// openOrFeed opens the node's NodeRemediation, or adds the new evidence to the open one: at most one is open per
// node. list is the node's remediations from readRemediations: live unless the cache already showed one open.
func (r *Reconciler) openOrFeed(ctx context.Context, p *v1alpha1.RemediationPolicy, node *corev1.Node, c *candidate, list *v1alpha1.NodeRemediationList, now time.Time) error {
	var latest *v1alpha1.NodeRemediation
	for i := range list.Items {
		nr := &list.Items[i]
		if !nr.Status.Phase.IsTerminal() {
			if nr.Spec.Signature == c.signature {
				return r.feed(ctx, nr, c)
			}
			return nil // another incident is open on the node: it goes first
		}
		if latest == nil || nr.CreationTimestamp.After(latest.CreationTimestamp.Time) {
			latest = nr
		}
	}
	if why := holdOff(p, latest, now); why != "" {
		log.FromContext(ctx).V(1).Info("not opening a remediation", "signature", c.signature, "why", why)
		return nil
	}
	params := c.params
	if r.Kube != nil && (c.action == v1alpha1.ActionEscalate || c.alt == v1alpha1.ActionRestartCNIAgentPod) {
		// For a cause in the CNI provider itself, the escalation says what its DaemonSet shows.
		addAgentState(ctx, r.APIReader, params)
	}
	nr := &v1alpha1.NodeRemediation{
		ObjectMeta: metav1.ObjectMeta{
			Name:   remediationName(node.Name, c.signature, now),
			Labels: map[string]string{v1alpha1.LabelNode: node.Name, v1alpha1.LabelPolicy: p.Name},
		},
		Spec: v1alpha1.NodeRemediationSpec{
			NodeName: node.Name, PolicyName: p.Name, Signature: c.signature,
			Parameters: params, Evidence: nodeEvidence(c),
		},
	}
	if err := r.Client.Create(ctx, nr); err != nil {
		return client.IgnoreAlreadyExists(err)
	}
	detectionsTotal.WithLabelValues(c.signature).Inc()
	log.FromContext(ctx).Info("opened a remediation", "remediation", nr.Name, "signature", c.signature,
		"events", c.events, "pods", len(c.pods), "condition", c.condition != "")
	r.noteWrite(node.Name, now)
	return nil
}

// holdOff says why no new remediation is opened after the node's last one, or "" to open one.
//   - After the retry cap the workflow escalated: no further automatic action until a person deletes that one.
//   - After an end that left the node to a person (failed, rolled back, escalated, rejected), nothing new is opened
//     for retry.cooldown: the same evidence would only reopen what a person is looking at.
func holdOff(p *v1alpha1.RemediationPolicy, latest *v1alpha1.NodeRemediation, now time.Time) string {
	if latest == nil {
		return ""
	}
	if latest.Status.Phase == v1alpha1.PhaseEscalated && latest.Status.Reason == "RetryLimitReached" {
		return fmt.Sprintf("remediation %s reached the retry cap", latest.Name)
	}
	switch latest.Status.Phase {
	case v1alpha1.PhaseFailed, v1alpha1.PhaseRolledBack, v1alpha1.PhaseEscalated, v1alpha1.PhaseRejected:
		if latest.Status.CompletionTime != nil && now.Before(latest.Status.CompletionTime.Add(p.Spec.Retry.Cooldown.Duration)) {
			return fmt.Sprintf("remediation %s ended %s less than retry.cooldown ago", latest.Name, latest.Status.Phase)
		}
	}
	return ""
}

// feed adds new evidence to the open remediation, at most once per MinWriteInterval per node unless something a
// person would notice changed (new stuck pods, the node condition): an outage must not become a write storm.
// nr may come from the cache: a write is computed against the remediation read live.
func (r *Reconciler) feed(ctx context.Context, nr *v1alpha1.NodeRemediation, c *candidate) error {
	ev, changed, significant := feedEvidence(nr, c)
	if !changed {
		return nil
	}
	now := r.Clock.Now()
	if !significant && !r.writeDue(nr.Spec.NodeName, now) {
		return nil
	}
	live := &v1alpha1.NodeRemediation{}
	if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(nr), live); err != nil {
		return client.IgnoreNotFound(err)
	}
	if live.Status.Phase.IsTerminal() || live.Spec.Signature != nr.Spec.Signature {
		return nil // it ended since the cache saw it: the next count opens a new one if the evidence holds
	}
	nr = live
	if ev, changed, _ = feedEvidence(nr, c); !changed {
		return nil
	}
	patch := client.MergeFrom(nr.DeepCopy())
	nr.Spec.Evidence = ev
	if nr.Spec.Parameters == nil {
		nr.Spec.Parameters = map[string]string{}
	}
	for k, v := range c.params {
		nr.Spec.Parameters[k] = v
	}
	if err := r.Client.Patch(ctx, nr, patch); err != nil {
		return client.IgnoreNotFound(err)
	}
	r.noteWrite(nr.Spec.NodeName, now)
	return nil
}

// feedEvidence is the remediation's evidence with the candidate's added, whether it changed, and whether the change
// is one a person would notice.
func feedEvidence(nr *v1alpha1.NodeRemediation, c *candidate) (v1alpha1.Evidence, bool, bool) {
	ev := nodeEvidence(c)
	old := nr.Spec.Evidence
	if ev.FirstSeen != nil && old.FirstSeen != nil && old.FirstSeen.Before(ev.FirstSeen) {
		ev.FirstSeen = old.FirstSeen
	}
	if ev.EventCount < old.EventCount {
		ev.EventCount = old.EventCount // the window moved on; the incident's count only grows
	}
	if equality.Semantic.DeepEqual(ev, old) {
		return ev, false, false
	}
	return ev, true, len(ev.Pods) != len(old.Pods) || ev.NodeCondition != old.NodeCondition
}

func (r *Reconciler) writeDue(node string, now time.Time) bool {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	return now.Sub(r.written[node]) >= r.MinWriteInterval
}

func (r *Reconciler) noteWrite(node string, now time.Time) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.written[node] = now
}
