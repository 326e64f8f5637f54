package remediation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
)

// reconcileNew takes a new remediation, whether the detection opened it or a person asked for it: it labels it,
// checks that its policy covers its node, decides what will run (recorded in the status, with its digest), then
// enters Detected.
func (r *Reconciler) reconcileNew(ctx context.Context, s *scope) (reconcile.Result, error) {
	err := r.patchMeta(ctx, s, func(nr *v1alpha1.NodeRemediation) {
		if nr.Labels == nil {
			nr.Labels = map[string]string{}
		}
		nr.Labels[v1alpha1.LabelNode] = nr.Spec.NodeName
		nr.Labels[v1alpha1.LabelPolicy] = nr.Spec.PolicyName
	})
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("labelling new remediation %s: %w", s.nr.Name, err)
	}
	nr := s.nr
	nr.Status.ByHand = carriesNoEvidence(nr)
	d := r.decide(s)
	s.transition(v1alpha1.PhaseDetected, ReasonDetected, detectedMessage(nr))
	s.nodeEvent(warning, ReasonDetected, actionDetect, detectedMessage(nr))
	if s.policyMissing {
		s.transition(v1alpha1.PhaseRejected, ReasonPolicyNotFound, fmt.Sprintf("policy %s does not exist", nr.Spec.PolicyName))
		return reconcile.Result{}, nil
	}
	if ok, why := covered(s); !ok {
		s.transition(v1alpha1.PhaseRejected, ReasonNotCovered, why+": nothing was changed on the node")
		return reconcile.Result{}, nil
	}
	if d.escalateReason != "" {
		s.transition(v1alpha1.PhaseEscalated, d.escalateReason, d.escalateMessage)
		return reconcile.Result{}, nil
	}
	// Detected goes on at once, in this reconcile: the two transitions are one status write, not two writes and a
	// reconcile in between (when a fleet breaks at once, those writes compete with the detection of the next nodes:
	// make bench, detection latency). The history still records both.
	return r.reconcileDetected(ctx, s)
}

func detectedMessage(nr *v1alpha1.NodeRemediation) string {
	ev := nr.Spec.Evidence
	msg := fmt.Sprintf("node %s shows %s (%d events, %d pods)", nr.Spec.NodeName, nr.Spec.Signature, ev.EventCount, ev.PodCount)
	if ev.NodeCondition != "" {
		msg += "; node condition: " + ev.NodeCondition
	} else if len(ev.SampleMessages) > 0 {
		msg += "; e.g. " + ev.SampleMessages[0]
	}
	return msg + fmt.Sprintf("; planned action: %s", nr.Status.Action)
}

// reconcileDetected decides what happens to a new incident: escalate what cnimedic may not or cannot repair, then
// ask for approval (or approve, under an Automatic policy).
func (r *Reconciler) reconcileDetected(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p := s.nr, s.policy
	if s.policyMissing {
		s.transition(v1alpha1.PhaseRejected, ReasonPolicyNotFound, fmt.Sprintf("policy %s does not exist", nr.Spec.PolicyName))
		return reconcile.Result{}, nil
	}
	action := nr.Status.Action
	if why := notLinux(s.node); why != "" {
		// Before any pod: the diagnosis and the executor are Linux pods.
		s.transition(v1alpha1.PhaseEscalated, ReasonNodeNotLinux, why)
		return reconcile.Result{}, nil
	}
	_, custom := customSignature(p, nr.Spec.Signature)
	switch {
	case action == v1alpha1.ActionEscalate:
		s.transition(v1alpha1.PhaseEscalated, ReasonEscalated, escalationMessage(nr))
		return reconcile.Result{}, nil
	case !policy.Allows(p, action):
		s.transition(v1alpha1.PhaseEscalated, ReasonActionNotAllowed, fmt.Sprintf("%s needs %s, which policy %s does not allow (spec.allowedActions); %s",
			nr.Spec.Signature, action, p.Name, escalationMessage(nr)))
		return reconcile.Result{}, nil
	case action == v1alpha1.ActionDiagnose && custom:
		// A policy's own signature that asks only for a diagnosis: recorded, and left to a person.
		return r.reconcileDiagnose(ctx, s)
	}
	failed, err := r.failedAttempts(ctx, nr)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("counting the failed repairs of node %s: %w", nr.Spec.NodeName, err)
	}
	if int32(failed) >= p.Spec.Retry.MaxAttempts {
		s.transition(v1alpha1.PhaseEscalated, ReasonRetryLimitReached, fmt.Sprintf("%d repairs of node %s failed already (retry.maxAttempts %d): cnimedic takes no further action on this node; look at the failed NodeRemediations (kubectl get noderemediations -l %s=%s)",
			failed, nr.Spec.NodeName, p.Spec.Retry.MaxAttempts, v1alpha1.LabelNode, nr.Spec.NodeName))
		return reconcile.Result{}, nil
	}
	if action.IsNodeAction() || action == v1alpha1.ActionDiagnose {
		// The node is the evidence: its read-only diagnosis confirms the failure before anyone is asked to approve.
		// (RestartCNIAgentPod's cause, the plugin's credentials, is not something the node's files show: it relies on
		// the kubelet-written pod status detection requires, and is never approved by policy for a request by hand.)
		s.transition(v1alpha1.PhaseDiagnosing, ReasonDiagnosing, fmt.Sprintf("running the read-only diagnosis on node %s before anyone is asked to approve", nr.Spec.NodeName))
		return r.reconcileDiagnosing(ctx, s)
	}
	s.transition(v1alpha1.PhaseAwaitingApproval, ReasonAwaitingApproval, approvalInstructions(nr))
	return r.reconcileAwaitingApproval(ctx, s)
}

func escalationMessage(nr *v1alpha1.NodeRemediation) string {
	keys := make([]string, 0, len(nr.Spec.Parameters))
	for k := range nr.Spec.Parameters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+nr.Spec.Parameters[k])
	}
	msg := fmt.Sprintf("%s on node %s has a cause cnimedic does not repair node by node; a human should look at the CNI provider", nr.Spec.Signature, nr.Spec.NodeName)
	if len(parts) > 0 {
		msg += " (" + strings.Join(parts, ", ") + ")"
	}
	return msg
}

// failedAttempts counts the earlier remediations of the node that acted on it and did not succeed.
func (r *Reconciler) failedAttempts(ctx context.Context, nr *v1alpha1.NodeRemediation) (int, error) {
	// Read live: a safety rule must not depend on how far the cache has caught up.
	list := &v1alpha1.NodeRemediationList{}
	if err := r.APIReader.List(ctx, list, client.MatchingLabels{v1alpha1.LabelNode: nr.Spec.NodeName}); err != nil {
		return 0, fmt.Errorf("listing the remediations of node %s live: %w", nr.Spec.NodeName, err)
	}
	n := 0
	for _, other := range list.Items {
		if other.Name != nr.Name && (other.Status.Phase == v1alpha1.PhaseFailed || other.Status.Phase == v1alpha1.PhaseRolledBack) {
			n++
		}
	}
	return n, nil
}

// reconcileAwaitingApproval waits for the approve or reject annotation, or approves under an Automatic policy
// unless a storm or a pause holds automatic repair. Pending approvals expire into Rejected. While a person is to
// decide, the plan is previewed on the node for them (awaitPreview); the decision never waits for the preview.
func (r *Reconciler) reconcileAwaitingApproval(ctx context.Context, s *scope) (_ reconcile.Result, err error) {
	nr, p := s.nr, s.policy
	defer func() {
		if nr.Status.Phase != v1alpha1.PhaseAwaitingApproval {
			err = errors.Join(err, r.endPreview(ctx, s))
		}
	}()
	if s.policyMissing {
		s.transition(v1alpha1.PhaseRejected, ReasonPolicyNotFound, fmt.Sprintf("policy %s does not exist", nr.Spec.PolicyName))
		return reconcile.Result{}, nil
	}
	since := phaseSince(nr, v1alpha1.PhaseAwaitingApproval, s.now)
	pendingApprovalSeconds.WithLabelValues(nr.Name, nr.Spec.NodeName, nr.Spec.Signature).Set(s.now.Sub(since).Seconds())

	if reason, ok := nr.Annotations[v1alpha1.AnnotationReject]; ok {
		s.nr.Status.Approval = &v1alpha1.ApprovalRecord{Decision: v1alpha1.DecisionRejected, Mode: p.Spec.Approval.Mode,
			Source: "annotation " + v1alpha1.AnnotationReject, Reason: reason, Time: metav1.NewTime(s.now)}
		s.setCondition(v1alpha1.RemediationApproved, metav1.ConditionFalse, ReasonRejected, "rejected: "+reason)
		s.transition(v1alpha1.PhaseRejected, ReasonRejected, fmt.Sprintf("rejected by annotation: %s", reason))
		return reconcile.Result{}, nil
	}
	if ok, why := annotationApproves(nr); ok {
		return r.approve(s, "annotation "+v1alpha1.AnnotationApprove)
	} else if why != "" {
		s.event(warning, ReasonApprovalMismatch, actionWait, why, nr.Status.Digest)
	}
	expiry := since.Add(p.Spec.Approval.Expiry.Duration)
	if !s.now.Before(expiry) {
		s.nr.Status.Approval = &v1alpha1.ApprovalRecord{Decision: v1alpha1.DecisionExpired, Mode: p.Spec.Approval.Mode,
			Source: "approval.expiry", Time: metav1.NewTime(s.now)}
		s.setCondition(v1alpha1.RemediationApproved, metav1.ConditionFalse, ReasonApprovalExpired, "nobody approved within "+p.Spec.Approval.Expiry.Duration.String())
		s.transition(v1alpha1.PhaseRejected, ReasonApprovalExpired, fmt.Sprintf("nobody approved the repair within %s (approval.expiry)", p.Spec.Approval.Expiry.Duration))
		return reconcile.Result{}, nil
	}
	if p.Spec.Approval.Mode == v1alpha1.ApprovalAutomatic {
		switch {
		case requestedByHand(nr):
			s.event(normal, ReasonAwaitingApproval, actionWait, fmt.Sprintf("a repair asked for by hand, without the detection's evidence, is never approved by policy %s: an approver must approve it", p.Name), "by-hand")
		case p.Spec.Paused:
			s.event(normal, ReasonPolicyPaused, actionWait, fmt.Sprintf("policy %s is paused: the repair waits (or approve it by hand)", p.Name))
		case meta.IsStatusConditionTrue(p.Status.Conditions, v1alpha1.PolicyStormActive):
			s.event(warning, ReasonStormHold, actionWait, fmt.Sprintf("a storm holds automatic repair under policy %s: a cluster-wide cause is not fixed node by node; approve by hand if this node is different", p.Name))
		default:
			return r.approve(s, "policy "+p.Name+" (approval.mode Automatic)")
		}
	}
	next := r.requeueAt(s, expiry)
	wait, err := r.awaitPreview(ctx, s)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("showing the approver of %s what the plan changes on node %s: %w", nr.Name, nr.Spec.NodeName, err)
	}
	if wait != nil && wait.RequeueAfter < next.RequeueAfter {
		next = *wait
	}
	return next, nil
}

func (r *Reconciler) approve(s *scope, source string) (reconcile.Result, error) {
	s.nr.Status.Approval = &v1alpha1.ApprovalRecord{Decision: v1alpha1.DecisionApproved, Mode: s.policy.Spec.Approval.Mode,
		Source: source, Digest: s.nr.Status.Digest, Time: metav1.NewTime(s.now)}
	s.setCondition(v1alpha1.RemediationApproved, metav1.ConditionTrue, ReasonApproved, "approved by "+source)
	s.transition(v1alpha1.PhaseApproved, ReasonApproved, fmt.Sprintf("approved by %s (digest %s)", source, short(s.nr.Status.Digest)))
	return moveOn, nil
}

// requestedByHand: the remediation carried none of the detection's evidence when the manager first took it (the
// admission policy lets only the manager write evidence), so it is a person's request, whatever evidence the
// detection may feed it later (status.byHand).
func requestedByHand(nr *v1alpha1.NodeRemediation) bool {
	return nr.Status.ByHand
}

// carriesNoEvidence says whether a remediation holds none of the detection's evidence.
func carriesNoEvidence(nr *v1alpha1.NodeRemediation) bool {
	ev := nr.Spec.Evidence
	return ev.EventCount == 0 && ev.NodeCondition == "" && len(ev.Conditions) == 0 && len(ev.Pods) == 0
}

// phaseSince is when the remediation last entered the phase (now when the history does not say).
func phaseSince(nr *v1alpha1.NodeRemediation, p v1alpha1.Phase, now time.Time) time.Time {
	for i := len(nr.Status.History) - 1; i >= 0; i-- {
		if nr.Status.History[i].Phase == p {
			return nr.Status.History[i].Time.Time
		}
	}
	return now
}
