package remediation

import (
	"context"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
)

// reconcileRepairing hands the drained node to the executor and waits for its typed result.
func (r *Reconciler) reconcileRepairing(ctx context.Context, s *scope) (reconcile.Result, error) {
	nr, p := s.nr, s.policy
	dry := p.Spec.DryRun
	if nr.Status.ExecutorPod == "" {
		// Right before anything runs on the node (or the agent pod is restarted): still covered, still approved.
		if ok, err := r.mayAct(ctx, s); err != nil {
			return reconcile.Result{}, fmt.Errorf("checking that %s may still repair node %s: %w", nr.Name, nr.Spec.NodeName, err)
		} else if !ok {
			return reconcile.Result{}, nil
		}
	}
	if nr.Status.Action == v1alpha1.ActionRestartCNIAgentPod {
		if dry {
			s.transition(v1alpha1.PhaseSucceeded, ReasonDryRun, "dry run: would delete the node's CNI agent pod of "+nr.Spec.Parameters[v1alpha1.ParamAgentDaemonSet])
			return reconcile.Result{}, nil
		}
		return r.restartAgentPod(ctx, s)
	}
	if nr.Status.Plan == nil || len(nr.Status.Plan.Steps) == 0 {
		// A remediation whose plan could not be built escalates before approval; this guards hand-made objects.
		s.transition(v1alpha1.PhaseEscalated, ReasonPlanFailed, "no repair plan to run for "+string(nr.Status.Action))
		return reconcile.Result{}, r.release(ctx, s, true)
	}
	mode := modeApply
	if dry {
		mode = modePreview
	}
	// Second re-validation: right before the executor first starts.
	if nr.Status.ExecutorPod == "" && !dry {
		if broken, why := r.stillBroken(ctx, s, false); !broken {
			if err := r.release(ctx, s, true); err != nil {
				return reconcile.Result{}, fmt.Errorf("releasing node %s, whose failure cleared during the drain: %w", nr.Spec.NodeName, err)
			}
			s.transition(v1alpha1.PhaseSucceeded, ReasonResolvedWithoutAction, "the failure cleared during the drain, before any repair: "+why)
			return reconcile.Result{}, nil
		}
	}
	res, wait, failed, err := r.awaitExecutor(ctx, s, mode, phaseSince(nr, v1alpha1.PhaseRepairing, s.now))
	switch {
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("repairing node %s: %w", nr.Spec.NodeName, err)
	case wait != nil:
		return *wait, nil
	case failed != nil:
		s.transition(v1alpha1.PhaseFailed, failed.reason, failed.message+"; "+humanHint(s))
		return reconcile.Result{}, nil
	}

	nr.Status.Result = res
	nr.Status.Steps = res.Steps
	if dry {
		s.transition(v1alpha1.PhaseSucceeded, ReasonDryRun, "dry run: nothing was changed; the executor would: "+changesSummary(res))
		return reconcile.Result{}, nil
	}
	switch res.Outcome {
	case v1alpha1.OutcomeSucceeded, v1alpha1.OutcomeNoChange:
		s.setCondition(v1alpha1.RemediationRepaired, metav1.ConditionTrue, ReasonRepaired, res.Message)
		s.event(normal, ReasonRepaired, actionRepair, fmt.Sprintf("executor finished: %s; %s", res.Outcome, changesSummary(res)))
		s.transition(v1alpha1.PhaseVerifying, ReasonVerifying, fmt.Sprintf("verifying node %s: Ready with its network, then a canary pod", nr.Spec.NodeName))
		return moveOn, nil
	case v1alpha1.OutcomeRolledBack:
		s.setCondition(v1alpha1.RemediationRepaired, metav1.ConditionFalse, ReasonRolledBack, res.Message)
		s.transition(v1alpha1.PhaseRolledBack, ReasonRolledBack, fmt.Sprintf("the executor undid every change: %s; %s", res.Message, humanHint(s)))
	default:
		s.setCondition(v1alpha1.RemediationRepaired, metav1.ConditionFalse, ReasonRepairFailed, res.Message)
		s.transition(v1alpha1.PhaseFailed, ReasonRepairFailed, fmt.Sprintf("the repair failed: %s; %s", res.Message, humanHint(s)))
	}
	return reconcile.Result{}, nil
}

// humanHint says where a person should look when cnimedic gives up on a node it holds.
func humanHint(s *scope) string {
	return fmt.Sprintf("node %s stays cordoned: look at `kubectl cnimedic describe %s`, the executor's logs, and the journal under %s/journal/%s on the node; uncordon it when it is fixed",
		s.nr.Spec.NodeName, s.nr.Name, stateDir, s.nr.Name)
}

func changesSummary(res *v1alpha1.ExecutorResult) string {
	if len(res.Changes) == 0 {
		if res.Message != "" {
			return res.Message
		}
		return "no file changes"
	}
	paths := make([]string, 0, len(res.Changes))
	for _, c := range res.Changes {
		paths = append(paths, c.Path)
	}
	return "changed " + strings.Join(firstN(paths, 8), ", ")
}
