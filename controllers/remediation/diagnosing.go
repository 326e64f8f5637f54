package remediation

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/policy"
	"github.com/cnimedic/cnimedic/internal/signature"
)

// An event is a hint; the node is the evidence. Before anyone is asked to approve a node repair, the read-only
// diagnosis runs on the node (no approval, no cordon: it changes nothing) and its findings decide:
//   - the cause is the most specific one the error findings show (the catalog's precedence: a conflist without
//     cniVersion before the "cni plugin not initialized" it leads to) among those cnimedic repairs on a node under
//     the policy; when it is the signature the events named, or is repaired by the action planned for it, it
//     confirms the remediation;
//   - another such cause re-aims the remediation at it (the status keeps both: spec.signature, the hypothesis, and
//     status.diagnosis.confirmed);
//   - error findings no node repair fixes escalate, with the findings;
//   - no error finding ends NotConfirmed: nothing touched, and an event names the pods and messages that claimed
//     otherwise.
// What will run is then decided again from the confirmed cause (decide), so an approver sees a plan the node's
// facts support.

// Diagnosis limits: a flood of evidence (a storm, or forged events that slipped past detection) must not start a
// diagnosis pod per node at once, nor one node's diagnoses back to back.
const (
	// defaultMaxDiagnoses is how many diagnosis pods may run at once in the cluster (Config.MaxDiagnoses).
	defaultMaxDiagnoses = 5
	// defaultDiagnosisInterval is the least time between two diagnoses of one node (Config.DiagnosisInterval).
	defaultDiagnosisInterval = 30 * time.Second
	// maxRecordedFindings is status.diagnosis.findings' limit (the CRD's MaxItems).
	maxRecordedFindings = 20
)

// executorFailure is how a wait for an executor pod ended without a result.
type executorFailure struct {
	reason, message string
}

// awaitExecutor is the one wait for an executor pod of any mode: it makes sure the pod exists and returns its
// result once it ended. While the pod has not ended it returns when to look again; past since plus the policy's
// executor timeout the pod is deleted and the wait fails (ExecutorTimeout), as it does when the pod vanished
// without a result (ExecutorLost).
func (r *Reconciler) awaitExecutor(ctx context.Context, s *scope, mode executorMode, since time.Time) (*v1alpha1.ExecutorResult, *reconcile.Result, *executorFailure, error) {
	res, pod, lost, err := r.runExecutor(ctx, s, mode)
	switch {
	case err != nil:
		return nil, nil, nil, fmt.Errorf("running the %s pod of %s: %w", mode, s.nr.Name, err)
	case lost != "":
		return nil, nil, &executorFailure{ReasonExecutorLost, lost}, nil
	case res != nil:
		return res, nil, nil, nil
	case pod == nil:
		return nil, &reconcile.Result{RequeueAfter: r.poll()}, nil, nil
	}
	timeout := s.policy.Spec.Executor.Timeout.Duration
	deadline := since.Add(timeout)
	if !s.now.After(deadline) {
		wait := r.requeueAt(s, deadline)
		return nil, &wait, nil, nil
	}
	if err := r.Client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return nil, nil, nil, fmt.Errorf("deleting %s pod %s/%s, which gave no result in time: %w", mode, pod.Namespace, pod.Name, err)
	}
	return nil, nil, &executorFailure{ReasonExecutorTimeout, fmt.Sprintf("%s pod %s/%s gave no result within %s (executor.timeout; pod phase %s)",
		mode, pod.Namespace, pod.Name, timeout, pod.Status.Phase)}, nil
}

// reconcileDiagnosing runs the read-only diagnosis on the node and lets its findings decide (judge).
func (r *Reconciler) reconcileDiagnosing(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr := s.nr
	res, wait, failed, err := r.awaitDiagnosis(ctx, s, modeDiagnose, phaseSince(nr, v1alpha1.PhaseDiagnosing, s.now))
	switch {
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("diagnosing node %s: %w", nr.Spec.NodeName, err)
	case wait != nil:
		return *wait, nil
	case failed != nil:
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("the diagnosis of node %s did not report: %s; nothing was changed on the node. Run `kubectl cnimedic diagnose %s`",
			nr.Spec.NodeName, failed.message, nr.Spec.NodeName))
		return reconcile.Result{}, nil
	}
	// The diagnosis is over; the repair's executor, if any, is another pod.
	nr.Status.ExecutorPod = ""
	return r.judge(ctx, s, res)
}

// awaitDiagnosis is awaitExecutor for the read-only pods, whichever phase asks for one: the diagnosis (Diagnosing,
// or a custom signature's Diagnose action) and the preview of the plan for an approver (modePlanPreview). One not
// yet started waits while the policy is paused, while the cluster runs as many as it may, and while its node was
// diagnosed or previewed a moment ago.
func (r *Reconciler) awaitDiagnosis(ctx context.Context, s *scope, mode executorMode, since time.Time) (*v1alpha1.ExecutorResult, *reconcile.Result, *executorFailure, error) {
	if s.nr.Status.ExecutorPod == "" {
		if p := s.policy; p.Spec.Paused {
			what := "diagnosis"
			if mode == modePlanPreview {
				what = "preview of the plan"
			}
			s.event(normal, ReasonPolicyPaused, actionWait, fmt.Sprintf("policy %s is paused: the %s waits", p.Name, what), "paused")
			return nil, &reconcile.Result{RequeueAfter: r.poll()}, nil, nil
		}
		// Counted live and started under the lock, as admission does: reconciles running side by side must not
		// each see a free place and start one diagnosis too many.
		r.diagnoseMu.Lock()
		defer r.diagnoseMu.Unlock()
		if until, why, err := r.diagnosisHeld(ctx, s); err != nil {
			return nil, nil, nil, fmt.Errorf("deciding whether the diagnosis of node %s may start: %w", s.nr.Spec.NodeName, err)
		} else if why != "" {
			s.event(normal, ReasonDiagnosisQueued, actionWait, why, "queued")
			wait := r.requeueAt(s, until)
			return nil, &wait, nil, nil
		}
	}
	return r.awaitExecutor(ctx, s, mode, since)
}

// diagnosisHeld says until when a diagnosis must wait, and why: too many run in the cluster, or the node was
// diagnosed a moment ago.
func (r *Reconciler) diagnosisHeld(ctx context.Context, s *scope) (time.Time, string, error) {
	pods := &corev1.PodList{}
	readOnly, err := labels.NewRequirement(v1alpha1.LabelComponent, selection.In, []string{componentDiagnosis, componentPreview})
	if err != nil {
		return time.Time{}, "", fmt.Errorf("selecting the diagnosis and preview pods: %w", err)
	}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(r.Config.Namespace), client.MatchingLabelsSelector{Selector: labels.NewSelector().Add(*readOnly)}); err != nil {
		return time.Time{}, "", fmt.Errorf("counting the running diagnoses: %w", err)
	}
	running := 0
	for _, pod := range pods.Items {
		if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed && pod.Labels[v1alpha1.LabelRemediation] != s.nr.Name {
			running++
		}
	}
	if limit := r.maxDiagnoses(); running >= limit {
		return s.now.Add(r.poll()), fmt.Sprintf("%d diagnoses run in the cluster, the most cnimedic runs at once (%d): the diagnosis of node %s waits", running, limit, s.nr.Spec.NodeName), nil
	}
	others := &v1alpha1.NodeRemediationList{}
	if err := r.Client.List(ctx, others, client.MatchingLabels{v1alpha1.LabelNode: s.nr.Spec.NodeName}); err != nil {
		return time.Time{}, "", fmt.Errorf("listing the remediations of node %s: %w", s.nr.Spec.NodeName, err)
	}
	for _, o := range others.Items {
		last := time.Time{}
		if d := o.Status.Diagnosis; d != nil {
			last = d.Time.Time
		}
		if p := o.Status.Preview; p != nil && p.Time.After(last) {
			last = p.Time.Time
		}
		if o.Name != s.nr.Name && !last.IsZero() {
			if next := last.Add(r.diagnosisInterval()); s.now.Before(next) {
				return next, fmt.Sprintf("node %s was diagnosed less than %s ago (remediation %s): the next diagnosis waits until %s",
					s.nr.Spec.NodeName, r.diagnosisInterval(), o.Name, next.UTC().Format(time.RFC3339)), nil
			}
		}
	}
	return time.Time{}, "", nil
}

func (r *Reconciler) diagnosisInterval() time.Duration {
	if r.Config.DiagnosisInterval != 0 {
		return r.Config.DiagnosisInterval
	}
	return defaultDiagnosisInterval
}

func (r *Reconciler) maxDiagnoses() int {
	if r.Config.MaxDiagnoses > 0 {
		return r.Config.MaxDiagnoses
	}
	return defaultMaxDiagnoses
}

// judge lets the node's findings decide what happens to the remediation.
func (r *Reconciler) judge(ctx context.Context, s *scope, res *v1alpha1.ExecutorResult) (reconcile.Result, error) {
	nr := s.nr
	nr.Status.Result = res
	d := recordDiagnosis(s, res)
	if res.Outcome == v1alpha1.OutcomeFailed {
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("the diagnosis of node %s failed: %s; nothing was changed on the node. Run `kubectl cnimedic diagnose %s`",
			nr.Spec.NodeName, res.Message, nr.Spec.NodeName))
		return reconcile.Result{}, nil
	}
	// Preflight: a layout cnimedic cannot serve ends here, whatever the findings, before any cordon.
	if reason, msg := preflight(s); reason != "" {
		s.transition(v1alpha1.PhaseEscalated, reason, fmt.Sprintf("%s, which was never cordoned. The diagnosis: %s", msg, res.Message))
		return reconcile.Result{}, nil
	}
	reportLayout(s, d.Layout)
	hypothesis := v1alpha1.SignatureID(nr.Spec.Signature)
	errs := errorFindings(res.Findings)
	switch cause, action, repairable := repairableCause(s.policy, errs); {
	case repairable && (cause == hypothesis || action == nr.Status.Action):
		d.Confirmed = string(cause)
		s.event(normal, ReasonConfirmed, actionDiagnose, fmt.Sprintf("the diagnosis of node %s confirms %s: %s", nr.Spec.NodeName, hypothesis, res.Message))
	case repairable:
		other := cause
		d.Confirmed = string(other)
		s.event(warning, ReasonReaimed, actionDiagnose, fmt.Sprintf("the events on node %s suggested %s, but the node shows %s: the repair is aimed at what the node shows (%s)",
			nr.Spec.NodeName, hypothesis, other, res.Message))
	case len(errs) > 0:
		s.transition(v1alpha1.PhaseEscalated, ReasonNoNodeRepair, fmt.Sprintf("the diagnosis of node %s shows failures no node repair of cnimedic fixes (%s); nothing was changed on the node", nr.Spec.NodeName, res.Message))
		return reconcile.Result{}, nil
	default:
		s.transition(v1alpha1.PhaseNotConfirmed, ReasonNotConfirmed, fmt.Sprintf("the diagnosis of node %s found nothing that confirms %s (%s); nothing was changed on the node. The evidence came from %s",
			nr.Spec.NodeName, hypothesis, res.Message, evidenceSources(nr)))
		return reconcile.Result{}, nil
	}
	// Decide again, from the cause the node confirmed and its findings.
	if dec := r.decide(s); dec.escalateReason != "" {
		s.transition(v1alpha1.PhaseEscalated, dec.escalateReason, dec.escalateMessage)
		return reconcile.Result{}, nil
	}
	if !nr.Status.Action.IsNodeAction() {
		s.transition(v1alpha1.PhaseEscalated, ReasonNoNodeRepair, fmt.Sprintf("the node shows %s, for which cnimedic has no node repair under policy %s (%s); nothing was changed on the node",
			d.Confirmed, s.policy.Name, nr.Status.Action))
		return reconcile.Result{}, nil
	}
	if !policy.Allows(s.policy, nr.Status.Action) {
		s.transition(v1alpha1.PhaseEscalated, ReasonActionNotAllowed, fmt.Sprintf("the node shows %s, which needs %s; policy %s does not allow it (spec.allowedActions); nothing was changed on the node",
			d.Confirmed, nr.Status.Action, s.policy.Name))
		return reconcile.Result{}, nil
	}
	s.transition(v1alpha1.PhaseAwaitingApproval, ReasonAwaitingApproval, approvalInstructions(nr))
	return r.reconcileAwaitingApproval(ctx, s)
}

// recordDiagnosis keeps what a diagnosis reported in the status, failed or not: its time also spaces the node's
// diagnoses (diagnosisHeld).
func recordDiagnosis(s *scope, res *v1alpha1.ExecutorResult) *v1alpha1.Diagnosis {
	d := &v1alpha1.Diagnosis{Time: metav1.NewTime(s.now), Summary: res.Message, Findings: res.Findings, Layout: res.Layout.DeepCopy()}
	if len(d.Findings) > maxRecordedFindings {
		d.Findings = d.Findings[:maxRecordedFindings]
	}
	s.nr.Status.Diagnosis = d
	return d
}

// repairableCause is the most specific cause the error findings show (the catalog's precedence) whose repair is a
// node action the policy allows, and that action. A finding only a person can fix (Fix Escalate: a vendor's plugin
// missing) is no such cause.
func repairableCause(p *v1alpha1.RemediationPolicy, errs []v1alpha1.Finding) (v1alpha1.SignatureID, v1alpha1.RepairAction, bool) {
	for _, def := range signature.Definitions() {
		for _, f := range errs {
			if f.Signature != def.ID || f.Fix == v1alpha1.ActionEscalate {
				continue
			}
			if a := causeAction(p, f.Signature); a.IsNodeAction() && policy.Allows(p, a) {
				return f.Signature, a, true
			}
		}
	}
	return "", "", false
}

func errorFindings(fs []v1alpha1.Finding) []v1alpha1.Finding {
	var out []v1alpha1.Finding
	for _, f := range fs {
		if f.Severity == v1alpha1.SeverityError {
			out = append(out, f)
		}
	}
	return out
}

// evidenceSources names what claimed the failure: the pods and the first message.
func evidenceSources(nr *v1alpha1.NodeRemediation) string {
	ev := nr.Spec.Evidence
	var parts []string
	for i, p := range ev.Pods {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ev.Pods)-5))
			break
		}
		parts = append(parts, p.Namespace+"/"+p.Name)
	}
	out := fmt.Sprintf("%d events", ev.EventCount)
	if len(parts) > 0 {
		out += " about pods " + strings.Join(parts, ", ")
	}
	if ev.NodeCondition != "" {
		out += "; node condition: " + ev.NodeCondition
	} else if len(ev.SampleMessages) > 0 {
		out += "; e.g. " + ev.SampleMessages[0]
	}
	return out
}
