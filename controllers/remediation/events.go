package remediation

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/cnimedic/cnimedic/api/v1alpha1"
	"github.com/cnimedic/cnimedic/internal/events"
)

// Event reasons of the workflow. They are CamelCase and stable: alerts and tests match on them, and
// `kubectl events --for noderemediation/NAME` tells the whole story with them.
const (
	ReasonDetected                = "Detected"
	ReasonAwaitingApproval        = "AwaitingApproval"
	ReasonApproved                = "Approved"
	ReasonRejected                = "Rejected"
	ReasonApprovalExpired         = "ApprovalExpired"
	ReasonWaitingForSlot          = "WaitingForSlot"
	ReasonWaitingForCooldown      = "WaitingForCooldown"
	ReasonPolicyPaused            = "PolicyPaused"
	ReasonStormHold               = "StormHold"
	ReasonResolvedWithoutAction   = "ResolvedWithoutAction"
	ReasonCordoned                = "Cordoned"
	ReasonAlreadyCordoned         = "AlreadyCordoned"
	ReasonNodeHeldByOthers        = "NodeHeldByOthers"
	ReasonDraining                = "Draining"
	ReasonDrainBlocked            = "DrainBlocked"
	ReasonDrained                 = "Drained"
	ReasonDrainTimeout            = "DrainTimeout"
	ReasonDrainTimeoutProceed     = "DrainTimeoutProceeding"
	ReasonExecutorStarted         = "ExecutorStarted"
	ReasonExecutorFailed          = "ExecutorFailed"
	ReasonExecutorTimeout         = "ExecutorTimeout"
	ReasonExecutorLost            = "ExecutorLost"
	ReasonRepaired                = "Repaired"
	ReasonRepairFailed            = "RepairFailed"
	ReasonRolledBack              = "RolledBack"
	ReasonVerifying               = "Verifying"
	ReasonVerified                = "Verified"
	ReasonVerificationFailed      = "VerificationFailed"
	ReasonUncordoned              = "Uncordoned"
	ReasonLeftCordoned            = "LeftCordoned"
	ReasonSucceeded               = "Succeeded"
	ReasonEscalated               = "Escalated"
	ReasonDiagnosed               = "Diagnosed"
	ReasonDiagnosisFailed         = "DiagnosisFailed"
	ReasonActionNotAllowed        = "ActionNotAllowed"
	ReasonRetryLimitReached       = v1alpha1.ReasonRetryLimitReached
	ReasonNodeGone                = "NodeGone"
	ReasonPolicyNotFound          = "PolicyNotFound"
	ReasonAgentPodRestarted       = "AgentPodRestarted"
	ReasonDryRun                  = "DryRun"
	ReasonPlanFailed              = "PlanFailed"
	ReasonReleased                = "Released"
	ReasonNotCovered              = "NotCovered"
	ReasonApprovalVoided          = "ApprovalVoided"
	ReasonApprovalMismatch        = "ApprovalMismatch"
	ReasonExecutorImageNotAllowed = "ExecutorImageNotAllowed"
	ReasonDiagnosing              = "Diagnosing"
	ReasonDiagnosisQueued         = "DiagnosisQueued"
	ReasonConfirmed               = "Confirmed"
	ReasonReaimed                 = "Reaimed"
	ReasonNoNodeRepair            = "NoNodeRepair"
	ReasonNotConfirmed            = "NotConfirmed"
	ReasonPlanCannotSucceed       = "PlanCannotSucceed"
	ReasonRollingBack             = "RollingBack"
)

// Event actions (events.k8s.io's "action": what cnimedic did).
const (
	actionDetect   = "Detect"
	actionDiagnose = "Diagnose"
	actionApprove  = "Approve"
	actionWait     = "Wait"
	actionCordon   = "Cordon"
	actionDrain    = "Drain"
	actionRepair   = "Repair"
	actionVerify   = "Verify"
	actionUncordon = "Uncordon"
	actionEscalate = "Escalate"
	actionFinish   = "Finish"
)

func (s *scope) event(typ, reason, action, msg string, dedupe ...string) {
	s.events = append(s.events, events.Event{Regarding: s.nr, Related: s.node, Type: typ, Reason: reason, Action: action,
		Message: msg, DedupeValues: dedupe})
}

// nodeEvent is published on the Node too: the important transitions are visible from `kubectl describe node`.
func (s *scope) nodeEvent(typ, reason, action, msg string) {
	if s.node == nil {
		return
	}
	s.events = append(s.events, events.Event{Regarding: s.node, Related: s.nr, Type: typ, Reason: reason, Action: action,
		Message: fmt.Sprintf("%s (noderemediation/%s)", msg, s.nr.Name)})
}

// approvalInstructions asks for a decision, what will change first: `kubectl cnimedic describe` shows the plan and
// its preview on the node (a Previewed event follows once the preview reported), then the approve command.
func approvalInstructions(nr *v1alpha1.NodeRemediation) string {
	return fmt.Sprintf("repair of node %s for %s waits for approval. Read what it changes on the node first: kubectl cnimedic describe %s "+
		"(the plan, then its preview on the node); then approve: kubectl annotate noderemediation/%s %s=true "+
		"(or reject: kubectl annotate noderemediation/%s %s=\"<reason>\")",
		nr.Spec.NodeName, nr.Spec.Signature, nr.Name, nr.Name, v1alpha1.AnnotationApprove, nr.Name, v1alpha1.AnnotationReject)
}

var (
	normal  = corev1.EventTypeNormal
	warning = corev1.EventTypeWarning
)
