package remediation

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileDiagnose carries out a custom signature whose action is Diagnose: the executor's read-only diagnosis
// runs on the node, its findings are recorded in status.result and the message, and the incident goes to a person
// (Escalated). A diagnosis changes nothing on the node, so it needs no approval and holds no node: nothing is
// cordoned or drained, and it does not count against maxConcurrent. A paused policy starts nothing, not even this.
func (r *Reconciler) reconcileDiagnose(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p := s.nr, s.policy
	if p.Spec.Paused && nr.Status.ExecutorPod == "" {
		s.event(normal, ReasonPolicyPaused, actionWait, fmt.Sprintf("policy %s is paused: the diagnosis waits", p.Name), "paused")
		return reconcile.Result{RequeueAfter: r.poll()}, nil
	}
	res, pod, lost, err := r.runExecutor(ctx, s, modeDiagnose)
	if err != nil {
		return reconcile.Result{}, err
	}
	rerun := fmt.Sprintf("run `kubectl cnimedic diagnose %s` for the node's report", nr.Spec.NodeName)
	switch {
	case lost != "":
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("custom signature %s asks for a diagnosis: %s; %s", nr.Spec.Signature, lost, rerun))
		return reconcile.Result{}, nil
	case res == nil && pod == nil:
		return reconcile.Result{RequeueAfter: r.poll()}, nil
	case res == nil:
		deadline := phaseSince(nr, v1alpha1.PhaseDetected, s.now).Add(p.Spec.Executor.Timeout.Duration)
		if s.now.After(deadline) {
			_ = r.Client.Delete(ctx, pod, client.PropagationPolicy(metav1.DeletePropagationBackground))
			s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("custom signature %s asks for a diagnosis: pod %s/%s gave no result within %s (executor.timeout; pod phase %s); %s",
				nr.Spec.Signature, pod.Namespace, pod.Name, p.Spec.Executor.Timeout.Duration, pod.Status.Phase, rerun))
			return reconcile.Result{}, nil
		}
		return r.requeueAt(s, deadline), nil
	}
	nr.Status.Result = res
	if res.Outcome == v1alpha1.OutcomeFailed {
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("custom signature %s asks for a diagnosis, which failed on node %s: %s; %s",
			nr.Spec.Signature, nr.Spec.NodeName, res.Message, rerun))
		return reconcile.Result{}, nil
	}
	s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosed, fmt.Sprintf("custom signature %s asks for a diagnosis only; on node %s %s. Nothing was changed; %s",
		nr.Spec.Signature, nr.Spec.NodeName, res.Message, rerun))
	return reconcile.Result{}, nil
}
