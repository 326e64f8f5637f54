package detection

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// remediationsRead is a read of one node's NodeRemediations under way.
type remediationsRead struct {
	done chan struct{}
	list *v1alpha1.NodeRemediationList
	err  error
}

// remediationsReadTimeout bounds a live read of one node's remediations.
const remediationsReadTimeout = 30 * time.Second

// readRemediations starts reading the node's NodeRemediations. When the cache already shows one open, that is the
// answer: it opens nothing, and only feeds the open one (a merge patch of its evidence) or leaves the node to it;
// a cache that lags can only show one open that has ended since, which delays a new incident to the next count.
// Otherwise the answer comes live from the API server, so that a remediation created a moment ago and not yet in
// the cache is never opened twice: whatever openOrFeed creates, it decided from a live read made after every
// earlier reconcile of the node ended (the work queue never hands one node to two workers).
//
// The live read is never cancelled by the reconcile that started it, even when the count ends without needing
// it (nothing qualified, or the pods' read failed): cancelling a request while client-go reads its response body
// makes client-go log "Unexpected error when reading response body ... context canceled" as an error, for what is
// only an answer nobody waits for any more. It ends on its own, bounded by remediationsReadTimeout.
func (r *Reconciler) readRemediations(ctx context.Context, node string) *remediationsRead {
	rr := &remediationsRead{done: make(chan struct{}), list: &v1alpha1.NodeRemediationList{}}
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
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remediationsReadTimeout)
	go func() {
		defer close(rr.done)
		defer cancel()
		rr.err = r.APIReader.List(readCtx, rr.list, client.MatchingLabels{v1alpha1.LabelNode: node})
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
	var ended []*v1alpha1.NodeRemediation
	consumed := false
	for i := range list.Items {
		nr := &list.Items[i]
		if !nr.Status.Phase.IsTerminal() {
			// Only what the detection opened under this policy is fed (it was created with evidence, which only the
			// manager may write): a person's request stays a request, and is never made to look detected.
			ev := nr.Spec.Evidence
			detected := ev.EventCount > 0 || ev.NodeCondition != "" || len(ev.Conditions) > 0 || len(ev.Pods) > 0
			if nr.Spec.Signature == c.signature && nr.Spec.PolicyName == p.Name && detected && !nr.Status.ByHand {
				return r.feed(ctx, nr, c)
			}
			return nil // another incident is open on the node: it goes first
		}
		ended = append(ended, nr)
		// The live read may show an end the watch has not delivered yet: what that remediation consumed must not
		// make the next one. The candidate was counted before; the next count (at the requeue) counts without it.
		if r.store.consume(nr.Spec.NodeName, nr.Spec.Signature, endOf(nr)) && nr.Spec.Signature == c.signature {
			consumed = true
		}
	}
	if consumed {
		return nil
	}
	if h := holdOff(p, ended, c, now); h != nil {
		log.FromContext(ctx).V(1).Info("not opening a remediation", "signature", c.signature, "heldBy", h.by.Name, "why", h.why)
		r.Events.Publish(heldOffEvent(h.by, node, c.signature, h.why))
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
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return fmt.Errorf("creating remediation %s: %w", nr.Name, err)
	}
	detectionsTotal.WithLabelValues(c.signature).Inc()
	log.FromContext(ctx).Info("opened a remediation", "remediation", nr.Name, "signature", c.signature,
		"events", c.events, "pods", len(c.pods), "condition", c.condition != "")
	r.noteWrite(node.Name, now)
	return nil
}

// endOf is when a finished remediation ended: its completion time, or (for one written without it) the last
// change of its history, or the last evidence it saw.
func endOf(nr *v1alpha1.NodeRemediation) time.Time {
	if t := nr.Status.CompletionTime; t != nil {
		return t.Time
	}
	if n := len(nr.Status.History); n > 0 {
		return nr.Status.History[n-1].Time.Time
	}
	if t := nr.Spec.Evidence.LastSeen; t != nil {
		return t.Time
	}
	return nr.CreationTimestamp.Time
}

// reasonRetryLimitReached is the workflow's reason for the escalation after retry.maxAttempts failed repairs.
const reasonRetryLimitReached = "RetryLimitReached"

// hold is why a qualifying candidate opens nothing, and the finished remediation that holds it.
type hold struct {
	by  *v1alpha1.NodeRemediation
	why string
}

// holdOff says why no new remediation is opened for the candidate after the node's finished ones (nil: open one).
// What retry.cooldown means here and in the workflow (docs/operations.md, "Retry, cooldown and hold-off"):
//
//   - After the retry cap (Escalated, RetryLimitReached) nothing new opens on the node, whatever the signature,
//     until a person deletes that remediation: cnimedic takes no further action on it.
//   - After a repair that acted on the node and did not succeed (Failed, RolledBack) or a rejection, nothing new
//     opens on the node for retry.cooldown after that end: the node was left to a person.
//   - After an escalation (or a diagnosis that did not confirm the failure, NotConfirmed), the same signature opens
//     nothing again while its failure persists: while the node still
//     shows a failure that began before the escalation ended (a confirmed pod failing since then, or the node
//     condition carrying it since then), whatever retry.cooldown says. A failure that begins after the end opens a
//     new remediation; another signature opens its own at once (an escalation touched nothing).
//   - After a success nothing is held here: new evidence (after the end, see store.consume) opens a new incident at
//     once, and the workflow makes its repair wait until retry.cooldown after the last repair that acted on the
//     node (WaitingForCooldown).
//
// Each hold is published as an event (IncidentHeldOff) on the remediation that holds, naming the node.
func holdOff(p *v1alpha1.RemediationPolicy, ended []*v1alpha1.NodeRemediation, c *candidate, now time.Time) *hold {
	var latest, latestSame *v1alpha1.NodeRemediation
	for _, nr := range ended {
		if latest == nil || nr.CreationTimestamp.After(latest.CreationTimestamp.Time) {
			latest = nr
		}
		if nr.Spec.Signature == c.signature && (latestSame == nil || nr.CreationTimestamp.After(latestSame.CreationTimestamp.Time)) {
			latestSame = nr
		}
	}
	if latest != nil {
		if latest.Status.Phase == v1alpha1.PhaseEscalated && latest.Status.Reason == reasonRetryLimitReached {
			return &hold{latest, fmt.Sprintf("remediation %s reached the retry cap (retry.maxAttempts): cnimedic opens nothing on node %s until a person deletes it",
				latest.Name, latest.Spec.NodeName)}
		}
		switch latest.Status.Phase {
		case v1alpha1.PhaseFailed, v1alpha1.PhaseRolledBack, v1alpha1.PhaseRejected:
			if until := endOf(latest).Add(p.Spec.Retry.Cooldown.Duration); now.Before(until) {
				return &hold{latest, fmt.Sprintf("remediation %s ended %s less than retry.cooldown (%s) ago: nothing new opens on node %s until %s",
					latest.Name, latest.Status.Phase, p.Spec.Retry.Cooldown.Duration, latest.Spec.NodeName, until.UTC().Format(time.RFC3339))}
			}
		}
	}
	if latestSame != nil && (latestSame.Status.Phase == v1alpha1.PhaseEscalated || latestSame.Status.Phase == v1alpha1.PhaseNotConfirmed) {
		end := endOf(latestSame)
		if began := c.began(); !began.IsZero() && !began.After(end) {
			verb := "was escalated by"
			if latestSame.Status.Phase == v1alpha1.PhaseNotConfirmed {
				verb = "was not confirmed by the node's diagnosis in"
			}
			return &hold{latestSame, fmt.Sprintf("%s on node %s %s remediation %s and still shows (failing since %s): it is not opened again while it persists; delete %s to ask again",
				c.signature, latestSame.Spec.NodeName, verb, latestSame.Name, began.UTC().Format(time.RFC3339), latestSame.Name)}
		}
	}
	return nil
}

// began is when the failure the candidate shows began on the node, from what kubelet wrote: the earliest confirmed
// pod's failure, or the node condition's (zero when neither is known).
func (c *candidate) began() time.Time {
	t := c.failingSince
	if !c.conditionBegan.IsZero() && c.condition != "" && (t.IsZero() || c.conditionBegan.Before(t)) {
		t = c.conditionBegan
	}
	return t
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
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("reading remediation %s live: %w", nr.Name, err)
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
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("adding evidence to remediation %s: %w", nr.Name, err)
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
	return ev, true, len(ev.Pods) != len(old.Pods) || ev.NodeCondition != old.NodeCondition || !sameConditions(ev.Conditions, old.Conditions)
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

// sameConditions says whether two evidences name the same conditions in the same status, reason and message.
func sameConditions(a, b []v1alpha1.ConditionEvidence) bool {
	return slices.EqualFunc(a, b, func(x, y v1alpha1.ConditionEvidence) bool {
		return x.Type == y.Type && x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message
	})
}
