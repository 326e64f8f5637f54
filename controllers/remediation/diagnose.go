package remediation

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileDiagnose carries out a custom signature whose action is Diagnose: the executor's read-only diagnosis
// runs on the node, its findings are recorded in status.result and the message, and the incident goes to a person
// (Escalated). A diagnosis changes nothing on the node, so it needs no approval and holds no node: nothing is
// cordoned or drained, and it does not count against maxConcurrent; like every diagnosis it waits for a pause, the
// cluster-wide cap and its node's interval (awaitDiagnosis).
func (r *Reconciler) reconcileDiagnose(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr := s.nr
	res, wait, failed, err := r.awaitDiagnosis(ctx, s, modeDiagnose, phaseSince(nr, v1alpha1.PhaseDetected, s.now))
	rerun := fmt.Sprintf("run `kubectl cnimedic diagnose %s` for the node's report", nr.Spec.NodeName)
	switch {
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("diagnosing node %s for %s: %w", nr.Spec.NodeName, nr.Name, err)
	case wait != nil:
		return *wait, nil
	case failed != nil:
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("custom signature %s asks for a diagnosis: %s; %s", nr.Spec.Signature, failed.message, rerun))
		return reconcile.Result{}, nil
	}
	nr.Status.Result = res
	recordDiagnosis(s, res)
	if res.Outcome == v1alpha1.OutcomeFailed {
		s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosisFailed, fmt.Sprintf("custom signature %s asks for a diagnosis, which failed on node %s: %s; %s",
			nr.Spec.Signature, nr.Spec.NodeName, res.Message, rerun))
		return reconcile.Result{}, nil
	}
	s.transition(v1alpha1.PhaseEscalated, ReasonDiagnosed, fmt.Sprintf("custom signature %s asks for a diagnosis only; on node %s %s. Nothing was changed; %s",
		nr.Spec.Signature, nr.Spec.NodeName, res.Message, rerun))
	return reconcile.Result{}, nil
}
